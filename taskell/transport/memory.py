"""An in-process broker with RabbitMQ's semantics, selected by a ``memory://NAME`` URL.

It serves the demo and users' unit tests of their handlers; integration tests use RabbitMQ.
Same rules as the real path: durable named queues, a default exchange routing by queue name,
fanout and direct exchanges (also bound to each other), the ``BCC`` header's extra routing
keys, ``mandatory`` publishes that fail when unroutable, delayed messages held until due (one
timer thread per broker), per-connection prefetch, deliveries held until acknowledged and
requeued (``redelivered``) when their connection closes, exclusive queues deleted with their
connection, and streams (``x-queue-type: stream``): an append-only log, kept ``x-max-age`` /
``x-max-length-bytes``, that every consumer reads from the ``x-stream-offset`` it gives
(``first``, ``last``, ``next``, a number or a ``datetime``). Callbacks run on each
connection's own thread.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, ClassVar

from ..errors import BrokerUnavailable
from . import delays
from .base import BCC_HEADER, Delivery, Message, OnMessage, Transport

__all__ = ["MemoryBroker", "MemoryTransport"]

log = logging.getLogger("taskell.memory")

_REDELIVER_AFTER = 1.0  # seconds before a due message whose queue is gone is tried again


@dataclass
class _Queue:
    name: str
    owner: MemoryTransport | None  # set for exclusive queues
    auto_delete: bool
    single_active: bool  # x-single-active-consumer: only the first consumer gets messages
    messages: collections.deque[tuple[Message, bool]] = field(default_factory=collections.deque)
    consumers: list[_Consumer] = field(default_factory=list)
    turn: int = 0  # round-robin position among consumers
    log: _Log | None = None  # set for streams


_AGE_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "D": 86400, "h": 3600, "m": 60, "s": 1}


@dataclass
class _Log:
    """A stream's retained messages, oldest first, each with its offset and when it came."""

    max_age: float | None
    max_bytes: int | None
    entries: collections.deque[tuple[int, float, Message]] = field(default_factory=collections.deque)
    next_offset: int = 0
    size: int = 0

    @classmethod
    def from_arguments(cls, name: str, arguments: Mapping[str, Any]) -> _Log:
        age = arguments.get("x-max-age")
        max_age = None
        if age is not None:
            number, unit = str(age)[:-1], str(age)[-1:]
            if not number.isdigit() or unit not in _AGE_UNITS:
                raise BrokerUnavailable(f"PRECONDITION_FAILED - invalid x-max-age {age!r} for queue {name!r}")
            max_age = float(int(number) * _AGE_UNITS[unit])
        max_bytes = arguments.get("x-max-length-bytes")
        return cls(max_age, None if max_bytes is None else int(max_bytes))

    def append(self, message: Message) -> None:
        self.entries.append((self.next_offset, time.time(), message))
        self.next_offset += 1
        self.size += len(message.body)
        self.trim()

    def trim(self) -> None:
        oldest = -1.0 if self.max_age is None else time.time() - self.max_age
        while self.entries and (
            self.entries[0][1] < oldest or (self.max_bytes is not None and self.size > self.max_bytes)
        ):
            self.size -= len(self.entries.popleft()[2].body)

    def since(self, offset: Any) -> list[Message]:
        """The retained messages a consumer attaching at ``offset`` reads first."""
        self.trim()
        if offset is None or offset == "next":
            return []
        if offset == "first":
            return [m for _, _, m in self.entries]
        if offset == "last":
            return [m for _, _, m in list(self.entries)[-1:]]
        if isinstance(offset, datetime):
            return [m for _, at, m in self.entries if at >= offset.timestamp()]
        if isinstance(offset, int):
            return [m for n, _, m in self.entries if n >= offset]
        raise BrokerUnavailable(f"PRECONDITION_FAILED - invalid x-stream-offset {offset!r}")


@dataclass(eq=False)
class _Consumer:
    transport: MemoryTransport
    tag: str
    queue: str
    on_message: OnMessage
    auto_ack: bool
    arguments: Mapping[str, Any] | None = None


