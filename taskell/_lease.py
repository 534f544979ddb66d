"""Leases: how a task may run longer than RabbitMQ's consumer acknowledgement timeout.

The broker closes a channel holding a delivery unacknowledged longer than ``consumer_timeout``
(30 minutes by default), which would kill long tasks and redeliver them forever. So once a task
has run ``lease_after`` seconds, its worker puts a copy of the task message in a lease queue of
its own and acknowledges the original. The copy has a TTL of ``lease_ttl`` and is dead-lettered
back to the task's queue when it expires; the worker keeps it from expiring by placing a fresh
copy every ``lease_ttl / 3`` in the other of two lease queues (A, B) and purging the previous
one, so a copy exists at every moment. When the task ends, the worker deletes both queues (a
deleted queue drops its messages: nothing comes back). If the worker dies, the last copy expires
and the task is delivered again, counted as a redelivery: at-least-once, as without a lease.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from concurrent.futures import Future

from . import _wire
from .config import Config
from .transport import Delivery, Transport

__all__ = ["Lease"]

log = logging.getLogger("taskell.worker")


class Lease:
    """The lease of one running task; every method runs on the transport's thread."""

    def __init__(self, transport: Transport, config: Config, delivery: Delivery) -> None:
        self._transport = transport
        self._delivery = delivery
        self._ttl = config.lease_ttl
        task_id = delivery.message.message_id or ""
        self._queues = (f"taskell.lease.{task_id}.a", f"taskell.lease.{task_id}.b")
        ttl_ms = int(config.lease_ttl * 1000)
        self._arguments = {
            **_wire.dead_letter_queue_arguments(config),
            "x-message-ttl": ttl_ms,
            "x-expires": 3 * ttl_ms,  # a lease queue outlives its copy's TTL (renewals re-declare it)
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": delivery.queue,
        }
        message = delivery.message
        count = int(message.headers.get(_wire.DELIVERIES_HEADER, 0)) + 1
        self._copy = dataclasses.replace(
            message, persistent=True, headers={**message.headers, _wire.DELIVERIES_HEADER: count}
        )
        self._current: int | None = None  # index of the queue holding the live copy
        self.taken_over = False  # the original delivery was acknowledged: the lease holds the task
        self._done = False

    def start(self) -> None:
        """Called ``lease_after`` seconds into the task."""
        if not self._done:
            log.info("task %s runs long: leasing it", self._delivery.message.message_id)
            self._place(0)

    def finish(self) -> bool:
        """The task ended (its final reply is confirmed). True if the original delivery still
        has to be acknowledged by the caller; the lease queues are dropped either way."""
        self._done = True
        if self._current is not None:
            self._drop()
        return not self.taken_over

    def _place(self, index: int) -> None:
        queue = self._queues[index]
        self._transport.declare_queue(queue, durable=True, arguments=self._arguments)
        placed = self._transport.publish("", queue, self._copy, mandatory=True)
        placed.add_done_callback(lambda f: self._transport.call_soon(lambda: self._placed(index, f)))

    def _placed(self, index: int, placed: Future[None]) -> None:
        if placed.exception() is not None:
            log.error("lease of %s not placed: %s", self._delivery.message.message_id, placed.exception())
            if not self._done:
                self._later(lambda: self._place(index))
            return
        previous, self._current = self._current, index
        if self._done:  # the task ended meanwhile (and acknowledged its delivery itself)
            self._drop()
            return
        if not self.taken_over:
            self._transport.ack(self._delivery.tag)
            self.taken_over = True
        elif previous is not None and previous != index:
            self._transport.purge(self._queues[previous])
        self._later(lambda: self._place(1 - index))

    def _later(self, action: Callable[[], None]) -> None:
        self._transport.call_later(self._ttl / 3, lambda: None if self._done else action())

    def _drop(self) -> None:
        for queue in self._queues:
            self._transport.delete_queue(queue)
