"""A client for the example schema: sums numbers with a live progress bar, chains a task
on the result's value, shows a remote error and a typed one, a retry and a delayed task.

    TASKELL_URL=amqp://guest:guest@localhost:5672/%2F python -m examples.client
"""

from __future__ import annotations

import datetime
import decimal
import time
import uuid

from rich.console import Console
from rich.progress import Progress

import taskell
from examples.worker import FLAKY_PAYMENTS
from generated.demo import Client, DiscountTooLarge, Order


def run(conn: taskell.Connection, console: Console) -> int:
    """Run the demo calls on ``conn``; returns the sum."""
    demo = Client(conn)
    numbers = list(range(1, 51))
    handle = demo.sum(numbers=numbers)
    console.print(f"submitted demo.sum([1..50]) as task {handle.id}")
    with Progress(console=console) as bar:
        row = bar.add_task("demo.sum", total=100)
        for percent in handle.progress():
            bar.update(row, completed=percent)
    total = handle.result(timeout=60)
    console.print(f"sum = {total}")
    squared = demo.square(x=total).result(timeout=60)
    console.print(f"square({total}) = {squared}")
    try:
        demo.fail(message="this one fails on purpose").result(timeout=60)
    except taskell.TaskFailed as exc:
        console.print(f"remote error, as expected: {exc.error_type}: {exc.message}")
    order = Order(
        id=uuid.uuid4(),
        placed_at=datetime.datetime.now(datetime.UTC),
        amount=decimal.Decimal("20.00"),
        tags=(FLAKY_PAYMENTS,),
    )
    try:
        demo.book(order=order, discount=decimal.Decimal(2)).result(timeout=60)
    except DiscountTooLarge as exc:  # a declared error: typed fields, never retried
        console.print(
            f"typed error, as expected: DiscountTooLarge(discount={exc.discount}, limit={exc.limit})"
        )
    booking = demo.book(order=order, discount=decimal.Decimal("0.25"))
    receipt = booking.result(timeout=60)  # the first attempt fails with Unavailable: retried
    for retry in booking.retries:
        console.print(
            f"attempt {retry.attempt} failed ({retry.error_type}); retried after {retry.delay_s:g} s"
        )
    console.print(f"booked: total {receipt.total}")
    started = time.monotonic()
    later = Client(conn.options(delay=1.5)).square(x=12)  # held by the broker, then run
    console.print(f"square(12) = {later.result(timeout=60)}, delayed {time.monotonic() - started:.1f} s")
    return total


def main() -> None:
    """Connect as ``TASKELL_URL`` / ``taskell.toml`` say and run the demo calls."""
    with taskell.connect() as conn:
        run(conn, Console())


if __name__ == "__main__":
    main()
