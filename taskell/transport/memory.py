"""An in-process broker with RabbitMQ's semantics, selected by a ``memory://NAME`` URL.

It serves the demo and users' unit tests of their handlers; integration tests use RabbitMQ.
Same rules as the real path: durable named queues, a default exchange routing by queue name,
fanout exchanges, ``mandatory`` publishes that fail when unroutable, per-connection prefetch,
deliveries held until acknowledged and requeued (``redelivered``) when their connection closes,
exclusive queues deleted with their connection. Callbacks run on each connection's own thread.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import BrokerUnavailable
from .base import Delivery, Message, OnMessage, Transport

__all__ = ["MemoryBroker", "MemoryTransport"]


@dataclass
class _Queue:
    name: str
    owner: MemoryTransport | None  # set for exclusive queues
    auto_delete: bool
    single_active: bool  # x-single-active-consumer: only the first consumer gets messages
    messages: collections.deque[tuple[Message, bool]] = field(default_factory=collections.deque)
    consumers: list[_Consumer] = field(default_factory=list)
    turn: int = 0  # round-robin position among consumers


@dataclass(eq=False)
class _Consumer:
    transport: MemoryTransport
    tag: str
    queue: str
    on_message: OnMessage
    auto_ack: bool


class MemoryBroker:
    """One in-process broker; ``MemoryBroker.named(name)`` returns a shared instance."""

    _instances: dict[str, MemoryBroker] = {}
    _instances_lock = threading.Lock()

    @classmethod
    def named(cls, name: str) -> MemoryBroker:
        with cls._instances_lock:
            return cls._instances.setdefault(name, cls())

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._queues: dict[str, _Queue] = {}
        # exchange name -> (kind, bindings as (queue, routing key)); "" is the default exchange
        self._exchanges: dict[str, tuple[str, set[tuple[str, str]]]] = {}
        self._names = itertools.count(1)

    def queue_depth(self, name: str) -> int:
        """Messages ready (not delivered) in queue ``name``; 0 if it does not exist."""
        with self._lock:
            q = self._queues.get(name)
            return len(q.messages) if q else 0

    def declare_queue(
        self, owner: MemoryTransport, name: str, exclusive: bool, auto_delete: bool, single_active: bool
    ) -> str:
        with self._lock:
            name = name or f"amq.gen-{next(self._names)}"
            existing = self._queues.get(name)
            if existing is None:
                self._queues[name] = _Queue(name, owner if exclusive else None, auto_delete, single_active)
            elif existing.owner is not None and existing.owner is not owner:
                raise BrokerUnavailable(
                    f"RESOURCE_LOCKED - queue {name!r} is exclusive to another connection"
                )
            return name

    def declare_exchange(self, name: str, kind: str) -> None:
        with self._lock:
            self._exchanges.setdefault(name, (kind, set()))

    def bind(self, queue_name: str, exchange: str, routing_key: str, add: bool = True) -> None:
        with self._lock:
            if exchange not in self._exchanges:
                raise BrokerUnavailable(f"NOT_FOUND - no exchange {exchange!r}")
            bindings = self._exchanges[exchange][1]
            if add:
                bindings.add((queue_name, routing_key))
            else:
                bindings.discard((queue_name, routing_key))

    def publish(self, exchange: str, routing_key: str, message: Message, mandatory: bool) -> None:
        with self._lock:
            if exchange == "":
                targets = [routing_key] if routing_key in self._queues else []
            elif exchange in self._exchanges:
                kind, bindings = self._exchanges[exchange]
                routed = {q for q, key in bindings if kind == "fanout" or key == routing_key}
                targets = sorted(q for q in routed if q in self._queues)
            else:
                raise BrokerUnavailable(f"NOT_FOUND - no exchange {exchange!r}")
            if not targets and mandatory:
                raise BrokerUnavailable(f"message {message.message_id} is unroutable (no such queue)")
            for name in targets:
                self._queues[name].messages.append((message, False))
                self._dispatch(self._queues[name])

    def purge(self, name: str, delete: bool = False) -> None:
        with self._lock:
            q = self._queues.get(name)
            if q is not None:
                q.messages.clear()
                if delete:
                    del self._queues[name]

    def consume(self, consumer: _Consumer) -> None:
        with self._lock:
            q = self._queues.get(consumer.queue)
            if q is None:
                raise BrokerUnavailable(f"NOT_FOUND - no queue {consumer.queue!r}")
            q.consumers.append(consumer)
            self._dispatch(q)

    def cancel(self, transport: MemoryTransport, tag: str) -> None:
        with self._lock:
            for q in self._queues.values():
                q.consumers = [c for c in q.consumers if not (c.transport is transport and c.tag == tag)]

    def settle(self, transport: MemoryTransport, tag: int, requeue: bool) -> None:
        with self._lock:
            entry = transport.unacked.pop(tag, None)
            if entry is None:
                return
            queue_name, message = entry
            q = self._queues.get(queue_name)
            if q is not None:
                if requeue:
                    q.messages.appendleft((message, True))
                self._dispatch(q)
            self._dispatch_all_for(transport)

    def disconnect(self, transport: MemoryTransport) -> None:
        """Requeue what the connection held unacknowledged, drop its consumers and queues."""
        with self._lock:
            for queue_name, message in reversed(list(transport.unacked.values())):
                q = self._queues.get(queue_name)
                if q is not None:
                    q.messages.appendleft((message, True))
            transport.unacked.clear()
            for q in list(self._queues.values()):
                q.consumers = [c for c in q.consumers if c.transport is not transport]
                if q.owner is transport or (q.auto_delete and not q.consumers):
                    del self._queues[q.name]
                    for _, bindings in self._exchanges.values():
                        bindings.difference_update({b for b in bindings if b[0] == q.name})
            for q in self._queues.values():
                self._dispatch(q)

    def _dispatch_all_for(self, transport: MemoryTransport) -> None:
        for q in self._queues.values():
            if any(c.transport is transport for c in q.consumers):
                self._dispatch(q)

    def _dispatch(self, q: _Queue) -> None:
        # Hand ready messages to consumers with free prefetch slots, round robin.
        while q.messages and q.consumers:
            consumers = q.consumers[:1] if q.single_active else q.consumers
            n = len(consumers)
            for step in range(n):
                consumer = consumers[(q.turn + step) % n]
                if consumer.auto_ack or consumer.transport.has_capacity():
                    q.turn = (q.turn + step + 1) % n
                    break
            else:
                return
            message, redelivered = q.messages.popleft()
            consumer.transport.deliver(consumer, q.name, message, redelivered)


class MemoryTransport(Transport):
    """A connection to a ``MemoryBroker``, with its own callback thread."""

    def __init__(self, broker: MemoryBroker, *, name: str = "taskell") -> None:
        self._broker = broker
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._tags = itertools.count(1)
        self._consumer_tags = itertools.count(1)
        self._prefetch = 0
        self._closed = False
        self._on_lost: list[Callable[[BaseException], None]] = []
        self.unacked: dict[int, tuple[str, Message]] = {}
        self._thread = threading.Thread(target=self._run, name=f"{name}-memory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (fn := self._calls.get()) is not None:
            fn()

    def has_capacity(self) -> bool:
        return not self._closed and (self._prefetch == 0 or len(self.unacked) < self._prefetch)

    def deliver(self, consumer: _Consumer, queue_name: str, message: Message, redelivered: bool) -> None:
        """Called by the broker, under its lock."""
        tag = next(self._tags)
        if not consumer.auto_ack:
            self.unacked[tag] = (queue_name, message)
        delivery = Delivery(message, tag, redelivered, queue_name)
        self.call_soon(lambda: consumer.on_message(delivery))

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._calls.put(fn)

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        timer = threading.Timer(delay, self.call_soon, args=(fn,))
        timer.daemon = True
        timer.start()

    def _now(self, action: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        if self._closed:
            future.set_exception(BrokerUnavailable("connection closed"))
            return future
        try:
            future.set_result(action())
        except BrokerUnavailable as exc:
            future.set_exception(exc)
        return future

    def publish(self, exchange: str, routing_key: str, message: Message, *, mandatory: bool) -> Future[None]:
        return self._now(lambda: self._broker.publish(exchange, routing_key, message, mandatory))

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        single_active = bool((arguments or {}).get("x-single-active-consumer"))
        return self._now(
            lambda: self._broker.declare_queue(self, name, exclusive, auto_delete, single_active)
        )

    def declare_exchange(self, name: str, kind: str) -> Future[None]:
        return self._now(lambda: self._broker.declare_exchange(name, kind))

    def bind(self, queue: str, exchange: str, routing_key: str = "") -> Future[None]:
        return self._now(lambda: self._broker.bind(queue, exchange, routing_key))

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        self._now(lambda: self._broker.bind(queue, exchange, routing_key, add=False))

    def purge(self, queue: str) -> None:
        self._now(lambda: self._broker.purge(queue))

    def delete_queue(self, queue: str) -> None:
        self._now(lambda: self._broker.purge(queue, delete=True))

    def set_prefetch(self, count: int, *, per_consumer: bool = False) -> Future[None]:
        def apply() -> None:
            self._prefetch = count

        return self._now(apply)

    def consume(self, queue: str, on_message: OnMessage, *, auto_ack: bool = False) -> Future[str]:
        tag = f"ctag-{next(self._consumer_tags)}"
        consumer = _Consumer(self, tag, queue, on_message, auto_ack)

        def start() -> str:
            self._broker.consume(consumer)
            return tag

        return self._now(start)

    def cancel(self, consumer_tag: str) -> None:
        self._broker.cancel(self, consumer_tag)

    def ack(self, tag: int) -> None:
        self._broker.settle(self, tag, requeue=False)

    def reject(self, tag: int, *, requeue: bool) -> None:
        self._broker.settle(self, tag, requeue=requeue)

    def add_on_lost(self, callback: Callable[[BaseException], None]) -> None:
        self._on_lost.append(callback)

    @property
    def is_open(self) -> bool:
        return not self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._broker.disconnect(self)
        self._calls.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(10)
