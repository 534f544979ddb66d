"""``taskell call --follow``'s progress bar keeps the elapsed time on an 80-column terminal."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from taskell._progress_bar import progress_bar

ELAPSED = re.compile(r" \d+:\d\d:\d\d$")


@pytest.mark.parametrize(
    ("task", "value"),
    [
        ("demo.sum", "100%"),
        ("demo.resize_image", "resizing image 3 of 10: thumbnails/large"),
        ("inventory.reconcile_warehouse_stock_levels", "step 12 of 40: reading the ledger of 2026"),
        ("demo.progress", "中" * 40),
    ],
)
def test_the_elapsed_time_fits_in_80_columns(task: str, value: str) -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, color_system=None, force_terminal=False)
    bar = progress_bar(console)
    row = bar.add_task(task, total=100, value=value)
    bar.update(row, completed=50)
    console.print(bar.get_renderable())
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert console.measure(lines[0]).maximum <= 80, lines
    assert ELAPSED.search(lines[0]), lines
    assert "━" in lines[0], lines  # the bar itself
    assert lines[0].startswith(task[:10]), lines
