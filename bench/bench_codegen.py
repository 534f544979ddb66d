"""Benchmark ``taskell gen`` on synthetic schemas of 50, 500 and 5,000 tasks.

Each schema has a few record and enum types and tasks with mixed argument types and
defaults. Prints the best of 3 runs of ``generate`` per size, the time per task and the ratio
to the 50-task run (linear growth keeps the per-task time flat). Goal: 500 tasks < 2 s.

Run: ``.venv/bin/python bench/bench_codegen.py [--out FILE]`` (``--out``: the figures as JSON). A
script, not ``-m``: run from the repository root, ``taskell`` would be the source folder, which
has no ``taskell.codegen`` (the installed link tree has).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from taskell.codegen import generate

sys.path.append(str(Path(__file__).resolve().parent.parent))  # last: for bench._common only
from bench._common import run_info, save

SIZES = (50, 500, 5000)
REPEAT = 3

TYPES = """\
types:
  Color: {enum: [red, green, blue]}
  Point:
    doc: A point.
    fields:
      x: float
      y: float
      label: {type: str | None, default: null}
  Shape:
    fields:
      points: list[Point]
      color: {type: Color, default: red}
      tags: {type: "dict[str, int]", default: {}}
"""

TASK = """\
  task_{i}:
    doc: Synthetic task number {i}.
    queue: taskell.q{q}
    args:
      a: int
      b: {{type: str, default: "x{i}"}}
      shape: Shape
      when: {{type: datetime | None, default: null}}
      raw: {{type: bytes, default: "AAE="}}
      items: list[Point]
    progress: float
    result: Shape
"""


def schema(tasks: int) -> str:
    body = "".join(TASK.format(i=i, q=i % 4) for i in range(tasks))
    return f"taskell: 1\npackage: bench\n{TYPES}tasks:\n{body}"


def best_of(path: Path, outdir: Path) -> list[float]:
    """Every run's time (the best is the figure)."""
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        generate(str(path), str(outdir))
        times.append(time.perf_counter() - start)
        for file in (outdir / "bench").iterdir():  # force a full write on each run
            file.unlink()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = parser.parse_args()
    result: dict[str, Any] = {"benchmark": "bench_codegen", **run_info(), "repeat": REPEAT, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        print(f"{'tasks':>6} {'best s':>8} {'ms/task':>8} {'ratio':>7} {'vs linear':>9}")
        for size in SIZES:
            path = Path(tmp) / f"s{size}.yaml"
            path.write_text(schema(size))
            runs = best_of(path, Path(tmp) / f"out{size}")
            seconds = min(runs)
            result["sizes"].append(
                {"tasks": size, "best_s": round(seconds, 4), "runs_s": [round(t, 4) for t in runs]}
            )
            base = base or seconds
            ratio = seconds / base
            print(
                f"{size:>6} {seconds:>8.3f} {seconds / size * 1000:>8.3f} {ratio:>7.1f} {ratio / (size / SIZES[0]):>9.2f}"
            )
    save(args.out, result)


if __name__ == "__main__":
    main()
