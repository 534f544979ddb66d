"""Worker-side view of the running task: ``Context[P]``."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Context", "task_logger"]

P = TypeVar("P")
NOTHING: Any = object()  # no progress reported yet


class ProgressSender:
    """Sends a task's progress: ``Context.progress`` only stores the value and counts it, with
    no lock and no I/O (a handler may report millions of values), and calls ``wake`` only while
    the context is *armed*, i.e. when the sender is idle and must be told; the sender reads the
    context's latest value and count when it sends, and re-arms it."""

    listening = False  # arm the context at once (False: nobody to send to, values are kept)

    def attach(self, ctx: Context[Any]) -> None:
        """Called once by ``ctx``'s constructor."""

    def wake(self) -> None:
        """Called by the handler's thread when a value arrives while the context is armed."""


class Context(Generic[P]):
    """Handed to every handler as its first argument.

    Attributes:
        task_id: the id of the running task.
        redelivered: True when the broker delivered this task before (a worker died on it).
        attempt: which attempt this run is, 1 for the first; a task with a ``retry`` policy
            runs again after a failure with the next number (a redelivery keeps the number).
        logger: a logger named after the task.
    """

    __slots__ = (
        "_aborted",
        "_armed",
        "_latest",
        "_reported",
        "_wake",
        "attempt",
        "logger",
        "redelivered",
        "task_id",
    )

    def __init__(
        self,
        task_id: str,
        report: Callable[[P], None] | ProgressSender,
        *,
        redelivered: bool = False,
        attempt: int = 1,
        logger: logging.Logger | None = None,
    ) -> None:
        self.task_id = task_id
        self.redelivered = redelivered
        self.attempt = attempt
        self.logger = logger or logging.getLogger("taskell.task")
        # The progress slot lives here, read by the sender (see ProgressSender).
        self._latest: Any = NOTHING
        self._reported = 0  # values reported so far; the value is stored before the count
        if isinstance(report, ProgressSender):
            self._armed = report.listening
            self._wake: Callable[[], None] = report.wake
            report.attach(self)
        else:  # a plain callable (say, in a unit test) gets every value at once
            self._armed = True
            self._wake = lambda: report(self._latest)
        self._aborted = False  # set once, by the worker, from any thread

    def progress(self, value: P) -> None:
        """Report progress. Never blocks on the network: the value is handed to the
        connection's thread, and values reported faster than they can be sent are coalesced
        (the latest wins; order holds; the last one before the result is always sent)."""
        self._latest = value  # before the count: whoever sees the count sees this value
        self._reported += 1
        if self._armed:
            self._wake()

    @property
    def aborted(self) -> bool:
        """True once an abort for this task has reached the worker."""
        return self._aborted


@functools.cache  # loggers live forever; getLogger takes logging's lock on every call
def task_logger(name: str) -> logging.Logger:
    """The logger handed to task ``name``'s handlers: ``taskell.task.<name>``."""
    return logging.getLogger(f"taskell.task.{name}")
