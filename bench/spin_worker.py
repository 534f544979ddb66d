"""A worker for the benchmarks: the example handlers, with ``sleep`` as a pure-Python spin
loop (``spin``) or one long C-level ``time.sleep`` (``csleep``), picked by BENCH_SLEEP."""

from __future__ import annotations

import os
import time

import taskell
from examples.worker import Impl
from generated.demo import registry


class Spin(Impl):
    """``sleep`` busy-loops in Python code, reporting progress now and then."""

    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        start = time.monotonic()
        next_report = start
        while (now := time.monotonic()) - start < seconds:
            if now >= next_report:
                ctx.progress(round(now - start, 3))
                next_report = now + 0.05
        return seconds


class CSleep(Impl):
    """``sleep`` blocks in one C call."""

    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        ctx.progress(0.0)
        time.sleep(seconds)
        return seconds


handlers = registry(CSleep() if os.environ.get("BENCH_SLEEP") == "csleep" else Spin())
