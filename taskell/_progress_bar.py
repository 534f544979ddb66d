"""A live progress bar for ``taskell call --follow`` (rich, on stderr), with a line for each
retried attempt."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from .durations import format_duration
from .handle import Retrying, TaskHandle, on_retrying

# Widest task name and progress text shown (longer ones end in "…"), so a line keeps its
# elapsed time (7) and a bar at 80 columns: the bar (at most 40) shrinks to the room left.
TEXT_WIDTH = 24


def progress_bar(console: Console) -> Progress:
    """The bar's layout: task name, bar, latest progress value, elapsed time."""

    def text() -> Column:
        return Column(max_width=TEXT_WIDTH, no_wrap=True, overflow="ellipsis")

    columns = (
        TextColumn("{task.description}", table_column=text()),
        BarColumn(bar_width=40),
        TextColumn("{task.fields[value]}", table_column=text()),
        TimeElapsedColumn(table_column=Column(min_width=7, no_wrap=True)),
    )
    return Progress(*columns, console=console, transient=False)


def retry_line(notice: Retrying) -> str:
    """``attempt 1 failed (ValueError: boom); retrying in 2s``"""
    return (
        f"attempt {notice.attempt} failed ({notice.error_type}: {notice.message}); "
        f"retrying in {format_duration(notice.delay_s)}"
    )


def follow(handle: TaskHandle[Any, Any], timeout: float | None, console: Console | None = None) -> None:
    """Draw the task's progress until it ends (numbers as percent done, others as text), and
    print a line for each attempt that failed and is retried."""
    with progress_bar(console or Console(stderr=True)) as bar:
        row = bar.add_task(handle.task, total=100, value="")
        done = threading.Event()
        on_retrying(
            handle, lambda notice: bar.console.print(retry_line(notice), markup=False, highlight=False)
        )

        def watch() -> None:
            for value in handle.progress():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    bar.update(row, completed=float(value), value=f"{value}%")
                else:
                    bar.update(row, value=str(value))
            done.set()

        threading.Thread(target=watch, daemon=True).start()
        done.wait(timeout)
