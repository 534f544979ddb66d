"""Execution: runs accepted tasks on ``parallelism`` pool threads, each handler in the pool
thread itself (``pool = "thread"``) or in a child process that the thread drives
(``pool = "process"``, see ``_process_pool``).

A task is in the ``running`` table (task id -> ``Running``, see ``_running``) from just before
its handler starts until it ended; an abort may come from another thread at any time.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import _wire
from ._process_pool import Child, ChildDied
from ._running import AbortInterrupt, Progress, Running
from .config import Config
from .context import Context
from .registry import Binding, Registry
from .transport import Delivery, Transport

__all__ = ["Execution"]


class Execution:
    """The worker's pool of handler threads (and their child processes).

    Args:
        registry: the tasks (forked into child processes in process mode).
        transport: the task transport, which progress is sent on.
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
        self._pool: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._children: list[Child] = []
        self.requeue_aborted = False  # set when a graceful stop aborts what still runs

    def start(self) -> None:
        """Create the pool threads' executor (threads start with the first tasks)."""
        self._pool = ThreadPoolExecutor(self._parallelism, thread_name_prefix="taskell-task")

    def submit(self, work: Callable[[Delivery], None], delivery: Delivery) -> bool:
        """Call ``work(delivery)`` on a pool thread; False if the pool is shut down."""
        assert self._pool is not None
        try:
            self._pool.submit(work, delivery)
            return True
        except RuntimeError:  # the pool shut down just now: the worker is stopping
            return False

    def stop(self, timeout: float | None) -> None:
        """Take no more work and let running tasks finish; abort those still running after
        ``timeout`` seconds (None: no limit), with ``requeue_aborted`` set. Then end the
        child processes."""
        if self._pool is not None:
            done = threading.Thread(target=self._pool.shutdown, kwargs={"wait": True}, daemon=True)
            done.start()
            done.join(timeout)
            if done.is_alive():  # the grace period is over
                self.requeue_aborted = True
                for running in list(self._running.values()):
                    running.abort()
                done.join(10)
        for child in self._children:
            child.close()

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
            logger=logging.getLogger(f"taskell.task.{spec.name}"),
        )
        running = Running(binding, ctx, progress, child, delivery)
        self._running[task_id] = running
        if self._is_aborted(task_id):  # an abort that came after the intake's check
            running.ctx._aborted.set()
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
            return child.run(
                spec.name, ctx.task_id, message.body, ctx.redelivered, ctx.attempt, running.progress.report
            )
        except ChildDied as exc:
            if running.ctx.aborted:
                return _wire.ABORTED, _wire.error_body(
                    _wire.TASK_ABORTED, "aborted while running (process killed)"
                )
            return _wire.FAILED, _wire.error_body(_wire.WORKER_CRASHED, str(exc))
