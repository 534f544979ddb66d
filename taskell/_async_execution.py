"""Async execution: runs ``async def`` handlers (``AsyncHandlers``) on one event loop thread of
the worker's own, up to ``parallelism`` tasks at once (tasks, not threads).

Deliveries wait in the same priority buffer as on the thread pool (``_buffer``). Whenever a
slot is free the loop takes the waiting delivery of highest priority and serves it in an
asyncio task of its own: intake, handler, settling (the worker's ``take`` and ``end``, as on a
pool thread). Nothing on that path blocks the loop: progress and replies are handed to the
transport's thread as they are from pool threads.

An abort (from the control thread) and the task's time limit (a timer on the loop) cancel the
handler's coroutine: ``asyncio.CancelledError`` is raised at its next ``await``, so its
``finally`` and ``async with`` blocks run. A handler that blocks the loop (``time.sleep``, long
CPU work) stalls every task on it; a watchdog thread notices when the loop has not answered for
``BLOCKED_AFTER`` seconds and logs which task holds it, and where.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import selectors
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import _wire
from ._buffer import PriorityBuffer
from ._intake import Run
from ._running import AbortInterrupt, Progress, Running, TimeLimitInterrupt
from .context import Context, task_logger
from .registry import Binding
from .transport import Delivery, Transport

__all__ = ["BLOCKED_AFTER", "AsyncExecution", "AsyncRunning"]

log = logging.getLogger("taskell.worker")

BLOCKED_AFTER = 0.25  # seconds one task may hold the loop before the watchdog names it
LAGGING_AFTER = 1.0  # seconds the loop may fall behind, busy with many tasks, before it says so
BEAT = 0.05  # seconds between two heartbeats of the loop (and two looks of the watchdog)
START_BATCH = 32  # tasks started per turn of the loop, so a burst of deliveries never hogs it

Take = Callable[[Delivery], Run | None]
End = Callable[[Delivery, Binding, str, bytes, Running], None]
InternalError = Callable[[Delivery, Exception], None]


class AsyncRunning(Running):
    """A task on the event loop; ``abort()`` and ``time_out()`` (from any thread) cancel the
    asyncio task awaiting its handler, as long as it still does."""

    def __init__(
        self,
        binding: Binding,
        ctx: Context[Any],
        progress: Progress,
        delivery: Delivery,
        task: asyncio.Task[None],
    ) -> None:
        super().__init__(binding, ctx, progress, None, delivery)
        self.task = task

    def _stop(self, interrupt: type[BaseException]) -> None:
        with self._lock:
            if not self._in_handler or self.stopped_by is not None:
                return
            self.stopped_by = interrupt
        with contextlib.suppress(RuntimeError):  # a closed loop: the worker stopped, nothing runs
            self.task.get_loop().call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        # On the loop, so the handler is either still awaited or done with for good.
        if self._in_handler:
            self.task.cancel()

    def leave_handler(self) -> None:
        with self._lock:
            self._in_handler = False


class AsyncExecution:
    """The worker's event loop thread, running up to ``parallelism`` async handlers at once.

    Args:
        transport: the task transport, which progress is sent on.
        parallelism: tasks served at once.
        running: the table of running tasks, filled here, read by others (abort, inspect, leases).
        is_aborted: whether an abort for this task id was received.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        parallelism: int,
        running: dict[str, Running],
        is_aborted: Callable[[str], bool],
    ) -> None:
        self._transport = transport
        self._parallelism = parallelism
        self._running = running
        self._is_aborted = is_aborted
        self._buffer = PriorityBuffer()
        self._loop = asyncio.SelectorEventLoop(_Selector(self._before_wait, self._after_wait))
        self._thread = threading.Thread(target=self._loop.run_forever, name="taskell-aio", daemon=True)
        self._lock = threading.Lock()
        self._pump_due = False  # a pump is scheduled on the loop (guarded by _lock)
        self._waiting = False  # the loop waits for I/O (or is about to): a delivery must wake it
        self._active = 0  # deliveries being served (on the loop only)
        self._closed = False
        self._drained = threading.Event()  # closed, and nothing served or waiting any more
        self._watchdog = LoopWatchdog(self._loop)
        self._take: Take
        self._end: End
        self._internal_error: InternalError
        self.requeue_aborted = False  # set when a graceful stop aborts what still runs

    def start(self, take: Take, end: End, internal_error: InternalError) -> None:
        """Start the loop thread. Each delivery goes to ``take`` (the intake: None when it was
        settled without running), its handler runs, and ``end`` settles it; an unexpected
        error in either goes to ``internal_error``."""
        self._take, self._end, self._internal_error = take, end, internal_error
        self._thread.start()
        self._watchdog.start(self._thread)

    def submit(self, delivery: Delivery) -> bool:
        """Buffer ``delivery`` for the loop; False if it is stopping."""
        if not self._buffer.put(delivery):
            return False
        if self._waiting:  # else the loop is busy and pumps at its next turn, unprompted
            self._wake()
        return True

    def stop(self, timeout: float | None) -> None:
        """Take no more work; deliveries still buffered go to ``take`` at once (the worker
        requeues them), running tasks may finish. Tasks still running after ``timeout``
        seconds (None: no limit) are aborted (cancelled), with ``requeue_aborted`` set. Then
        stop the loop."""
        self._buffer.close()
        self._closed = True
        if not self._thread.is_alive():  # never started (the worker's start failed)
            self._loop.close()
            return
        self._loop.call_soon_threadsafe(self._pump)
        if not self._drained.wait(timeout):  # the grace period is over
            self.requeue_aborted = True
            for running in list(self._running.values()):
                running.abort()
            self._drained.wait(10)
        self._watchdog.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def _pump(self) -> None:
        """Serve waiting deliveries, highest priority first, while slots are free (on the loop).

        At most ``START_BATCH`` per call: the first step of each task (intake, start of the
        handler) runs in the same turn of the loop, and a burst of a thousand deliveries would
        make every running handler wait for all of them. The rest follow in the next turn."""
        with self._lock:
            self._pump_due = False
        # Once closed, every delivery left is taken: the worker only requeues them.
        for _ in range(START_BATCH):
            if self._active >= self._parallelism and not self._closed:
                break
            delivery = self._buffer.pop()
            if delivery is None:
                break
            self._active += 1
            self._loop.create_task(self._serve(delivery))
        if self._closed and self._active == 0:
            self._drained.set()

    def _before_wait(self, timeout: float | None) -> float | None:
        """The loop is about to wait ``timeout`` s for I/O: not at all if deliveries wait for
        a free slot (the next turn pumps them), else from now on a delivery wakes it."""
        self._waiting = True
        if len(self._buffer) and (self._active < self._parallelism or self._closed):
            return 0
        return timeout

    def _after_wait(self) -> None:
        self._waiting = False
        self._pump()

    def _wake(self) -> None:
        """Have the loop pump (once for any number of calls until it does)."""
        with self._lock:
            if self._pump_due:
                return
            self._pump_due = True
        self._loop.call_soon_threadsafe(self._pump)

    async def _serve(self, delivery: Delivery) -> None:
        try:
            run = self._take(delivery)
            if run is not None:
                kind, body, running = await self._run(run.binding, run.args, delivery)
                self._end(delivery, run.binding, kind, body, running)
        except Exception as exc:  # never lose a slot; the worker settles the delivery
            self._internal_error(delivery, exc)
        finally:
            self._active -= 1
            self._pump()

    async def _run(self, binding: Binding, args: Any, delivery: Delivery) -> tuple[str, bytes, Running]:
        """Run the task's handler in this asyncio task; its final reply (kind, body) and the
        ``Running`` it was while it ran."""
        message = delivery.message
        task_id = message.message_id or ""
        spec = binding.spec
        progress = Progress(self._transport, binding, task_id, message.reply_to, encoded=False)
        ctx: Context[Any] = Context(
            task_id,
            progress,
            redelivered=delivery.redelivered or _wire.DELIVERIES_HEADER in message.headers,
            attempt=_wire.attempt_of(message),
            logger=task_logger(spec.name),
        )
        task = asyncio.current_task()
        assert task is not None
        task.set_name(f"{spec.name} [{task_id}]")  # what the watchdog names
        running = AsyncRunning(binding, ctx, progress, delivery, task)
        self._running[task_id] = running
        if self._is_aborted(task_id):  # an abort that came after the intake's check
            ctx._aborted = True
        try:
            kind, body = await self._run_handler(running, args)
        finally:
            del self._running[task_id]
        return kind, body, running

    async def _run_handler(self, running: AsyncRunning, args: Any) -> tuple[str, bytes]:
        spec = running.binding.spec
        limit = spec.time_limit
        timer = None if limit is None else self._loop.call_later(limit, running.time_out)
        try:
            try:
                if running.ctx.aborted:
                    return _wire.ABORTED, _wire.error_body(_wire.TASK_ABORTED, "aborted while running")
                value = await running.binding.run(running.ctx, args)
            finally:
                running.leave_handler()
                if timer is not None:
                    timer.cancel()
        except asyncio.CancelledError as exc:
            if running.stopped_by is None:  # not cancelled by taskell: the handler's own doing
                return _wire.FAILED, _wire.error_body(
                    _wire.type_name(type(exc)), str(exc) or "cancelled", traceback.format_exc()
                )
            running.task.uncancel()  # handled here: the task goes on to settle
            if running.stopped_by is TimeLimitInterrupt:
                assert limit is not None
                return _wire.FAILED, _wire.time_limit_body(limit, traceback.format_exc())
            assert running.stopped_by is AbortInterrupt
            return _wire.ABORTED, _wire.error_body(_wire.TASK_ABORTED, "aborted while running (cancelled)")
        except Exception as exc:
            return _wire.FAILED, _wire.failure_body(spec, exc, traceback.format_exc())
        return _wire.encode_result(spec, value)


