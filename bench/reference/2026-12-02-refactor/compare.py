"""Median taskell / raw-pika ratio per figure, before (base-N.txt) and after (main-N.txt)."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

HERE = Path(__file__).parent
ROW = re.compile(r"\s+(.+?)\s{2,}(\S+)\s+(\S+)\s+([\d.]+)x$")


def ratios(side: str) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for path in sorted(HERE.glob(f"{side}-*.txt")):
        summary = path.read_text().split("summary", 1)[1]
        for line in summary.splitlines():
            match = ROW.match(line)
            if match:
                found.setdefault(match.group(1).strip(), []).append(float(match.group(4)))
    return found


def main() -> None:
    before, after = ratios("base"), ratios("main")
    print(f"{'figure':42} {'before':>7} {'after':>7} {'after/before':>13}")
    for name, values in before.items():
        if name in after:
            b, a = statistics.median(values), statistics.median(after[name])
            print(f"{name:42} {b:7.2f} {a:7.2f} {a / b:13.2f}")


if __name__ == "__main__":
    main()
