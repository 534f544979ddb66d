"""Handlers for the abort integration tests (tests/integration/test_rmq_abort.py).

Run as a worker subprocess::

    ABORT_MARKERS=/tmp/dir taskell worker tests.integration.abort_handlers:handlers

``handlers`` is the benchmark's ``Spin`` worker (``sleep`` is a pure-Python busy loop) and
``example_handlers`` the example ``Impl`` (``sleep`` in 10 ms ``time.sleep`` steps), both made
to leave evidence: every ``sleep`` appends a ``start`` event when it begins and a ``finally``
event (with ``ctx.aborted``) from its ``finally`` block, and every ``square`` a ``square``
event, one JSON object per line in ``$ABORT_MARKERS/events.jsonl``, each with the task id and
the worker's PID. The ``finally`` block also writes ``$ABORT_MARKERS/<task id>.finally``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import taskell
from bench.spin_worker import Spin
from examples.worker import Impl
from generated.demo import registry

MARKERS_ENV = "ABORT_MARKERS"
EVENTS_FILE = "events.jsonl"


def _markers() -> Path:
    return Path(os.environ[MARKERS_ENV])


def record(event: str, ctx: taskell.Context[Any], **extra: object) -> None:
    """Append one event line; O_APPEND keeps concurrent writers' lines whole."""
    line = json.dumps(
        {"event": event, "task_id": ctx.task_id, "pid": os.getpid(), "time": time.time(), **extra}
    )
    with open(_markers() / EVENTS_FILE, "a", encoding="utf-8") as out:
        out.write(line + "\n")


class _Marking(Impl):
    """Wraps the next class's ``sleep`` and ``square`` (in the MRO) with markers."""

    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        record("start", ctx, seconds=seconds)
        try:
            return super().sleep(ctx, seconds)
        finally:
            aborted = ctx.aborted
            (_markers() / f"{ctx.task_id}.finally").write_text(
                json.dumps({"aborted": aborted, "pid": os.getpid()}), encoding="utf-8"
            )
            record("finally", ctx, aborted=aborted)

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        record("square", ctx, x=x)
        return super().square(ctx, x)


class MarkingSpin(_Marking, Spin):
    """Pure-Python busy-loop ``sleep`` (``Spin``) with markers."""


class MarkingImpl(_Marking):
    """The example ``sleep`` (10 ms ``time.sleep`` steps) with markers."""


handlers = registry(MarkingSpin())
example_handlers = registry(MarkingImpl())
