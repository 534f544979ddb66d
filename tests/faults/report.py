"""Print the fault suite's results (the JSON lines of ``$TASKELL_FAULT_REPORT``) as the
Markdown table of the docs (with whether each case passed: a row is written after the case's
assertions): ``python tests/faults/report.py REPORT.jsonl``."""

from __future__ import annotations

import json
import sys
from typing import Any


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| Fault | Load | Lost | Duplicated | Dead-lettered | Done before / after fault | Time | Scale | Result |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        dead = row["dead_lettered"]
        before, after = row.get("done_before"), row.get("done_after")
        landed = "n/a" if before is None and after is None else f"{before} / {after}"
        passed = row.get("passed")
        result = "not checked" if passed is None else "pass" if passed else "FAIL"
        lines.append(
            f"| {row['fault']} | {row['load']} | {row['lost']} | {row['duplicated']} "
            f"| {'n/a' if dead < 0 else dead} | {landed} | {row['seconds']} s | {row['scale']} | {result} |"
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
        failure = f" FAILED: {row['failure']}" if row.get("failure") else ""
        print(f"- {row['fault']}: {json.dumps(row['details'])}{failure}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
