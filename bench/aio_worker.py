"""Workers for bench/bench_aio_worker.py: the example handlers, async (``handlers``) or sync
(``sync_handlers``), with two changes that let the benchmark read the worker's own clock:

- ``sleep`` reports ``time.time()`` as its one progress value when it starts, sleeps (async:
  ``await asyncio.sleep``; sync: ``time.sleep``) and returns ``time.time()`` when it ends;
- async ``sum`` is a ticker: it wakes every millisecond for ``numbers[0]`` ms and returns the
  longest it waited beyond that, in microseconds (how long the loop made it wait its turn).
"""

from __future__ import annotations

import asyncio
import time

import taskell
from examples.async_worker import AsyncImpl
from examples.worker import Impl
from generated.demo import registry

TICK = 0.001  # seconds between two ticks of the ticker


class AsyncBench(AsyncImpl):
    async def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        ctx.progress(time.time())
        await asyncio.sleep(seconds)
        return time.time()

    async def sum(self, ctx: taskell.Context[int], numbers: list[int]) -> int:
        loop = asyncio.get_running_loop()
        end = loop.time() + numbers[0] / 1000
        worst = 0.0
        while (before := loop.time()) < end:
            await asyncio.sleep(TICK)
            worst = max(worst, loop.time() - before - TICK)
        return round(worst * 1e6)


class SyncBench(Impl):
    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        ctx.progress(time.time())
        time.sleep(seconds)
        return time.time()


handlers = registry(AsyncBench())
sync_handlers = registry(SyncBench())
