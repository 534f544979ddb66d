"""The README's first command runs end to end (on the embedded broker): every step it shows,
the typed error, the retry and the delayed task included."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT


def test_demo_runs_every_step() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKELL_")}
    done = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for line in (
        "broker: memory://demo",
        "sum = 1275",
        "square(1275) = 1625625",
        "remote error, as expected: ValueError: this one fails on purpose",
        "typed error, as expected: DiscountTooLarge(discount=2, limit=1)",
        "attempt 1 failed (demo.Unavailable); retried after 1 s",
        "booked: total 15.0000",
        "square(12) = 144, delayed 1.",
        "demo finished",
    ):
        assert line in out, f"{line!r} missing from the demo's output:\n{out}"
