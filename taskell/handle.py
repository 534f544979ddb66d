"""Client-side view of a submitted task: ``TaskHandle[P, R]``, and ``Ref[T]`` for dependencies.

A handle's public surface is what users call. The connection's side of it (delivering replies,
reading the final reply for dependency tracking) is the functions at the end of this module, so
no other module touches a handle's state directly.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import ValidationError

from .errors import PayloadError, TaskellError

if TYPE_CHECKING:
    from .spec import TaskSpec

__all__ = ["Ref", "Retrying", "TaskHandle"]

T_co = TypeVar("T_co", covariant=True)
P_co = TypeVar("P_co", covariant=True)
R_co = TypeVar("R_co", covariant=True)

_PENDING = object()


@dataclass(frozen=True, eq=False)
class HandleOwner:
    """What a handle, and dependency tracking on any connection, may use of the connection
    the handle's task was submitted through. One per connection."""

    abort: Callable[[str], object]  # ask the workers to abort a task, by id
    sync_replies: Callable[[float], None]  # wait until the replies queued so far are handled
    # run the connection's I/O on the calling thread until done() or the timeout (seconds); False
    # if it cannot (see Transport.run_loop_until)
    run_loop_until: Callable[[Callable[[], bool], float | None], bool]


@dataclass(frozen=True)
class Retrying:
    """An attempt of a task failed and the task will run again (its schema's ``retry``).

    Attributes:
        attempt: the number of the attempt that failed (1 for the first).
        delay_s: seconds until the next attempt starts.
        error_type: what the attempt failed with (as ``TaskFailed.error_type``).
        message: the failure's message.
    """

    attempt: int
    delay_s: float
    error_type: str
    message: str


class Ref(Generic[T_co]):
    """Anything whose eventual result is a ``T``: pass it where a ``T`` argument is expected
    to make the new task depend on it. Every ``TaskHandle[P, T]`` is a ``Ref[T]``."""

    __slots__ = ()

    @property
    def id(self) -> str:
        raise NotImplementedError

    def _task_handle(self) -> TaskHandle[Any, Any] | None:
        """The (sync) handle that tracks this task, for dependency tracking; None if none."""
        return None


class TaskHandle(Ref[R_co], Generic[P_co, R_co]):
    """A submitted task: its id, its progress stream and its result.

    ``progress()`` replays every value received so far, then follows live values until the
    task ends. ``result(timeout)`` returns the typed result, or raises ``TaskFailed``,
    ``TaskAborted``, ``DependencyFailed``, ``PayloadError`` or the builtin ``TimeoutError``
    (the task goes on). A task with a retry policy stays pending while it is retried:
    ``retries`` lists its failed attempts, its progress goes on in the same stream, and
    ``result()`` tells the outcome of its last attempt.
    """

    __slots__ = (
        "_callbacks",
        "_id",
        "_lock",
        "_on_progress",
        "_on_retrying",
        "_outcome",
        "_owner",
        "_progress",
        "_raw",
        "_raw_progress",
        "_retries",
        "_spec",
        "_trace",
        "_value",
        "_waiting",
    )

    def __init__(self, owner: HandleOwner, spec: TaskSpec[Any, P_co, R_co], task_id: str) -> None:
        self._owner = owner
        self._spec = spec
        self._id = task_id
        # Guards the state below. A thread that must sleep until it changes makes the
        # condition (``_wait``); most handles never need one (result() usually borrows the
        # connection's loop instead). The rarely used lists start as the shared empty tuple.
        self._lock = threading.Lock()
        self._waiting: threading.Condition | None = None
        self._raw_progress: list[bytes] = []
        self._progress: list[P_co] = []  # decoded prefix of _raw_progress
        self._outcome: bytes | TaskellError | None = None
        self._value: Any = _PENDING
        self._raw: tuple[str, bytes] | None = None  # the final reply's (kind, body)
        self._callbacks: tuple[Callable[[], None], ...] = ()
        self._retries: tuple[Retrying, ...] = ()
        self._on_retrying: tuple[Callable[[Retrying], None], ...] = ()
        self._on_progress: tuple[Callable[[], None], ...] = ()
        self._trace: Any = None  # the OpenTelemetry span context of its submission, if traced

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

    def _task_handle(self) -> TaskHandle[Any, Any]:
        return self

    @property
    def retries(self) -> list[Retrying]:
        """The attempts that failed and were retried so far, oldest first (empty if none)."""
        with self._lock:
            return list(self._retries)

    @property
    def latest_progress(self) -> P_co | None:
        """The last progress value received, or ``None`` before the first."""
        with self._lock:
            count = len(self._raw_progress)
        return self._decoded_progress(count - 1) if count else None

    def progress(self) -> Iterator[P_co]:
        """Yield every progress value received so far, then live ones until the task ends."""
        index = 0
        while True:
            with self._lock:
                while index >= len(self._raw_progress) and self._outcome is None:
                    self._wait(None)
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
        if self._outcome is None:  # the reply then wakes this thread, not the I/O thread first
            self._owner.run_loop_until(self.done, timeout)
        with self._lock:
            while self._outcome is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"task {self._id} ({self._spec.name}) not done after {timeout:g} s")
                self._wait(remaining)
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
        self._owner.abort(self._id)
        return True

    def _wait(self, timeout: float | None) -> None:
        """Sleep (holding ``_lock``) until the state changes or ``timeout`` seconds passed."""
        if self._waiting is None:
            self._waiting = threading.Condition(self._lock)
        self._waiting.wait(timeout)

    def _changed(self) -> None:
        """Wake the threads sleeping in ``_wait`` (holding ``_lock``)."""
        if self._waiting is not None:
            self._waiting.notify_all()

    def _decoded_progress(self, index: int) -> P_co:
        with self._lock:
            while len(self._progress) <= index:
                raw = self._raw_progress[len(self._progress)]
                try:
                    self._progress.append(self._spec.progress.validate_json(raw))
                except ValidationError as exc:
                    raise PayloadError(self._spec.name, f"progress: {exc}") from None
            return self._progress[index]


