"""``TASKELL_FAIL_ON_SKIP=1`` (set by ``scripts/test``): a skip whose reason is not allowed in
``tests/conftest.py`` fails the run; an allowed one, or any skip without the variable, does not."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

SKIPPING = """
import pytest

def test_needs_a_broker():
    pytest.skip("RabbitMQ not reachable at amqp://nowhere")

def test_runs():
    pass
"""

ALLOWED = """
import pytest

@pytest.mark.skipif(True, reason="the tzdata package is a database")
def test_without_tzdata():
    pass
"""


def _run(tmp_path: Path, source: str, enforced: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_it.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "TASKELL_FAIL_ON_SKIP"}
    if enforced:
        env["TASKELL_FAIL_ON_SKIP"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_an_unexpected_skip_fails_the_run_and_says_why(tmp_path: Path) -> None:
    done = _run(tmp_path, SKIPPING, enforced=True)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout
    assert "unexpected skips" in done.stdout
    assert "test_needs_a_broker: Skipped: RabbitMQ not reachable at amqp://nowhere" in done.stdout


def test_without_the_variable_a_skip_passes(tmp_path: Path) -> None:
    done = _run(tmp_path, SKIPPING, enforced=False)
    assert done.returncode == pytest.ExitCode.OK, done.stdout
    assert "1 passed, 1 skipped" in done.stdout


def test_an_allowed_skip_passes(tmp_path: Path) -> None:
    done = _run(tmp_path, ALLOWED, enforced=True)
    assert done.returncode == pytest.ExitCode.OK, done.stdout
    assert "1 skipped" in done.stdout and "unexpected skips" not in done.stdout
