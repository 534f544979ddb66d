"""A worker for the example schema: implements ``generated.demo.Handlers``.

Run it with::

    taskell worker examples.worker:handlers -c taskell.toml
"""

from __future__ import annotations

import decimal
import time

import taskell
from generated.demo import DiscountTooLarge, Image, Order, Receipt, Tree, Unavailable, registry

FLAKY_PAYMENTS = "flaky-payments"  # an order tag: its first booking attempt fails (the demo's retry)


class Impl:
    """The demo's handlers; ``delay`` slows ``sum`` down so its progress is visible."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def sum(self, ctx: taskell.Context[int], numbers: list[int]) -> int:
        total = 0
        for done, number in enumerate(numbers, start=1):
            total += number
            ctx.progress(done * 100 // len(numbers))
            if self.delay:
                time.sleep(self.delay)
        return total

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        return x * x

    def total(self, ctx: taskell.Context[None], parts: list[int]) -> int:
        return sum(parts)

    def thumbnail(self, ctx: taskell.Context[None], image: Image, size: int = 128) -> Image:
        # Nearest-neighbour scaling of a one-byte-per-pixel image.
        scale = max(image.width, image.height) / size if max(image.width, image.height) > size else 1.0
        width, height = max(1, int(image.width / scale)), max(1, int(image.height / scale))
        rows = (image.pixels[int(y * scale) * image.width :] for y in range(height))
        pixels = b"".join(bytes(row[int(x * scale)] for x in range(width)) for row in rows)
        return Image(width=width, height=height, pixels=pixels, label=image.label)

    def book(
        self,
        ctx: taskell.Context[str],
        order: Order,
        discount: decimal.Decimal | None = None,
        coupon: bytes = b"",
    ) -> Receipt:
        if discount is not None and discount > 1:
            raise DiscountTooLarge(discount=discount, limit=decimal.Decimal(1))
        if FLAKY_PAYMENTS in order.tags and ctx.attempt == 1:
            raise Unavailable(service="payments")  # the schema retries it: attempt 2 books
        ctx.progress(f"pricing order {order.id}")
        total = order.amount * (1 - (discount or 0))
        ctx.progress("booked")
        return Receipt(order=order, total=total, notes={"coupon": coupon.hex()})

    def tree_sum(self, ctx: taskell.Context[None], tree: Tree) -> int:
        return tree.value + sum(self.tree_sum(ctx, child) for child in tree.children)

    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            ctx.progress(round(elapsed, 3))
            time.sleep(min(0.01, seconds - elapsed))
        return seconds

    def fail(self, ctx: taskell.Context[None], message: str = "boom") -> None:
        raise ValueError(message)


handlers = registry(Impl())
