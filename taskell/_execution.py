"""Execution: runs accepted tasks on ``parallelism`` pool threads, each handler in the pool
thread itself (``pool = "thread"``) or in a child process that the thread drives
(``pool = "process"``, see ``_process_pool``).

Deliveries wait for a pool thread in a local buffer ordered by priority (``_buffer``). A task
is in the ``running`` table (task id -> ``Running``, see ``_running``) from just before its
handler starts until it ended; an abort may come from another thread at any time, and so may
its time limit, which one sweep on the transport's thread enforces for every running task.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import _wire
from ._buffer import PriorityBuffer
from ._process_pool import Child, ChildDied
from ._running import AbortInterrupt, Progress, Running, TimeLimitInterrupt
from .config import Config
from .context import Context, task_logger
from .registry import Binding, Registry
from .transport import Delivery, Transport

__all__ = ["Execution", "time_limit_interval"]

log = logging.getLogger("taskell.worker")


STREAMING_WAIT = 0.0002  # seconds: tasks that come faster than this stream in (see Execution._next)
# An idle pool thread running the transport's loop is woken by the tasks it receives, and by
# ``stop``; it looks on its own only this rarely (each look costs an idle worker CPU time).
IDLE_LOOK = 1.0


def time_limit_interval(limits: list[float]) -> float:
    """Seconds between two looks for tasks past their time limit: a tenth of the shortest
    limit, within 0.05..1 s, so a handler is stopped at most that late."""
    return min(1.0, max(0.05, min(limits) / 10))


class Execution:
    """The worker's pool of handler threads (and their child processes).

    Args:
        registry: the tasks (forked into child processes in process mode).
        transport: the task transport, which progress is sent on and time limits are
            checked on.
        config: ``pool`` (thread or process) comes from here.
        parallelism: pool threads, so tasks running at once.
        running: the table of running tasks, filled here, read by others (abort, inspect, leases).
        is_aborted: whether an abort for this task id was received.
    """

    def __init__(
        self,
        registry: Registry,
        transport: Transport,
        config: Config,
        *,
        parallelism: int,
        running: dict[str, Running],
        is_aborted: Callable[[str], bool],
    ) -> None:
        self._registry = registry
        self._transport = transport
        self._config = config
        self._parallelism = parallelism
        self._running = running
        self._is_aborted = is_aborted
        self._buffer = PriorityBuffer()
        self._threads: list[threading.Thread] = []
        self._local = threading.local()
        self._children: list[Child] = []
        self._stopped = False
        self.requeue_aborted = False  # set when a graceful stop aborts what still runs

    def start(self, work: Callable[[Delivery], None]) -> None:
        """Start the pool threads, each calling ``work`` with the waiting delivery of highest
        priority, and the time-limit sweep if some task has a time limit."""
        for n in range(self._parallelism):
            thread = threading.Thread(target=self._serve, args=(work,), name=f"taskell-task_{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        limits = [b.spec.time_limit for b in self._registry if b.spec.time_limit is not None]
        if limits:
            self._watch_time_limits(time_limit_interval(limits))

    def submit(self, delivery: Delivery) -> bool:
        """Buffer ``delivery`` for a pool thread; False if the pool is stopping."""
        return self._buffer.put(delivery)

    def stop(self, timeout: float | None) -> None:
        """Take no more work; deliveries still buffered go to ``work`` as usual (the worker
        requeues them), running tasks may finish. Tasks still running after ``timeout``
        seconds (None: no limit) are aborted, with ``requeue_aborted`` set. Then end the child
        processes."""
        self._buffer.close()
        self._transport.wake()  # a pool thread waiting for a task in the loop sees the close
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):  # the grace period is over
            self.requeue_aborted = True
            for running in list(self._running.values()):
                running.abort()
            deadline = time.monotonic() + 10
            for thread in self._threads:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._stopped = True
        for child in self._children:
            child.close()

    def _serve(self, work: Callable[[Delivery], None]) -> None:
        borrow = True
        while True:
            delivery, borrow = self._next(borrow)
            if delivery is None:
                return
            try:
                work(delivery)
            except BaseException:  # never lose a pool thread; ``work`` handles its own errors
                log.exception("pool thread: unexpected error on delivery %s", delivery.message.message_id)

    def _next(self, borrow: bool) -> tuple[Delivery | None, bool]:
        """The next delivery to run, and whether to ``borrow`` for the one after.

        An idle pool thread runs the transport's loop while it waits (one thread at a time), so
        a task starts on the thread that received it, without waking another first. That pays
        when tasks come one at a time; when they stream in (the wait was short), lending the
        loop back and forth costs more than it saves, and the thread waits for the transport's
        thread to hand it the next one instead, until a wait is long again.
        """
        buffer = self._buffer
        started = time.monotonic()
        while (
            borrow
            and buffer.idle()
            and self._transport.run_loop_until(buffer.has_work, None, look_every=IDLE_LOOK)
        ):
            pass  # work came, but another pool thread may have taken it: look again
        if len(buffer) > 1 or not borrow:  # confirms and acks must not wait for this thread
            self._transport.resume_io()
        delivery = self._buffer.get()
        return delivery, time.monotonic() - started > STREAMING_WAIT

    def _watch_time_limits(self, interval: float) -> None:
        """Stop every running task past its deadline; looks every ``interval`` seconds on the
        transport's thread (one timer for all tasks) until the pool stopped."""

        def check() -> None:
            if self._stopped:
                return
            now = time.monotonic()
            for task in list(self._running.values()):
                if task.deadline is not None and task.deadline <= now:
                    task.time_out()
            self._transport.call_later(interval, check)

        self._transport.call_soon(check)

    def run(self, binding: Binding, args: Any, delivery: Delivery) -> tuple[str, bytes, Running]:
        """Run the task on this pool thread; returns its final reply (kind, body) and the
        ``Running`` it was while it ran."""
        message = delivery.message
        task_id = message.message_id or ""
        spec = binding.spec
        child = self._child() if self._config.pool == "process" else None
        progress = Progress(self._transport, binding, task_id, message.reply_to, encoded=child is not None)
        ctx: Context[Any] = Context(
            task_id,
            progress,
            redelivered=delivery.redelivered or _wire.DELIVERIES_HEADER in message.headers,
            attempt=_wire.attempt_of(message),
            logger=task_logger(spec.name),
        )
        running = Running(binding, ctx, progress, child, delivery)
        self._running[task_id] = running
        if self._is_aborted(task_id):  # an abort that came after the intake's check
            running.ctx._aborted = True
        try:
            if child is None:
                kind, body = self._run_handler(running, args)
            else:
                kind, body = self._run_in_child(running, child, delivery)
        finally:
            del self._running[task_id]
        return kind, body, running

    def _run_handler(self, running: Running, args: Any) -> tuple[str, bytes]:
        spec = running.binding.spec
        try:
            try:
                if running.ctx.aborted:
                    raise AbortInterrupt
                value = running.binding.run(running.ctx, args)
            finally:
                running.leave_handler()
        except AbortInterrupt:
            return _wire.ABORTED, _wire.error_body(_wire.TASK_ABORTED, "aborted while running")
        except TimeLimitInterrupt:
            return _wire.FAILED, _wire.time_limit_body(_limit(spec.time_limit), traceback.format_exc())
        except Exception as exc:
            return _wire.FAILED, _wire.failure_body(spec, exc, traceback.format_exc())
        return _wire.encode_result(spec, value)

    def _child(self) -> Child:
        # One child process per pool thread, replaced when an abort (or a crash) ended it.
        child: Child | None = getattr(self._local, "child", None)
        if child is None or not child.alive:
            if child is not None:
                child.close()  # reap it and release its pipe
                self._children.remove(child)
            child = self._local.child = Child(self._registry)
            self._children.append(child)
        return child

    def _run_in_child(self, running: Running, child: Child, delivery: Delivery) -> tuple[str, bytes]:
        message = delivery.message
        spec = running.binding.spec
        if running.ctx.aborted:
            return _wire.ABORTED, _wire.error_body(_wire.TASK_ABORTED, "aborted before it started")
        try:
            ctx = running.ctx
            try:
                return child.run(
                    spec.name,
                    ctx.task_id,
                    message.body,
                    ctx.redelivered,
                    ctx.attempt,
                    running.progress.report,
                )
            finally:
                running.leave_handler()
        except ChildDied as exc:
            if running.stopped_by is TimeLimitInterrupt:
                return _wire.FAILED, _wire.time_limit_body(_limit(spec.time_limit), "")
            if running.stopped_by is AbortInterrupt or running.ctx.aborted:
                return _wire.ABORTED, _wire.error_body(
                    _wire.TASK_ABORTED, "aborted while running (process killed)"
                )
            return _wire.FAILED, _wire.error_body(_wire.WORKER_CRASHED, str(exc))


def _limit(time_limit: float | None) -> float:
    assert time_limit is not None  # only a task with a time limit is ever timed out
    return time_limit
