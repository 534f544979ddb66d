"""The broker seam: what the client and the worker need from a broker connection.

Two implementations: ``amqp.AmqpTransport`` (pika, RabbitMQ) and ``memory.MemoryTransport``
(an in-process broker for the demo and for users' unit tests). Each owns one thread on which
every callback runs; every public method is thread-safe (it hands work to that thread), because
pika's connection objects are not.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BCC_HEADER", "Delivery", "Message", "OnMessage", "Transport"]

# The routing keys a message also goes to, besides its own (RabbitMQ's sender-selected
# distribution): the broker routes the message with each, then removes the header.
BCC_HEADER = "BCC"


@dataclass(slots=True)
class Message:
    """The AMQP properties taskell uses, plus the body."""

    body: bytes
    type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    content_type: str | None = None
    persistent: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None  # 0-9; a queue orders by it only if declared with x-max-priority


@dataclass(slots=True)
class Delivery:
    """A message handed to a consumer; ``tag`` is what ``ack``/``reject`` take."""

    message: Message
    tag: int
    redelivered: bool
    queue: str


OnMessage = Callable[[Delivery], None]


class Transport(ABC):
    """One broker connection with one channel in publisher-confirm mode."""

    @abstractmethod
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the transport's thread (in submission order)."""

    @abstractmethod
    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the transport's thread after ``delay`` seconds (call from any thread)."""

    def run_loop_until(
        self, done: Callable[[], bool], timeout: float | None, *, look_every: float = 0.05
    ) -> bool:
        """Run the transport's I/O on the calling thread until ``done()`` is true or ``timeout``
        seconds passed, so that what the thread waits for wakes it directly; False (at once)
        where that is not possible, and the caller waits as usual. ``done()`` is checked after
        the I/O it waits for, and at least every ``look_every`` seconds, for another thread
        may make it true: a thread that does so and cannot wait that long calls ``wake``. The
        transport's thread takes its I/O back on its own a few milliseconds later, unless the
        loop is run again meanwhile: see ``resume_io``."""
        return False

    def wake(self) -> None:  # noqa: B027 - optional hook
        """Make a thread running ``run_loop_until`` look at its ``done()`` now."""

    def resume_io(self) -> None:  # noqa: B027 - optional hook
        """The thread that last ran ``run_loop_until`` will not run it again soon (it has work
        queued): let the transport's own thread take its I/O back at once."""

    @abstractmethod
    def publish(
        self, exchange: str, routing_key: str, message: Message, *, mandatory: bool, replay: bool = True
    ) -> Future[None]:
        """Publish; the future resolves when the broker confirms, and fails if it refuses,
        returns (unroutable with ``mandatory``) or the connection is lost. A publish not
        confirmed when the connection drops is published again once reconnected, unless
        ``replay`` is False: then it fails, and it is never sent on a connection other than
        the one up when ``publish`` was called (the scheduler: nothing of a leadership that
        ended may reach the broker later)."""

    @abstractmethod
    def publish_delayed(self, queue: str, message: Message, delay: float) -> Future[None]:
        """Publish ``message`` so that it reaches task queue ``queue`` (through the default
        exchange) ``delay`` seconds from now, never earlier; ``delay`` <= 0 publishes at once
        (``mandatory``). The future resolves once the broker holds the message, which it then
        keeps across restarts; it fails like ``publish``'s.

        Raises:
            ValueError: a delay longer than the broker can hold (RabbitMQ: about 8.7 years),
                or a queue name it cannot route a delayed message to.
        """

    @abstractmethod
    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        """Declare a queue (``name`` "" asks the broker for one) with broker-specific
        ``arguments`` (``x-queue-type``, ...); resolves to its name."""

    @abstractmethod
    def declare_exchange(
        self, name: str, kind: str, *, arguments: Mapping[str, Any] | None = None
    ) -> Future[None]:
        """Declare a durable ``fanout``, ``direct`` or ``topic`` exchange, with broker-specific
        ``arguments`` (``alternate-exchange``)."""

    @abstractmethod
    def bind(self, queue: str, exchange: str, routing_key: str = "") -> Future[None]:
        """Bind ``queue`` to ``exchange`` (the key is ignored by fanout exchanges)."""

    @abstractmethod
    def bind_exchange(self, destination: str, source: str, routing_key: str = "") -> Future[None]:
        """Bind exchange ``destination`` to exchange ``source``: what ``source`` routes with a
        matching key also goes through ``destination``."""

    @abstractmethod
    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        """Remove a binding (fire and forget)."""

    @abstractmethod
    def purge(self, queue: str) -> None:
        """Drop every ready message of ``queue`` (fire and forget)."""

    @abstractmethod
    def delete_queue(self, queue: str) -> None:
        """Delete ``queue`` and what it holds (fire and forget); it is no longer re-declared."""

    @property
    def supports_leases(self) -> bool:
        """Message TTLs and dead-lettering, which leases rely on (RabbitMQ: yes)."""
        return False

    @abstractmethod
    def set_prefetch(self, count: int, *, per_consumer: bool = False) -> Future[None]:
        """Limit unacknowledged deliveries on this connection's channel (or, with
        ``per_consumer``, for each consumer started after this call)."""

    @abstractmethod
    def consume(
        self,
        queue: str,
        on_message: OnMessage,
        *,
        auto_ack: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        """Start consuming; ``on_message`` runs on the transport's thread. ``arguments`` are the
        consumer's (``x-stream-offset`` where a stream is read from), used again on a reconnect."""

    @abstractmethod
    def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer (fire and forget)."""

    @abstractmethod
    def ack(self, tag: int) -> None:
        """Acknowledge one delivery (fire and forget)."""

    @abstractmethod
    def reject(self, tag: int, *, requeue: bool) -> None:
        """Reject one delivery, requeueing it or dropping it (fire and forget)."""

    @abstractmethod
    def add_on_lost(self, callback: Callable[[BaseException], None]) -> None:
        """Call ``callback`` (on the transport's thread) if the connection is lost."""

    def add_on_reconnect(self, callback: Callable[[], None]) -> None:  # noqa: B027 - optional hook
        """Call ``callback`` (on the transport's thread) after the connection was re-established,
        before consumers are restarted; deliveries of the old connection are void by then.
        A transport that never reconnects (the in-memory broker) keeps this no-op."""

    @abstractmethod
    def close(self) -> None:
        """Close the channel then the connection, and join the thread. Idempotent."""

    @property
    @abstractmethod
    def is_open(self) -> bool:
        """False once closed or lost."""
