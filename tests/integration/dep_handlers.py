"""Handlers for the dependency integration tests (tests/integration/test_rmq_deps.py).

Run as a worker subprocess::

    DEP_MARKERS=/tmp/dir taskell worker tests.integration.dep_handlers:handlers

or in-process with ``registry(DepImpl(markers=path))``. Every task of the example ``Impl``
leaves evidence: a ``start`` event when its handler begins and an ``end`` event (with the
returned value, or the error) when it returns or raises, one JSON object per line in
``$DEP_MARKERS/events-<pid>.jsonl`` (one file per process, a lock per process, so lines are
never interleaved), each with the task id, the task name, the worker's PID and
``time.time_ns()`` (one clock for every process of the host).

``square(x=UNLUCKY)`` waits ``UNLUCKY_DELAY`` seconds, then raises ``ValueError``: a failing
task whose result type is ``int``, so dependents can take its result as data.
``DEP_DELAY`` (seconds, default 0) slows ``square`` and ``total`` down, so that a DAG keeps
tasks and joins in flight for a while.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import taskell
from examples.worker import Impl
from generated.demo import registry

MARKERS_ENV = "DEP_MARKERS"
DELAY_ENV = "DEP_DELAY"
UNLUCKY = -13
UNLUCKY_DELAY = 0.5

_lock = threading.Lock()


def read_events(markers: Path) -> list[dict[str, Any]]:
    """Every event written so far under ``markers``, from every process."""
    found: list[dict[str, Any]] = []
    for path in sorted(markers.glob("events-*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.endswith("}"):  # a line being written by a live process is skipped
                found.append(json.loads(line))
    return found


class DepImpl(Impl):
    """The example handlers, recording start / end events (see the module docstring)."""

    def __init__(self, markers: Path | None = None, delay: float | None = None) -> None:
        super().__init__()
        self.markers = markers
        self.task_delay = delay

    def _dir(self) -> Path:
        return self.markers if self.markers is not None else Path(os.environ[MARKERS_ENV])

    def _delay(self) -> float:
        if self.task_delay is not None:
            return self.task_delay
        return float(os.environ.get(DELAY_ENV, "0") or 0)

    def _record(self, event: str, ctx: taskell.Context[Any], task: str, **extra: object) -> None:
        line = json.dumps(
            {
                "event": event,
                "task_id": ctx.task_id,
                "task": task,
                "pid": os.getpid(),
                "t": time.time_ns(),
                "redelivered": ctx.redelivered,
                **extra,
            }
        )
        with _lock, open(self._dir() / f"events-{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
            out.write(line + "\n")

    def _traced(self, task: str, ctx: taskell.Context[Any], run: Any, **args: object) -> Any:
        self._record("start", ctx, task, args=args)
        try:
            value = run()
        except BaseException as exc:
            self._record("end", ctx, task, error=type(exc).__name__)
            raise
        self._record("end", ctx, task, value=value)
        return value

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        def run() -> int:
            if x == UNLUCKY:
                time.sleep(UNLUCKY_DELAY)
                raise ValueError(f"unlucky {x}")
            if self._delay():
                time.sleep(self._delay())
            return x * x

        result: int = self._traced("square", ctx, run, x=x)
        return result

    def total(self, ctx: taskell.Context[None], parts: list[int]) -> int:
        def run() -> int:
            if self._delay():
                time.sleep(self._delay())
            return sum(parts)

        result: int = self._traced("total", ctx, run, parts=parts)
        return result

    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        result: float = self._traced("sleep", ctx, lambda: Impl.sleep(self, ctx, seconds), seconds=seconds)
        return result

    def fail(self, ctx: taskell.Context[None], message: str = "boom") -> None:
        self._traced("fail", ctx, lambda: Impl.fail(self, ctx, message), message=message)


handlers = registry(DepImpl())
