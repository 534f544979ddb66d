"""Print the fault suite's results (the JSON lines of ``$TASKELL_FAULT_REPORT``) as the
Markdown table of the README: ``python tests/faults/report.py REPORT.jsonl``."""

from __future__ import annotations

import json
import sys
from typing import Any


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Fault | Load | Lost | Duplicated | Dead-lettered | Time | Scale |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        dead = row["dead_lettered"]
        lines.append(
            f"| {row['fault']} | {row['load']} | {row['lost']} | {row['duplicated']} "
            f"| {'n/a' if dead < 0 else dead} | {row['seconds']} s | {row['scale']} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: report.py REPORT.jsonl", file=sys.stderr)
        return 2
    with open(argv[1]) as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    if not rows:
        print("(no fault test reported figures)")
        return 0
    print(table(rows))
    print()
    for row in rows:
        print(f"- {row['fault']}: {json.dumps(row['details'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