# The connection's side of a handle (replies arrive on the connection's thread).


def deliver_progress(handle: TaskHandle[Any, Any], body: bytes) -> None:
    """A progress reply arrived; ignored once the task has ended."""
    with handle._lock:
        if handle._outcome is not None:
            return
        handle._raw_progress.append(body)
        handle._changed()
        listeners = handle._on_progress
    for listener in listeners:
        listener()


def on_progress(handle: TaskHandle[Any, Any], listener: Callable[[], None]) -> None:
    """Call ``listener()`` after each progress value of ``handle`` arrives (on the connection's
    thread); the values themselves stay in the handle (``progress_state``, ``progress_value``)."""
    with handle._lock:
        handle._on_progress += (listener,)


def progress_state(handle: TaskHandle[Any, Any]) -> tuple[int, bool]:
    """How many progress values ``handle`` has received, and whether the task has ended: read
    together, so a reader that saw ``ended`` has seen every value."""
    with handle._lock:
        return len(handle._raw_progress), handle._outcome is not None


def progress_value(handle: TaskHandle[Any, Any], index: int) -> Any:
    """Progress value number ``index`` (< the count of ``progress_state``), decoded.

    Raises:
        PayloadError: the value does not fit the task's progress type.
    """
    return handle._decoded_progress(index)


def deliver_retrying(handle: TaskHandle[Any, Any], notice: Retrying) -> None:
    """A ``retrying`` notice arrived: the handle stays pending; a duplicate (redelivery) of a
    notice already received, and one after the task ended, are ignored."""
    with handle._lock:
        if handle._outcome is not None or any(r.attempt == notice.attempt for r in handle._retries):
            return
        handle._retries += (notice,)
        listeners = handle._on_retrying
    for listener in listeners:
        listener(notice)


def on_retrying(handle: TaskHandle[Any, Any], listener: Callable[[Retrying], None]) -> None:
    """Call ``listener`` with each ``retrying`` notice of ``handle``: those received so far at
    once, later ones as they arrive (on the connection's thread)."""
    with handle._lock:
        handle._on_retrying += (listener,)
        received = handle._retries
    for notice in received:
        listener(notice)


def deliver_outcome(
    handle: TaskHandle[Any, Any], outcome: bytes | TaskellError, raw: tuple[str, bytes] | None
) -> None:
    """End ``handle`` with ``outcome`` (a result's JSON, or the error to raise) and run its done
    callbacks. ``raw`` is the final reply's (kind, body), None for a local error (e.g. the
    connection closed) that says nothing about how the task itself ended. Only the first
    outcome counts: a duplicate reply (redelivery) is absorbed."""
    with handle._lock:
        if handle._outcome is not None:
            return
        handle._outcome, handle._raw = outcome, raw
        callbacks, handle._callbacks = handle._callbacks, ()
        handle._changed()
    for callback in callbacks:
        callback()


def final_reply(handle: TaskHandle[Any, Any]) -> tuple[str, bytes] | None:
    """The final reply's (kind, body) once the task ended; None before, or if it ended locally."""
    with handle._lock:
        return handle._raw


def when_done(handle: TaskHandle[Any, Any], callback: Callable[[], None]) -> None:
    """Call ``callback()`` once the outcome is known (at once if it is already)."""
    with handle._lock:
        if handle._outcome is None:
            handle._callbacks += (callback,)
            return
    callback()


def owner_of(handle: TaskHandle[Any, Any]) -> HandleOwner:
    """The connection ``handle``'s task was submitted through."""
    return handle._owner


def spec_of(handle: TaskHandle[Any, Any]) -> TaskSpec[Any, Any, Any]:
    """The spec of ``handle``'s task (its declared errors decode its failure)."""
    return handle._spec
