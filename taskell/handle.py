"""Client-side view of a submitted task: ``TaskHandle[P, R]``, and ``Ref[T]`` for dependencies."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import ValidationError

from .errors import PayloadError, TaskellError

if TYPE_CHECKING:
    from .connection import Connection
    from .spec import TaskSpec

__all__ = ["Ref", "TaskHandle"]

T_co = TypeVar("T_co", covariant=True)
P_co = TypeVar("P_co", covariant=True)
R_co = TypeVar("R_co", covariant=True)

_PENDING = object()


class Ref(Generic[T_co]):
    """Anything whose eventual result is a ``T``: pass it where a ``T`` argument is expected
    to make the new task depend on it. Every ``TaskHandle[P, T]`` is a ``Ref[T]``."""

    __slots__ = ()

    @property
    def id(self) -> str:
        raise NotImplementedError


class TaskHandle(Ref[R_co], Generic[P_co, R_co]):
    """A submitted task: its id, its progress stream and its result.

    ``progress()`` replays every value received so far, then follows live values until the
    task ends. ``result(timeout)`` returns the typed result, or raises ``TaskFailed``,
    ``TaskAborted``, ``DependencyFailed``, ``PayloadError`` or the builtin ``TimeoutError``
    (the task goes on).
    """

    __slots__ = (
        "_callbacks",
        "_cond",
        "_conn",
        "_id",
        "_outcome",
        "_progress",
        "_raw",
        "_raw_progress",
        "_spec",
        "_value",
    )

    def __init__(self, conn: Connection, spec: TaskSpec[Any, P_co, R_co], task_id: str) -> None:
        self._conn = conn
        self._spec = spec
        self._id = task_id
        self._cond = threading.Condition(threading.Lock())
        self._raw_progress: list[bytes] = []
        self._progress: list[P_co] = []  # decoded prefix of _raw_progress
        self._outcome: bytes | TaskellError | None = None
        self._value: Any = _PENDING
        self._raw: tuple[str, bytes] | None = None  # the final reply's (kind, body)
        self._callbacks: list[Callable[[], None]] = []

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<TaskHandle {self._spec.name} {self._id} {state}>"

    @property
    def id(self) -> str:
        """The task id (a UUID string), also the AMQP ``message_id``."""
        return self._id

    @property
    def task(self) -> str:
        """The task's wire name, ``<package>.<task>``."""
        return self._spec.name

    def done(self) -> bool:
        """True once a result, an error or an abort has arrived."""
        return self._outcome is not None

    @property
    def latest_progress(self) -> P_co | None:
        """The last progress value received, or ``None`` before the first."""
        with self._cond:
            count = len(self._raw_progress)
        return self._decoded_progress(count - 1) if count else None

    def progress(self) -> Iterator[P_co]:
        """Yield every progress value received so far, then live ones until the task ends."""
        index = 0
        while True:
            with self._cond:
                while index >= len(self._raw_progress) and self._outcome is None:
                    self._cond.wait()
                available = len(self._raw_progress)
            if index >= available:
                return
            while index < available:
                yield self._decoded_progress(index)
                index += 1

    def result(self, timeout: float | None = None) -> R_co:
        """Wait for the task's result and return it.

        Raises:
            TimeoutError: ``timeout`` seconds passed first; the task goes on.
            TaskFailed, TaskAborted, DependencyFailed, PayloadError: the task did not succeed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._outcome is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"task {self._id} ({self._spec.name}) not done after {timeout} s")
                self._cond.wait(remaining)
            outcome = self._outcome
        if isinstance(outcome, TaskellError):
            raise outcome
        if self._value is _PENDING:
            try:
                self._value = self._spec.result.validate_json(outcome)
            except ValidationError as exc:
                raise PayloadError(self._spec.name, f"result: {exc}") from None
        value: R_co = self._value
        return value

    def abort(self) -> bool:
        """Ask every worker to abort this task; returns False (a no-op) if it already ended."""
        if self.done():
            return False
        self._conn.abort(self._id)
        return True

    # Called by the connection's reply dispatcher.

    def _on_progress(self, body: bytes) -> None:
        with self._cond:
            if self._outcome is None:
                self._raw_progress.append(body)
                self._cond.notify_all()

    def _on_outcome(self, outcome: bytes | TaskellError, raw: tuple[str, bytes] | None) -> None:
        """Set the outcome; ``raw`` is the final reply's (kind, body), None for a local error
        (e.g. the connection closed) that says nothing about how the task itself ended."""
        with self._cond:
            if self._outcome is not None:  # a duplicate reply (redelivery) is absorbed
                return
            self._outcome, self._raw = outcome, raw
            callbacks, self._callbacks = self._callbacks, []
            self._cond.notify_all()
        for callback in callbacks:
            callback()

    def _add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the outcome is known (at once if it is already)."""
        with self._cond:
            if self._outcome is None:
                self._callbacks.append(callback)
                return
        callback()

    def _decoded_progress(self, index: int) -> P_co:
        with self._cond:
            while len(self._progress) <= index:
                raw = self._raw_progress[len(self._progress)]
                try:
                    self._progress.append(self._spec.progress.validate_json(raw))
                except ValidationError as exc:
                    raise PayloadError(self._spec.name, f"progress: {exc}") from None
            return self._progress[index]
