"""A task while it runs on a worker: its abort switch (``Running``) and its progress slot
(``Progress``)."""

from __future__ import annotations

import ctypes
import json
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from . import _wire
from ._process_pool import Child
from .context import NOTHING, Context, ProgressSender
from .registry import Binding
from .transport import Delivery, Transport

if TYPE_CHECKING:
    from ._lease import Lease

log = logging.getLogger("taskell.worker")

PROGRESS_INTERVAL = 0.02  # seconds between two progress messages of one task (50 per second)


class AbortInterrupt(BaseException):
    """Raised inside a handler's thread to stop it; a BaseException so ``except Exception``
    in user code does not swallow it."""


class TimeLimitInterrupt(BaseException):
    """Raised inside a handler's thread that ran past its task's ``time_limit``: the task
    fails (``TimeLimitExceeded``) instead of being aborted."""


def raise_in_thread(thread_id: int, exc: type[BaseException] | None) -> None:
    # The mechanism dramatiq uses for time limits; None clears a pending exception.
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc else None
    )


class Running:
    """A task on a pool thread; ``abort()`` and ``time_out()`` may come from another thread at
    any time. The first of them stops the handler (``stopped_by`` says which); later ones, and
    any after the handler ended, do nothing but ``abort`` marking the context aborted."""

    def __init__(
        self, binding: Binding, ctx: Context[Any], progress: Progress, child: Child | None, delivery: Delivery
    ) -> None:
        self.binding = binding
        self.delivery = delivery
        self.ctx = ctx
        self.progress = progress
        self.child = child
        self.lease: Lease | None = None  # set on the I/O thread once the task runs long
        self.thread_id = threading.get_ident()
        self.started = time.time()
        limit = binding.spec.time_limit
        self.deadline = None if limit is None else time.monotonic() + limit  # monotonic clock
        self.stopped_by: type[BaseException] | None = None  # AbortInterrupt or TimeLimitInterrupt
        self._lock = threading.Lock()
        self._in_handler = True

    def abort(self) -> None:
        self.ctx._aborted = True
        self._stop(AbortInterrupt)

    def time_out(self) -> None:
        """Stop the handler because it ran past its time limit."""
        self._stop(TimeLimitInterrupt)

    def _stop(self, interrupt: type[BaseException]) -> None:
        # Thread pool: raise ``interrupt`` in the handler's thread; process pool: kill the child
        # (the pool thread then sees it die and reads ``stopped_by``).
        with self._lock:
            if not self._in_handler or self.stopped_by is not None:
                return
            self.stopped_by = interrupt
            if self.child is not None:
                self.child.kill()
            else:
                raise_in_thread(self.thread_id, interrupt)

    def leave_handler(self) -> None:
        """Called by the task's own thread once the handler returned or raised; from then on
        nothing stops it (a child process may already run the thread's next task)."""
        with self._lock:
            self._in_handler = False
            if self.stopped_by is not None and self.child is None:
                raise_in_thread(self.thread_id, None)  # clear an interrupt not raised yet


class Progress(ProgressSender):
    """Sends a task's progress from the I/O thread, at most every ``PROGRESS_INTERVAL``
    seconds: values reported faster are coalesced, in order, and ``flush`` sends the last one
    before the final reply. The context is armed while no send is scheduled.

    It reads and arms the context's slot (``_latest``, ``_reported``, ``_armed``) directly:
    ``Context.progress`` is a handler's hot loop, kept to a few attribute writes.
    """

    def __init__(
        self, transport: Transport, binding: Binding, task_id: str, reply_to: str | None, *, encoded: bool
    ) -> None:
        self._transport = transport
        self._encoded = encoded  # values arrive as JSON bytes (from a child process)
        self._binding = binding
        self._task_id = task_id
        self._reply_to = reply_to
        self.listening = reply_to is not None  # nobody to send to: values are only kept for inspect
        self._ctx: Context[Any] | None = None
        self._lock = threading.Lock()  # orders sends between the I/O thread and flush()
        self._sent = 0
        self._next_send = 0.0

    def attach(self, ctx: Context[Any]) -> None:
        self._ctx = ctx

    @property
    def latest(self) -> Any:
        """The last value reported (``NOTHING`` before the first)."""
        return NOTHING if self._ctx is None else self._ctx._latest

    def report(self, value: Any) -> None:
        """Report ``value`` as ``Context.progress`` does (for values from a child process)."""
        assert self._ctx is not None
        self._ctx.progress(value)

    def wake(self) -> None:
        assert self._ctx is not None
        self._ctx._armed = False
        self._transport.call_soon(self._tick)

    def _tick(self) -> None:  # on the I/O thread
        ctx = self._ctx
        assert ctx is not None
        now = time.monotonic()
        if now < self._next_send:
            self._transport.call_later(self._next_send - now, self._tick)
            return
        self._send_latest()
        self._next_send = now + PROGRESS_INTERVAL
        ctx._armed = True
        if ctx._reported > self._sent:  # reported meanwhile, maybe while disarmed: send it later
            ctx._armed = False
            self._transport.call_later(PROGRESS_INTERVAL, self._tick)

    def _send_latest(self) -> Future[None] | None:
        ctx = self._ctx
        assert ctx is not None
        with self._lock:
            reported = ctx._reported
            if reported <= self._sent:
                return None
            self._sent = reported
            return self._send(ctx._latest)

    def flush(self) -> list[Future[None]]:
        """Send the last unsent value now; called before the final reply."""
        if self._reply_to is None:
            return []
        future = self._send_latest()
        return [] if future is None else [future]

    def _send(self, value: Any) -> Future[None] | None:
        try:
            body = value if self._encoded else _wire.encode_progress(self._binding.spec, value)
        except (ValidationError, ValueError) as exc:
            log.error(
                "%s [%s]: progress value does not fit its type: %s",
                self._binding.spec.name,
                self._task_id,
                exc,
            )
            return None
        assert self._reply_to is not None
        message = _wire.reply(_wire.PROGRESS, self._task_id, body)
        return self._transport.publish("", self._reply_to, message, mandatory=False)


def json_form(task: Running, value: Any) -> Any:
    if task.child is not None:  # progress from a child process is already JSON
        return json.loads(value)
    return task.binding.spec.progress.dump_python(value, mode="json")
