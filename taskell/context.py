"""Worker-side view of the running task: ``Context[P]``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["Context"]

P = TypeVar("P")
NOTHING: Any = object()  # no progress reported yet


class ProgressSlot:
    """The latest progress value of a task, written by ``Context.progress`` with no lock and no
    I/O (a handler may report millions of values); whoever sends the values reads it.

    ``armed`` asks ``progress`` to call ``fire()`` on the next value (the sender is idle and
    must be woken); a slot that is never armed is simply overwritten.
    """

    __slots__ = ("armed", "latest", "reported")

    def __init__(self) -> None:
        self.latest: Any = NOTHING
        self.reported = 0  # values written so far; the value is stored before the count
        self.armed = False

    def fire(self) -> None:
        """Called by the handler's thread when a value arrives while ``armed``."""


class _CallbackSlot(ProgressSlot):
    """Hands every value to a plain callback, at once."""

    __slots__ = ("_callback",)

    def __init__(self, callback: Callable[[Any], None]) -> None:
        super().__init__()
        self._callback = callback
        self.armed = True

    def fire(self) -> None:
        self._callback(self.latest)


class Context(Generic[P]):
    """Handed to every handler as its first argument.

    Attributes:
        task_id: the id of the running task.
        redelivered: True when the broker delivered this task before (a worker died on it).
        logger: a logger named after the task.
    """

    __slots__ = ("_aborted", "_slot", "logger", "redelivered", "task_id")

    def __init__(
        self,
        task_id: str,
        report: Callable[[P], None] | ProgressSlot,
        *,
        redelivered: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        self.task_id = task_id
        self.redelivered = redelivered
        self.logger = logger or logging.getLogger("taskell.task")
        # The worker passes its slot; a plain callable (say, in a unit test) gets every value.
        self._slot = report if isinstance(report, ProgressSlot) else _CallbackSlot(report)
        self._aborted = threading.Event()

    def progress(self, value: P) -> None:
        """Report progress. Never blocks on the network: the value is handed to the
        connection's thread, and values reported faster than they can be sent are coalesced
        (the latest wins; order holds; the last one before the result is always sent)."""
        slot = self._slot  # inlined slot update: this is a handler's hot loop
        slot.latest = value  # before the count: whoever sees the count sees this value
        slot.reported += 1
        if slot.armed:
            slot.fire()

    @property
    def aborted(self) -> bool:
        """True once an abort for this task has reached the worker."""
        return self._aborted.is_set()
