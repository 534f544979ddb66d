"""``Worker``: consumes task queues and runs handlers with bounded parallelism.

Threads: the transport's I/O thread receives deliveries and control messages and does all
network I/O; ``parallelism`` pool threads run handlers. A task is acknowledged only after its
final reply (result, failure, abort or dead-letter) is confirmed by the broker, so a worker
that dies mid-task leaves it to be redelivered.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import signal
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import Any

from pydantic import ValidationError

from . import _wire
from ._abort_log import AbortLog
from ._joiner import Joiner
from ._lease import Lease
from ._process_pool import Child, ChildDied
from ._running import AbortInterrupt, Progress, Running, json_form
from .config import PREFETCH_PER_SLOT, Config
from .context import NOTHING, Context
from .errors import BrokerUnavailable
from .registry import Registry
from .transport import Delivery, Message, Transport, open_transport

__all__ = ["Worker"]

log = logging.getLogger("taskell.worker")

# Task ids kept: aborted ones, so a queued copy never starts; finished ones only to answer an
# abort with "finished" (about 190 bytes each: a small table keeps the worker's memory flat).
_REMEMBERED_ABORTED = 100_000
_REMEMBERED_FINISHED = 10_000
LEASE_CHECK_INTERVAL = 1.0  # seconds between two looks for tasks running past lease_after
START_ATTEMPTS = 3


class Worker:
    """Runs the tasks of a ``Registry``.

    Examples:
        >>> worker = Worker(registry(Impl()), Config.load("taskell.toml"))
        >>> worker.run()          # blocks; SIGTERM / Ctrl-C stop it gracefully

    Or, in tests: ``with Worker(reg, config): ...`` runs it in the background.

    Args:
        registry: the tasks this worker serves.
        config: broker, parallelism, queues; defaults to ``Config.load()``.
        queues: replaces the configured queues (``--queue``).
        parallelism: replaces the configured parallelism (``--parallelism``).
    """

    def __init__(
        self,
        registry: Registry,
        config: Config | None = None,
        *,
        queues: Sequence[str] | None = None,
        parallelism: int | None = None,
    ) -> None:
        self.config = config or Config.load()
        self.registry = registry
        self.queues = list(queues or self.config.queues or registry.queues)
        self.parallelism = parallelism or self.config.parallelism
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._transport: Transport
        self._joiner: Joiner | None = None
        self._control: Transport
        self._abort_log: AbortLog | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._running: dict[str, Running] = {}
        self._aborted: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._consumer_tags: list[str] = []
        self._fingerprint_warned: set[tuple[str, str]] = set()
        self._stopping = False
        self._stopped = threading.Event()
        self._lost: BaseException | None = None  # why the broker connection was lost for good
        self._local = threading.local()
        self._requeue_aborted = False  # set when a graceful stop aborts what still runs
        self._settling = threading.Condition()
        self._settling_count = 0  # finished tasks whose replies are not yet confirmed
        self._children: list[Child] = []
        if not self.queues:
            raise ValueError("the worker has no queue to consume (no tasks registered, no queues configured)")

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Lifecycle

    def start(self) -> None:
        """Connect, declare what the worker needs and start consuming (returns at once)."""
        config = self.config
        # Two connections: one for tasks (its channel's prefetch counts only tasks) and one
        # for control messages (abort, inspect), which must flow while every slot is busy.
        self._control = open_transport(config, name="taskell-control")
        try:
            self._transport = open_transport(config, name="taskell-worker")
        except BaseException:
            self._control.close()
            raise
        transport, control = self._transport, self._control
        try:
            transport.declare_queue(
                config.dead_letter_queue, durable=True, arguments=_wire.dead_letter_queue_arguments(config)
            ).result()
            transport.declare_exchange(_wire.OUTCOMES_EXCHANGE, "direct").result()
            for queue in self.queues:
                transport.declare_queue(queue, durable=True, arguments=_wire.queue_arguments(config)).result()
            control.declare_exchange(config.abort_exchange, "fanout").result()
            # Named (not server-named) so a reconnect can declare and bind it again.
            control_queue = control.declare_queue(
                f"taskell.control.{uuid.uuid4().hex}", durable=False, auto_delete=True
            ).result()
            control.bind(control_queue, config.abort_exchange).result()
            control.consume(control_queue, self._on_control, auto_ack=True).result()
            if config.abort_retention > 0:
                # Live aborts flow from here on; the records cover those sent before.
                self._abort_log = AbortLog(
                    open_transport(config, name="taskell-aborts"),
                    config,
                    self._on_recorded_abort,
                    deliver_on=control,
                )
                self._abort_log.start()
            self._joiner = Joiner(control, config, lambda task_id: task_id in self._aborted)
            self._joiner.start()
            control.add_on_reconnect(self._joiner.reset)
            self._executor = ThreadPoolExecutor(self.parallelism, thread_name_prefix="taskell-task")
            # One limit for the whole channel, so a worker on several queues holds at most
            # `prefetch` tasks; quorum queues only support a limit per consumer.
            per_consumer = config.queue_type == "quorum"
            prefetch = config.prefetch or PREFETCH_PER_SLOT * self.parallelism
            transport.set_prefetch(prefetch, per_consumer=per_consumer).result()
            for queue in self.queues:
                self._consumer_tags.append(transport.consume(queue, self._on_delivery).result())
            if transport.supports_leases:
                transport.call_soon(self._check_leases)
        except BaseException:
            transport.close()
            control.close()
            if self._abort_log is not None:
                self._abort_log.close()
            raise
        transport.add_on_lost(self._on_lost)
        control.add_on_lost(self._on_lost)
        log.info("worker %s consuming %s with parallelism %d", self.name, self.queues, self.parallelism)

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking tasks, let running ones finish, then disconnect.

        Deliveries received but not started are requeued. Tasks still running after ``timeout``
        seconds (None: no limit) are aborted and requeued, for another worker to run.
        """
        if self._stopping:
            return
        self._stopping = True
        for tag in self._consumer_tags:
            self._transport.cancel(tag)
        if self._executor is not None:
            done = threading.Thread(target=self._executor.shutdown, kwargs={"wait": True}, daemon=True)
            done.start()
            done.join(timeout)
            if done.is_alive():  # the grace period is over
                self._requeue_aborted = True
                for running in list(self._running.values()):
                    running.abort()
                done.join(10)
        for child in self._children:
            child.close()
        # Finished tasks are acknowledged once their replies are confirmed: wait for that, so
        # a graceful stop does not hand them to another worker again.
        with self._settling:
            self._settling.wait_for(lambda: self._settling_count == 0, timeout=10)
        self._transport.close()
        if self._abort_log is not None:
            self._abort_log.close()
        self._control.close()
        self._stopped.set()

    def run(self) -> int:
        """Start, then block until SIGTERM/SIGINT (graceful stop) and return an exit status.

        Starting is tried a few times: a broker may refuse a declare while it is still busy
        creating the same replicated queue for another worker.

        Raises:
            BrokerUnavailable: starting failed, or the broker connection was lost for good.
        """
        for attempt in range(START_ATTEMPTS):
            try:
                self.start()
                break
            except BrokerUnavailable as exc:
                if attempt == START_ATTEMPTS - 1:
                    raise
                log.warning("starting failed (%s); trying again", exc)
                self._consumer_tags.clear()
                time.sleep(1.0 + attempt)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stopping:  # second signal: stop at once; unacked tasks are redelivered
                os._exit(1)
            grace = self.config.shutdown_grace
            threading.Thread(target=self.stop, args=(grace,), name="taskell-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not self._stopped.wait(0.5):
            pass
        if self._lost is not None:
            raise BrokerUnavailable(f"worker {self.name} lost its broker connection: {self._lost}")
        return 0

    def _check_leases(self) -> None:
        """Lease every task that has run ``lease_after`` seconds (see ``_lease``); runs on the
        transport's thread every ``LEASE_CHECK_INTERVAL`` seconds, where tasks settle too, so a
        task is either leased before its final reply settles or not at all."""
        if self._stopped.is_set():
            return
        started_before = time.time() - self.config.lease_after
        for running in list(self._running.values()):
            if running.lease is None and running.started <= started_before:
                running.lease = Lease(self._transport, self.config, running.delivery)
                running.lease.start()
        self._transport.call_later(LEASE_CHECK_INTERVAL, self._check_leases)

    def _on_lost(self, error: BaseException) -> None:
        log.error("worker %s lost its broker connection: %s", self.name, error)
        self._lost = error
        self._stopping = True
        self._stopped.set()

    # Deliveries (I/O thread) and their execution (pool threads)

    def _on_delivery(self, delivery: Delivery) -> None:
        assert self._executor is not None
        if not self._stopping:
            try:
                self._executor.submit(self._execute, delivery)
                return
            except RuntimeError:  # the pool shut down just now: the worker is stopping
                pass
        # Prefetched deliveries keep arriving until the broker has processed the cancel.
        self._transport.reject(delivery.tag, requeue=True)

    def _execute(self, delivery: Delivery) -> None:
        try:
            self._execute_unguarded(delivery)
        except Exception as exc:
            # Never lose a task to a bug here, and never loop on it: requeue it once, then
            # dead-letter it with the reason.
            log.exception("internal error on delivery %s", delivery.message.message_id)
            if delivery.redelivered:
                self._dead_letter(delivery, f"internal error: {type(exc).__name__}: {exc}")
            else:
                self._transport.reject(delivery.tag, requeue=True)

    def _execute_unguarded(self, delivery: Delivery) -> None:
        message = delivery.message
        task_id = message.message_id or ""
        if self._stopping:
            self._transport.reject(delivery.tag, requeue=True)
            return
        binding = self.registry.get(message.type or "")
        if binding is None:
            self._dead_letter(delivery, f"unknown task type {message.type!r}")
            return
        spec = binding.spec
        if len(message.body) > self.config.max_payload_bytes:
            self._dead_letter(
                delivery, f"{spec.name}: payload of {len(message.body)} bytes over max_payload_bytes"
            )
            return
        if not task_id:
            self._dead_letter(delivery, f"{spec.name}: message has no message_id (task id)")
            return
        if task_id in self._aborted:
            self._reply_final(
                delivery, _wire.ABORTED, _wire.error_body("taskell.TaskAborted", "aborted before it started")
            )
            return
        if self._poisoned(delivery, spec.name):
            return
        try:
            args = spec.args.model_validate_json(message.body)
        except ValidationError as exc:
            self._dead_letter(delivery, f"{spec.name}: args do not validate: {_wire.describe(exc)}")
            return
        self._check_fingerprint(spec.name, spec.fingerprint, message)

        child = self._child() if self.config.pool == "process" else None
        progress = Progress(self._transport, binding, task_id, message.reply_to, encoded=child is not None)
        ctx: Context[Any] = Context(
            task_id,
            progress,
            redelivered=delivery.redelivered or _wire.DELIVERIES_HEADER in message.headers,
            logger=logging.getLogger(f"taskell.task.{spec.name}"),
        )
        running = Running(binding, ctx, progress, child, delivery)
        self._running[task_id] = running
        if task_id in self._aborted:  # an abort that came between the check above and now
            running.ctx._aborted.set()
        try:
            if child is None:
                kind, body = self._run_handler(running, args)
            else:
                kind, body = self._run_in_child(running, child, delivery)
        finally:
            del self._running[task_id]
        if kind == _wire.ABORTED and self._requeue_aborted:  # stopped by a graceful stop's end
            self._transport.reject(delivery.tag, requeue=True)
            return
        self._remember(self._finished, task_id, _REMEMBERED_FINISHED)
        self._reply_final(delivery, kind, body, progress.flush(), running)

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
            return _wire.ABORTED, _wire.error_body("taskell.TaskAborted", "aborted while running")
        except Exception as exc:
            tb = traceback.format_exc()
            return _wire.FAILED, _wire.error_body(_wire.type_name(type(exc)), str(exc), tb)
        return _wire.encode_result(spec, value)

    def _child(self) -> Child:
        # One child process per pool thread, replaced when an abort (or a crash) ended it.
        child: Child | None = getattr(self._local, "child", None)
        if child is None or not child.alive:
            if child is not None:
                child.close()  # reap it and release its pipe
                self._children.remove(child)
            child = self._local.child = Child(self.registry)
            self._children.append(child)
        return child

    def _run_in_child(self, running: Running, child: Child, delivery: Delivery) -> tuple[str, bytes]:
        message = delivery.message
        spec = running.binding.spec
        if running.ctx.aborted:
            return _wire.ABORTED, _wire.error_body("taskell.TaskAborted", "aborted before it started")
        try:
            return child.run(
                spec.name, running.ctx.task_id, message.body, delivery.redelivered, running.progress.report
            )
        except ChildDied as exc:
            if running.ctx.aborted:
                return _wire.ABORTED, _wire.error_body(
                    "taskell.TaskAborted", "aborted while running (process killed)"
                )
            return _wire.FAILED, _wire.error_body("taskell.WorkerCrashed", str(exc))

    def _reply_final(
        self,
        delivery: Delivery,
        kind: str,
        body: bytes,
        before: Sequence[Future[None]] = (),
        running: Running | None = None,
    ) -> None:
        message = delivery.message
        futures = list(before)
        if message.reply_to:
            reply = _wire.reply(kind, message.message_id or "", body)
            futures.append(self._transport.publish("", message.reply_to, reply, mandatory=False))
        self._ack_when_confirmed(delivery, futures, (kind, body), running)

    def _dead_letter(self, delivery: Delivery, reason: str) -> None:
        log.warning("dead-lettering message %s: %s", delivery.message.message_id, reason)
        message = delivery.message
        dead = Message(
            body=message.body,
            type=message.type,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            content_type=message.content_type,
            persistent=True,
            headers={**message.headers, _wire.REASON_HEADER: reason, "taskell-queue": delivery.queue},
        )
        futures = [self._transport.publish("", self.config.dead_letter_queue, dead, mandatory=True)]
        if message.reply_to and message.message_id:
            rejected = _wire.reply(
                _wire.REJECTED, message.message_id, _wire.error_body("taskell.PayloadError", reason)
            )
            futures.append(self._transport.publish("", message.reply_to, rejected, mandatory=False))
        self._ack_when_confirmed(
            delivery, futures, (_wire.REJECTED, _wire.error_body("taskell.PayloadError", reason))
        )

    def _ack_when_confirmed(
        self,
        delivery: Delivery,
        futures: list[Future[None]],
        outcome: tuple[str, bytes],
        running: Running | None = None,
    ) -> None:
        """Once the replies are confirmed: publish the outcome event for joiners waiting on this
        task, then acknowledge it (on the same channel, so the event is routed first). Publishing
        the event only after the reply is confirmed is what lets a client close safely: see
        docs/dependencies.md."""

        def settle() -> None:  # on the transport's thread, where leases start too
            self._publish_outcome(delivery, outcome)
            lease = None if running is None else running.lease
            if lease is None or lease.finish():
                self._transport.ack(delivery.tag)

        if not futures:
            self._transport.call_soon(settle)
            return
        remaining = [len(futures)]
        lock = threading.Lock()
        with self._settling:
            self._settling_count += 1

        def on_done(future: Future[None]) -> None:
            error = future.exception()
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if error is not None:
                # Not acknowledged: the broker redelivers the task after the connection drops.
                log.error("reply for %s not confirmed: %s", delivery.message.message_id, error)
            elif last:
                settle()
            if last:
                with self._settling:
                    self._settling_count -= 1
                    self._settling.notify_all()

        for future in futures:
            future.add_done_callback(on_done)

    def _publish_outcome(self, delivery: Delivery, outcome: tuple[str, bytes]) -> None:
        message = delivery.message
        # Only a task with a handle can be a dependency; fire-and-forget ones have none.
        if message.message_id and message.reply_to:
            event = _wire.outcome(message.message_id, message.type or "", *outcome)
            self._transport.publish(_wire.OUTCOMES_EXCHANGE, message.message_id, event, mandatory=False)

    def _poisoned(self, delivery: Delivery, name: str) -> bool:
        """Enforce ``delivery_limit``: a task whose worker died on it that many times is
        dead-lettered instead of started again. True if the delivery was taken care of.

        Quorum queues count deliveries themselves (``x-delivery-count``). A classic queue does
        not, so a redelivered task is first republished with the count in a header (and the
        redelivery acked right behind it); the copy is what runs.
        """
        message = delivery.message
        limit = self.config.delivery_limit
        count = message.headers.get("x-delivery-count")
        if count is None:
            count = message.headers.get(_wire.DELIVERIES_HEADER, 0)
            if delivery.redelivered:
                count = int(count) + 1
                if count < limit:
                    copy = dataclasses.replace(
                        message, headers={**message.headers, _wire.DELIVERIES_HEADER: count}
                    )
                    # Ack right behind the copy on the same channel, not after its confirm: the
                    # broker handles both in order, so the copy cannot run (and kill this worker
                    # again) while the original is still unacknowledged.
                    self._transport.publish("", delivery.queue, copy, mandatory=True)
                    self._transport.ack(delivery.tag)
                    return True
        if int(count) < limit:
            return False
        self._dead_letter(
            delivery,
            f"{name}: delivered {int(count) + 1} times, over delivery_limit ({limit}): its worker died on it each time",
        )
        return True

    def _check_fingerprint(self, name: str, expected: str, message: Message) -> None:
        got = message.headers.get(_wire.FINGERPRINT_HEADER)
        if got != expected and (name, str(got)) not in self._fingerprint_warned:
            self._fingerprint_warned.add((name, str(got)))
            log.warning(
                "%s: fingerprint %s differs from this worker's %s (schema versions differ)",
                name,
                got,
                expected,
            )

    # Control messages: abort and inspect (I/O thread)

    def _on_control(self, delivery: Delivery) -> None:
        message = delivery.message
        try:
            body = json.loads(message.body)
        except ValueError:
            log.warning("ignoring malformed control message %r", message.body[:100])
            return
        if message.type == "abort":
            answer = self._abort(str(body.get("task_id")))
        elif message.type == "inspect":
            answer = self.status()
        else:
            return
        if message.reply_to:
            reply = Message(
                body=json.dumps(answer).encode(),
                type=f"{message.type}-reply",
                correlation_id=message.message_id,
                content_type=_wire.JSON,
            )
            self._control.publish("", message.reply_to, reply, mandatory=False)

    def _on_recorded_abort(self, task_id: str) -> None:
        """An abort record from the broker (see ``_abort_log``): the task never starts here.
        Stopping it where it runs is left to the live abort, which answers its sender."""
        self._remember(self._aborted, task_id, _REMEMBERED_ABORTED)

    def _abort(self, task_id: str) -> dict[str, Any]:
        running = self._running.get(task_id)
        if running is not None:
            running.abort()
            state = "aborting"
        elif self._joiner is not None and self._joiner.abort(task_id):
            state = "aborting"
        elif task_id in self._finished:
            state = "finished"
        else:
            state = "not running here"
        self._remember(self._aborted, task_id, _REMEMBERED_ABORTED)
        log.info("abort %s: %s", task_id, state)
        return {"worker": self.name, "task_id": task_id, "state": state}

    def status(self) -> dict[str, Any]:
        """What ``taskell inspect`` shows: identity, queues and running tasks with progress."""
        now = time.time()
        running = []
        for task_id, task in list(self._running.items()):
            latest = task.progress.latest
            running.append(
                {
                    "task_id": task_id,
                    "task": task.binding.spec.name,
                    "seconds": round(now - task.started, 3),
                    "progress": None if latest is NOTHING else json_form(task, latest),
                }
            )
        return {
            "worker": self.name,
            "queues": self.queues,
            "parallelism": self.parallelism,
            "running": running,
        }

    @staticmethod
    def _remember(ids: collections.OrderedDict[str, None], task_id: str, limit: int) -> None:
        ids[task_id] = None
        if len(ids) > limit:
            ids.popitem(last=False)
