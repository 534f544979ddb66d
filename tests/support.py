"""Helpers shared by the test suites: paths, the test broker, subprocesses and bounded waits.

Fixtures live in the ``conftest.py`` files and build on these; test modules import helpers
from here (``from tests.support import ...``), never from a ``conftest``. The repository root
is importable in tests through pytest's ``pythonpath`` setting; a subprocess gets it through
``python_env()`` (scripts) or ``cwd=ROOT`` (``taskell worker`` imports from its working
directory, as it does for users).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("TASKELL_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
TASKELL = str(ROOT / ".venv" / "bin" / "taskell")
if not os.path.exists(TASKELL):  # run from another environment: use the one running pytest
    TASKELL = str(Path(sys.executable).with_name("taskell"))
RESULT_TIMEOUT = 30.0  # every result() of the integration tests is bounded by this

# The integration fixtures that are factories (see tests/integration/conftest.py).
StartWorker = Callable[..., taskell.Worker]
SpawnWorker = Callable[..., "subprocess.Popen[bytes]"]
RunCli = Callable[..., "subprocess.CompletedProcess[str]"]


# Bounded waits


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Call ``predicate`` every ``interval`` s until it holds (True) or ``timeout`` s pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    """Wait until ``predicate`` holds; fail with ``what`` (what did not happen) after ``timeout`` s."""
    if not poll_until(predicate, timeout, interval):
        raise AssertionError(f"not within {timeout} s: {what}")


# The test broker


def blocking_connection(url: str = URL) -> Any:
    """A pika ``BlockingConnection`` (pika is untyped, hence ``Any``) failing fast if unreachable."""
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 10
    return pika.BlockingConnection(params)


def worker_pids(answers: list[dict[str, Any]]) -> set[int]:
    """PIDs of the workers that answered ``inspect`` (worker names are ``host:pid:suffix``)."""
    pids = set()
    for answer in answers:
        parts = str(answer.get("worker", "")).split(":")
        if len(parts) >= 3 and parts[-2].isdigit():
            pids.add(int(parts[-2]))
    return pids


# Subprocesses


def cli_env(url: str) -> dict[str, str]:
    """The environment of a ``taskell`` subprocess: ours without TASKELL_*, plus TASKELL_URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKELL_")}
    env["TASKELL_URL"] = url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_env(url: str) -> dict[str, str]:
    """``cli_env(url)`` for a Python script: the repository root on PYTHONPATH."""
    return {**cli_env(url), "PYTHONPATH": str(ROOT)}


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID, SIGKILL after 15 s, reap."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def wait_consuming(
    config: taskell.Config, workers: Sequence[tuple[subprocess.Popen[bytes], Path]], timeout: float = 30.0
) -> None:
    """Return once every ``(process, log file)`` worker answers ``inspect`` (its control consumer
    is up) and has logged "consuming" (``Worker.start`` logs that once its task consumers are
    registered); fail with the logs if one exits first or ``timeout`` s pass."""
    waiting = {proc.pid: (proc, log) for proc, log in workers}
    deadline = time.monotonic() + timeout
    with taskell.connect(config=config) as probe:
        while waiting and time.monotonic() < deadline:
            for proc, log in waiting.values():
                if proc.poll() is not None:
                    output = log.read_text(errors="replace")
                    pytest.fail(f"taskell worker exited with {proc.returncode}:\n{output}")
            answered = worker_pids(probe.inspect(wait=0.3))
            for pid in list(waiting):
                if pid in answered and " consuming " in waiting[pid][1].read_text(errors="replace"):
                    del waiting[pid]
    if waiting:
        logs = "\n".join(log.read_text(errors="replace") for _, log in waiting.values())
        pytest.fail(f"taskell workers {sorted(waiting)} not consuming within {timeout} s:\n{logs}")
