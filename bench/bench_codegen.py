"""Benchmark ``taskell gen`` on synthetic schemas of 50, 500 and 5,000 tasks.

Each schema has a few record and enum types and tasks with mixed argument types and
defaults. Prints the best of 3 runs of ``generate`` per size, the time per task and the ratio
to the 50-task run (linear growth keeps the per-task time flat). Goal: 500 tasks < 2 s.

Run: ``.venv/bin/python bench/bench_codegen.py``
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from taskell.codegen import generate

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


def best_of(path: Path, outdir: Path) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        generate(str(path), str(outdir))
        times.append(time.perf_counter() - start)
        for file in (outdir / "bench").iterdir():  # force a full write on each run
            file.unlink()
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        print(f"{'tasks':>6} {'best s':>8} {'ms/task':>8} {'ratio':>7} {'vs linear':>9}")
        for size in SIZES:
            path = Path(tmp) / f"s{size}.yaml"
            path.write_text(schema(size))
            seconds = best_of(path, Path(tmp) / f"out{size}")
            base = base or seconds
            ratio = seconds / base
            print(
                f"{size:>6} {seconds:>8.3f} {seconds / size * 1000:>8.3f} {ratio:>7.1f} {ratio / (size / SIZES[0]):>9.2f}"
            )


if __name__ == "__main__":
    main()
