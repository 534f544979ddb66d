"""Worker-side view of the running task: ``Context[P]``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Context"]

P = TypeVar("P")


class Context(Generic[P]):
    """Handed to every handler as its first argument.

    Attributes:
        task_id: the id of the running task.
        redelivered: True when the broker delivered this task before (a worker died on it).
        logger: a logger named after the task.
    """

    __slots__ = ("_aborted", "_report", "logger", "redelivered", "task_id")

    def __init__(
        self,
        task_id: str,
        report: Callable[[P], None],
        *,
        redelivered: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        self.task_id = task_id
        self.redelivered = redelivered
        self.logger = logger or logging.getLogger("taskell.task")
        self._report = report
        self._aborted = threading.Event()

    def progress(self, value: P) -> None:
        """Report progress. Never blocks on the network: the value is handed to the
        connection's thread, and values reported faster than they can be sent are coalesced
        (the latest wins; order holds; the last one before the result is always sent)."""
        self._report(value)

    @property
    def aborted(self) -> bool:
        """True once an abort for this task has reached the worker."""
        return self._aborted.is_set()
