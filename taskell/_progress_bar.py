"""A live progress bar for ``taskell call --follow`` (rich, on stderr)."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .handle import TaskHandle


def follow(handle: TaskHandle[Any, Any], timeout: float | None) -> None:
    """Draw the task's progress until it ends (numbers as percent done, others as text)."""
    console = Console(stderr=True)
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[value]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        row = bar.add_task(handle.task, total=100, value="")
        done = threading.Event()

        def watch() -> None:
            for value in handle.progress():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    bar.update(row, completed=float(value), value=f"{value}%")
                else:
                    bar.update(row, value=str(value))
            done.set()

        threading.Thread(target=watch, daemon=True).start()
        done.wait(timeout)
