"""A worker for the progress benchmark: the example handlers, with ``sleep(seconds)`` replaced
by a counting loop.

``sleep(n)`` runs ``abs(int(n))`` iterations; with ``n > 0`` every iteration calls
``ctx.progress(float(i))``, with ``n < 0`` the same loop runs without progress calls. Each
iteration also does ``BENCH_PROGRESS_WORK`` (env, default 0) rounds of integer arithmetic,
standing for a handler's real work. The result is the loop's own duration in seconds (time
inside the handler, excluding queueing and replies), so the benchmark compares handler speed.

    taskell worker bench.progress_worker:handlers
"""

from __future__ import annotations

import os
import time

import taskell
from examples.worker import Impl
from generated.demo import registry

WORK = int(os.environ.get("BENCH_PROGRESS_WORK", "0"))


class CountingLoop(Impl):
    """``sleep`` is a loop of ``abs(int(seconds))`` iterations, reporting each one when positive."""

    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        iterations = abs(int(seconds))
        work = range(WORK)
        acc = 0
        started = time.perf_counter()
        if seconds > 0:
            for i in range(iterations):
                for j in work:
                    acc = (acc * 31 + j) & 0xFFFF
                ctx.progress(float(i))
        else:
            for i in range(iterations):
                for j in work:
                    acc = (acc * 31 + j) & 0xFFFF
                float(i)
        return time.perf_counter() - started + acc * 0.0


handlers = registry(CountingLoop())