class _Selector(selectors.DefaultSelector):
    """The loop's selector, telling the execution when the loop waits for I/O. Waking the loop
    costs the waking thread a system call, and with it the GIL until the busy loop thread lets
    go of it (up to the 5 ms switch interval): the I/O thread receiving deliveries wakes it
    only while it waits, and a busy loop takes new deliveries at each turn."""

    def __init__(
        self, before_wait: Callable[[float | None], float | None], after_wait: Callable[[], None]
    ) -> None:
        super().__init__()
        self._before_wait = before_wait
        self._after_wait = after_wait

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        timeout = self._before_wait(timeout)
        try:
            return super().select(timeout)
        finally:
            self._after_wait()


class LoopWatchdog:
    """Says when the event loop is blocked. The loop beats every ``BEAT`` seconds; a thread
    looks as often. When beats are overdue and the same asyncio task was running on the loop
    at every look for ``BLOCKED_AFTER`` seconds, that task blocks the loop: it is logged with
    where it is, once per stall, and so is how long the stall lasted. Overdue beats with a
    different task at each look are a loop busy with many tasks' steps, not a blocked one:
    logged only from ``LAGGING_AFTER`` seconds, naming no task."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._last_beat = time.monotonic()
        self._stopped = threading.Event()
        self._loop_thread: threading.Thread | None = None

    def start(self, loop_thread: threading.Thread) -> None:
        self._loop_thread = loop_thread
        self._loop.call_soon_threadsafe(self._beat)
        threading.Thread(target=self._watch, name="taskell-aio-watchdog", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _beat(self) -> None:  # on the loop
        self._last_beat = time.monotonic()
        if not self._stopped.is_set():
            self._loop.call_later(BEAT, self._beat)

    def _watch(self) -> None:
        holder: asyncio.Task[Any] | None = None  # the task seen at every look since held_since
        held_since = 0.0
        stall: tuple[float, str] | None = None  # (last beat, culprit) of the stall logged
        while not self._stopped.wait(BEAT):
            now, last = time.monotonic(), self._last_beat
            if stall is not None:
                if last > stall[0]:  # it turned again
                    log.warning("event loop was blocked for %.2f s by %s", last - stall[0] - BEAT, stall[1])
                    stall = None
                continue
            overdue = now - last - BEAT
            task = asyncio.current_task(self._loop) if overdue > 0 else None  # read only: a name
            if task is None or task is not holder:
                holder, held_since = task, now
            if holder is not None and now - held_since >= BLOCKED_AFTER:
                stall = (last, f"task {holder.get_name()}")
                log.warning(
                    "event loop blocked for %.2f s by %s: an async handler must not block "
                    "(await instead, or run blocking work in a thread with asyncio.to_thread); "
                    "it is at:\n%s",
                    overdue,
                    stall[1],
                    self._where(),
                )
            elif overdue >= LAGGING_AFTER:
                stall = (last, "many tasks at once")
                log.warning(
                    "event loop lagging %.2f s behind, busy with many tasks at once (none holds it "
                    "long): lower parallelism, or move CPU work to threads",
                    overdue,
                )

    def _where(self) -> str:
        assert self._loop_thread is not None
        frame = sys._current_frames().get(self._loop_thread.ident or 0)
        return "(unknown)" if frame is None else "".join(traceback.format_stack(frame, limit=6))
