"""A client for the example schema: sums numbers with a live progress bar, chains a task
on the result's value, and shows a remote error.

    TASKELL_URL=amqp://guest:guest@localhost:5672/%2F python -m examples.client
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress

import taskell
from generated.demo import Client


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
    return total


def main() -> None:
    """Connect as ``TASKELL_URL`` / ``taskell.toml`` say and run the demo calls."""
    with taskell.connect() as conn:
        run(conn, Console())


if __name__ == "__main__":
    main()
