"""Every test directory: with ``TASKELL_FAIL_ON_SKIP=1`` (``scripts/test``, ``scripts/faults``)
a test skipped for a reason not listed in ``ALLOWED_SKIPS`` fails the run.

The broker tests skip when RabbitMQ cannot be reached (and ``CI`` is unset): in the scripts that
start a broker first, such a skip hides a broken setup, so it must not pass for a clean run.
"""

from __future__ import annotations

import os

import pytest

# Skips that depend on the machine, not on a broken setup: a substring of the skip reason.
ALLOWED_SKIPS = ("the tzdata package is a database",)

_unexpected: list[str] = []


def _enforced() -> bool:
    return os.environ.get("TASKELL_FAIL_ON_SKIP") == "1"


def _note(report: pytest.TestReport | pytest.CollectReport) -> None:
    if not report.skipped or not _enforced():
        return
    longrepr = report.longrepr
    reason = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
    if not any(allowed in reason for allowed in ALLOWED_SKIPS):
        _unexpected.append(f"{report.nodeid}: {reason}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _note(report)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _note(report)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unexpected:
        terminalreporter.section("unexpected skips (TASKELL_FAIL_ON_SKIP=1)", red=True)
        for line in _unexpected:
            terminalreporter.line(line, red=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _unexpected and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
