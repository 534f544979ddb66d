"""A worker for the example schema with ``async def`` handlers: implements
``generated.demo.AsyncHandlers``.

Run it with::

    taskell worker examples.async_worker:handlers -c taskell.toml --parallelism 100

The worker runs these coroutines on an event loop of its own, up to ``--parallelism`` at once.
An abort or a time limit cancels one: ``asyncio.CancelledError`` at its next ``await``.
"""

from __future__ import annotations

import asyncio
import decimal

import taskell
from examples.worker import Impl
from generated.demo import Image, Order, Receipt, Tree, registry


class AsyncImpl:
    """The demo's handlers as coroutines; ``delay`` slows ``sum`` down so its progress is visible."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._sync = Impl()  # the handlers whose work is plain computation

    async def sum(self, ctx: taskell.Context[int], numbers: list[int]) -> int:
        total = 0
        for done, number in enumerate(numbers, start=1):
            total += number
            ctx.progress(done * 100 // len(numbers))
            if self.delay:
                await asyncio.sleep(self.delay)
        return total

    async def square(self, ctx: taskell.Context[None], x: int) -> int:
        return x * x

    async def total(self, ctx: taskell.Context[None], parts: list[int]) -> int:
        return sum(parts)

    async def thumbnail(self, ctx: taskell.Context[None], image: Image, size: int = 128) -> Image:
        # CPU work of unbounded length goes to a thread, so it never blocks the event loop.
        return await asyncio.to_thread(self._sync.thumbnail, ctx, image, size)

    async def book(
        self,
        ctx: taskell.Context[str],
        order: Order,
        discount: decimal.Decimal | None = None,
        coupon: bytes = b"",
    ) -> Receipt:
        # The same rules as the sync demo: a typed error, and a first attempt that fails for
        # "flaky-payments" orders (retried by the schema's policy).
        return self._sync.book(ctx, order, discount, coupon)

    async def tree_sum(self, ctx: taskell.Context[None], tree: Tree) -> int:
        return self._sync.tree_sum(ctx, tree)

    async def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        while (elapsed := loop.time() - start) < seconds:
            ctx.progress(round(elapsed, 3))
            await asyncio.sleep(min(0.01, seconds - elapsed))
        return seconds

    async def fail(self, ctx: taskell.Context[None], message: str = "boom") -> None:
        raise ValueError(message)


handlers = registry(AsyncImpl())