class MemoryBroker:
    """One in-process broker; ``MemoryBroker.named(name)`` returns a shared instance."""

    _instances: ClassVar[dict[str, MemoryBroker]] = {}
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
        # exchange name -> bindings of other exchanges to it, as (destination, routing key)
        self._exchange_bindings: dict[str, set[tuple[str, str]]] = {}
        self._names = itertools.count(1)
        # Delayed messages as (due on the monotonic clock, sequence, queue, message), a heap
        # served by one timer thread, started with the first one.
        self._delayed: list[tuple[float, int, str, Message]] = []
        self._delayed_numbers = itertools.count()
        self._delayed_changed = threading.Condition(self._lock)
        self._timer: threading.Thread | None = None

    def queue_depth(self, name: str) -> int:
        """Messages ready (not delivered) in queue ``name``; 0 if it does not exist."""
        with self._lock:
            q = self._queues.get(name)
            return len(q.messages) if q else 0

    def declare_queue(
        self,
        owner: MemoryTransport,
        name: str,
        exclusive: bool,
        auto_delete: bool,
        arguments: Mapping[str, Any],
    ) -> str:
        with self._lock:
            name = name or f"amq.gen-{next(self._names)}"
            existing = self._queues.get(name)
            if existing is None:
                single_active = bool(arguments.get("x-single-active-consumer"))
                q = _Queue(name, owner if exclusive else None, auto_delete, single_active)
                if arguments.get("x-queue-type") == "stream":
                    q.log = _Log.from_arguments(name, arguments)
                self._queues[name] = q
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

    def bind_exchange(self, destination: str, source: str, routing_key: str) -> None:
        with self._lock:
            for name in (destination, source):
                if name not in self._exchanges:
                    raise BrokerUnavailable(f"NOT_FOUND - no exchange {name!r}")
            self._exchange_bindings.setdefault(source, set()).add((destination, routing_key))

    def _route(self, exchange: str, routing_key: str, seen: set[str]) -> set[str]:
        """The queues ``exchange`` routes ``routing_key`` to, through bound exchanges too."""
        kind, bindings = self._exchanges[exchange]
        seen.add(exchange)
        routed = {q for q, key in bindings if kind == "fanout" or key == routing_key}
        for destination, key in self._exchange_bindings.get(exchange, ()):
            if destination not in seen and (kind == "fanout" or key == routing_key):
                routed |= self._route(destination, routing_key, seen)
        return routed

    def publish(self, exchange: str, routing_key: str, message: Message, mandatory: bool) -> None:
        with self._lock:
            keys = [routing_key]
            if BCC_HEADER in message.headers:  # routed with these keys too, and not delivered
                keys += [str(key) for key in message.headers[BCC_HEADER]]
                headers = {k: v for k, v in message.headers.items() if k != BCC_HEADER}
                message = replace(message, headers=headers)
            if exchange == "":
                targets = sorted({key for key in keys if key in self._queues})
            elif exchange in self._exchanges:
                routed = set().union(*(self._route(exchange, key, set()) for key in keys))
                targets = sorted(q for q in routed if q in self._queues)
            else:
                raise BrokerUnavailable(f"NOT_FOUND - no exchange {exchange!r}")
            if not targets and mandatory:
                raise BrokerUnavailable(f"message {message.message_id} is unroutable (no such queue)")
            for name in targets:
                q = self._queues[name]
                if q.log is not None:  # every consumer of a stream reads every message
                    q.log.append(message)
                    for consumer in q.consumers:
                        consumer.transport.deliver(consumer, name, message, False, held=False)
                    continue
                q.messages.append((message, False))
                self._dispatch(q)

    def publish_delayed(self, queue_name: str, message: Message, delay: float) -> None:
        """Hold ``message`` until ``delay`` seconds from now, then put it in ``queue_name``."""
        with self._lock:
            if queue_name not in self._queues:
                raise BrokerUnavailable(f"message {message.message_id} is unroutable (no such queue)")
            if delay <= 0:
                self.publish("", queue_name, message, mandatory=True)
                return
            due = time.monotonic() + delay
            heapq.heappush(self._delayed, (due, next(self._delayed_numbers), queue_name, message))
            if self._timer is None:
                self._timer = threading.Thread(
                    target=self._release_due, name="taskell-memory-delays", daemon=True
                )
                self._timer.start()
            self._delayed_changed.notify()

    def delayed_count(self) -> int:
        """Messages held for a later delivery."""
        with self._lock:
            return len(self._delayed)

    def _release_due(self) -> None:
        # The broker's timer thread: sleeps until the earliest due message, then routes it.
        with self._lock:
            while True:
                now = time.monotonic()
                while self._delayed and self._delayed[0][0] <= now:
                    _, _, queue_name, message = heapq.heappop(self._delayed)
                    if queue_name in self._queues:
                        self.publish("", queue_name, message, mandatory=False)
                    else:  # deleted meanwhile: kept, like RabbitMQ's at-least-once dead-lettering
                        log.warning(
                            "delayed message %s: no queue %r; retrying", message.message_id, queue_name
                        )
                        entry = (now + _REDELIVER_AFTER, next(self._delayed_numbers), queue_name, message)
                        heapq.heappush(self._delayed, entry)
                self._delayed_changed.wait(self._delayed[0][0] - now if self._delayed else None)

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
            if q.log is not None:
                for message in q.log.since((consumer.arguments or {}).get("x-stream-offset")):
                    consumer.transport.deliver(consumer, q.name, message, False, held=False)
                return
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

    def deliver(
        self, consumer: _Consumer, queue_name: str, message: Message, redelivered: bool, *, held: bool = True
    ) -> None:
        """Called by the broker, under its lock; ``held``: until acknowledged (not from a stream)."""
        tag = next(self._tags)
        if held and not consumer.auto_ack:
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

    def publish(
        self, exchange: str, routing_key: str, message: Message, *, mandatory: bool, replay: bool = True
    ) -> Future[None]:
        return self._now(lambda: self._broker.publish(exchange, routing_key, message, mandatory))

    def publish_delayed(self, queue: str, message: Message, delay: float) -> Future[None]:
        if delay > 0:
            delays.delay_ms(delay)  # the same limit as on RabbitMQ
        return self._now(lambda: self._broker.publish_delayed(queue, message, delay))

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        return self._now(
            lambda: self._broker.declare_queue(self, name, exclusive, auto_delete, arguments or {})
        )

    def declare_exchange(
        self, name: str, kind: str, *, arguments: Mapping[str, Any] | None = None
    ) -> Future[None]:
        return self._now(lambda: self._broker.declare_exchange(name, kind))

    def bind(self, queue: str, exchange: str, routing_key: str = "") -> Future[None]:
        return self._now(lambda: self._broker.bind(queue, exchange, routing_key))

    def bind_exchange(self, destination: str, source: str, routing_key: str = "") -> Future[None]:
        return self._now(lambda: self._broker.bind_exchange(destination, source, routing_key))

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

    def consume(
        self,
        queue: str,
        on_message: OnMessage,
        *,
        auto_ack: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        tag = f"ctag-{next(self._consumer_tags)}"
        consumer = _Consumer(self, tag, queue, on_message, auto_ack, arguments)

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
