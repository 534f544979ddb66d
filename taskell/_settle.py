"""Settling: how a delivered task leaves the worker, in the one order that loses nothing.

A task that ended (or never could run) is settled in this order: its final reply (or its
dead-letter copy) is published and CONFIRMED by the broker; then the outcome event for joiners
waiting on it is published; then the delivery is acknowledged, on the same channel, so the
event is routed first. A worker that dies before the ack leaves the task to be redelivered.
Publishing the event only after the reply is confirmed is what lets a client close safely: see
docs/dependencies.md.

A failed attempt that is retried (``_retry``) is settled in the same order, with the delayed
copy of the task message and the ``retrying`` notice in place of the final reply, and no
outcome event: the task has not ended, and its dependents wait for its last attempt.

A task that runs long hands its delivery over to a lease (``_lease``); settling then finishes
the lease instead of acknowledging a delivery the lease already acknowledged. Leases start and
finish on the transport's thread, so a task is either leased before it settles or not at all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future

from . import _wire
from ._lease import Lease
from ._retry import Retry
from ._running import Running
from .config import Config
from .transport import Delivery, Message, Transport

__all__ = ["LEASE_CHECK_INTERVAL", "Settler"]

log = logging.getLogger("taskell.worker")

LEASE_CHECK_INTERVAL = 1.0  # seconds between two looks for tasks running past lease_after


class Settler:
    """Settles the deliveries of one worker's task transport; callable from any thread."""

    def __init__(self, transport: Transport, config: Config) -> None:
        self._transport = transport
        self._config = config
        self._settling = threading.Condition()
        self._settling_count = 0  # tasks whose replies are published but not yet confirmed

    def finish(self, delivery: Delivery, kind: str, body: bytes, running: Running | None = None) -> None:
        """End the task with final reply ``kind``/``body`` (after its last progress value, and
        its lease if it has one)."""
        message = delivery.message
        futures = [] if running is None else running.progress.flush()
        if message.reply_to:
            reply = _wire.reply(kind, message.message_id or "", body)
            futures.append(self._transport.publish("", message.reply_to, reply, mandatory=False))
        self._ack_when_confirmed(delivery, futures, (kind, body), running)

    def retry(self, delivery: Delivery, retry: Retry, running: Running | None = None) -> None:
        """Run the task again as the next attempt ``retry.delay`` seconds from now: the broker
        holds a copy until then; the client is told (after the attempt's last progress value)."""
        message = delivery.message
        log.info(
            "task %s attempt %d failed (%s); retrying in %g s",
            message.message_id,
            retry.attempt,
            retry.error_type,
            retry.delay,
        )
        futures = [] if running is None else running.progress.flush()
        copy = _wire.retry_copy(message, retry.attempt + 1)
        futures.append(self._transport.publish_delayed(delivery.queue, copy, retry.delay))
        if message.reply_to:
            body = _wire.retrying_body(retry.attempt, retry.delay, retry.error_type, retry.message)
            notice = _wire.reply(_wire.RETRYING, message.message_id or "", body)
            futures.append(self._transport.publish("", message.reply_to, notice, mandatory=False))
        self._ack_when_confirmed(delivery, futures, None, running)

    def hold(self, delivery: Delivery, delay: float) -> None:
        """Give a delayed task the broker delivered early back to the delay levels for the
        ``delay`` seconds it still has to wait; acknowledged once the broker holds it."""
        log.warning(
            "task %s delivered %.3f s before it is due; holding it again", delivery.message.message_id, delay
        )
        future = self._transport.publish_delayed(delivery.queue, delivery.message, delay)
        self._ack_when_confirmed(delivery, [future], None)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Move the task to the dead-letter queue and tell its client it was rejected."""
        log.warning("dead-lettering message %s: %s", delivery.message.message_id, reason)
        message = delivery.message
        dead = _wire.dead_letter(message, delivery.queue, reason)
        futures = [self._transport.publish("", self._config.dead_letter_queue, dead, mandatory=True)]
        body = _wire.error_body(_wire.PAYLOAD_ERROR, reason)
        if message.reply_to and message.message_id:
            reply = _wire.reply(_wire.REJECTED, message.message_id, body)
            futures.append(self._transport.publish("", message.reply_to, reply, mandatory=False))
        self._ack_when_confirmed(delivery, futures, (_wire.REJECTED, body))

    def replace(self, delivery: Delivery, copy: Message) -> None:
        """Put ``copy`` in the delivery's queue in its place."""
        # Ack right behind the copy on the same channel, not after its confirm: the broker
        # handles both in order, so the copy cannot run (and kill this worker again) while the
        # original is still unacknowledged.
        self._transport.publish("", delivery.queue, copy, mandatory=True)
        self._transport.ack(delivery.tag)

    def requeue(self, delivery: Delivery) -> None:
        """Give the task back to its queue, for this or another worker to run."""
        self._transport.reject(delivery.tag, requeue=True)

    def wait(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every published reply is confirmed and its
        task acknowledged, so a graceful stop does not hand them to another worker again."""
        with self._settling:
            self._settling.wait_for(lambda: self._settling_count == 0, timeout=timeout)

    def watch_leases(self, running: Mapping[str, Running], stopped: threading.Event) -> None:
        """Lease every task that has run ``lease_after`` seconds (see ``_lease``); looks every
        ``LEASE_CHECK_INTERVAL`` seconds on the transport's thread until ``stopped`` is set."""

        def check() -> None:
            if stopped.is_set():
                return
            started_before = time.time() - self._config.lease_after
            for task in list(running.values()):
                if task.lease is None and task.started <= started_before:
                    task.lease = Lease(self._transport, self._config, task.delivery)
                    task.lease.start()
            self._transport.call_later(LEASE_CHECK_INTERVAL, check)

        self._transport.call_soon(check)

    def _ack_when_confirmed(
        self,
        delivery: Delivery,
        futures: list[Future[None]],
        outcome: tuple[str, bytes] | None,
        running: Running | None = None,
    ) -> None:
        """Once ``futures`` are confirmed: publish the outcome event (if the task ended), then
        acknowledge (or finish the task's lease)."""

        def settle() -> None:  # on the transport's thread, where leases start too
            if outcome is not None:
                self._publish_outcome(delivery, outcome)
            lease = None if running is None else running.lease
            if lease is None or lease.finish():
                self._transport.ack(delivery.tag)

        if not futures:
            self._transport.call_soon(settle)
            return
        remaining = [len(futures)]
        failed = [False]
        lock = threading.Lock()
        with self._settling:
            self._settling_count += 1

        def on_done(future: Future[None]) -> None:
            error = future.exception()
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
                failed[0] = failed[0] or error is not None
                settle_now = last and not failed[0]
            if error is not None:
                # Not acknowledged, whichever publish failed: the broker redelivers the task
                # after the connection drops.
                log.error("reply for %s not confirmed: %s", delivery.message.message_id, error)
            if settle_now:
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
