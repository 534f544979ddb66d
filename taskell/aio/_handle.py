"""``taskell.aio.TaskHandle``: a sync ``taskell.TaskHandle`` seen from an event loop.

The connection's I/O thread fills the wrapped handle as replies arrive (exactly as for the sync
API) and tells the handle's ``Waker``; the waker wakes the loop once per loop turn however
many replies came meanwhile, and only then are the waiting coroutines resumed. Nothing here
waits on a lock other than the handle's own short critical sections.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Generator
from typing import Any, Generic, TypeVar

from ..handle import Ref, Retrying, on_progress, progress_state, progress_value, when_done
from ..handle import TaskHandle as SyncTaskHandle

__all__ = ["TaskHandle", "Waker"]

P_co = TypeVar("P_co", covariant=True)
R_co = TypeVar("R_co", covariant=True)


class Waker:
    """Wakes the handles of one event loop from other threads, one loop wake-up per batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._changed: list[TaskHandle[Any, Any]] = []
        self._scheduled = False

    def notify(self, handle: TaskHandle[Any, Any]) -> None:
        """``handle`` changed (any thread): resume its waiters on the next loop turn."""
        with self._lock:
            self._changed.append(handle)
            if self._scheduled:
                return
            self._scheduled = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            changed, self._changed = self._changed, []
            self._scheduled = False
        for handle in dict.fromkeys(changed):  # each once, in order
            handle._wake()


class TaskHandle(Ref[R_co], Generic[P_co, R_co]):
    """A task submitted through ``taskell.aio``: ``await handle`` gives its result.

    ``progress()`` (``async for``) replays every value received so far, then follows live
    values until the task ends; ``result(timeout)`` returns the typed result or raises
    ``TaskFailed``, ``TaskAborted``, ``DependencyFailed``, ``PayloadError`` or the builtin
    ``TimeoutError`` (the task goes on), as ``taskell.TaskHandle`` does. It is a ``Ref``: pass
    it as an argument of another submission (sync or async) to make a dependency.

    Use it from the event loop of the connection it came from.
    """

    __slots__ = ("_done_waiters", "_handle", "_waiters", "_waker")

    def __init__(self, waker: Waker, handle: SyncTaskHandle[P_co, R_co]) -> None:
        self._waker = waker
        self._handle = handle
        self._waiters: list[asyncio.Future[None]] = []  # woken by any change
        self._done_waiters: list[asyncio.Future[None]] = []  # woken once the task ended
        on_progress(handle, lambda: waker.notify(self))
        when_done(handle, lambda: waker.notify(self))

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<taskell.aio.TaskHandle {self.task} {self.id} {state}>"

    @property
    def id(self) -> str:
        """The task id (a UUID string), also the AMQP ``message_id``."""
        return self._handle.id

    @property
    def task(self) -> str:
        """The task's wire name, ``<package>.<task>``."""
        return self._handle.task

    def done(self) -> bool:
        """True once a result, an error or an abort has arrived."""
        return self._handle.done()

    @property
    def retries(self) -> list[Retrying]:
        """The attempts that failed and were retried so far, oldest first (empty if none)."""
        return self._handle.retries

    @property
    def latest_progress(self) -> P_co | None:
        """The last progress value received, or ``None`` before the first."""
        return self._handle.latest_progress

    def __await__(self) -> Generator[Any, None, R_co]:
        return self.result().__await__()

    async def result(self, timeout: float | None = None) -> R_co:
        """Wait for the task's result and return it.

        Raises:
            TimeoutError: ``timeout`` seconds passed first; the task goes on.
            TaskFailed, TaskAborted, DependencyFailed, PayloadError: the task did not succeed.
        """
        if not self._handle.done():
            waiter = self._waker.loop.create_future()
            self._done_waiters.append(waiter)
            try:
                async with asyncio.timeout(timeout):
                    await waiter
            except TimeoutError:
                if self._handle.done():  # it ended in the same turn
                    return self._handle.result()
                raise TimeoutError(f"task {self.id} ({self.task}) not done after {timeout:g} s") from None
            finally:
                with contextlib.suppress(ValueError):
                    self._done_waiters.remove(waiter)
        return self._handle.result()  # done: returns or raises at once

    async def progress(self) -> AsyncIterator[P_co]:
        """Yield every progress value received so far, then live ones until the task ends."""
        index = 0
        while True:
            available, ended = progress_state(self._handle)
            if index >= available:
                if ended:
                    return
                waiter = self._waker.loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                continue
            while index < available:
                value: P_co = progress_value(self._handle, index)
                yield value
                index += 1

    async def abort(self) -> bool:
        """Ask every worker to abort this task; returns False (a no-op) if it already ended.

        The request is sent from a thread of the loop's default executor, not the loop."""
        if self.done():
            return False
        return await self._waker.loop.run_in_executor(None, self._handle.abort)

    def _task_handle(self) -> SyncTaskHandle[Any, Any]:
        return self._handle

    def _wake(self) -> None:
        """Something arrived (on the loop, from ``Waker``): resume who waits for it."""
        waiters, self._waiters = self._waiters, []
        if self._handle.done():
            waiters += self._done_waiters
            self._done_waiters = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
