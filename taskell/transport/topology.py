"""What a connection declared, kept to declare it again on the next connection after a reconnect.

A ``Topology`` records typed declarations in the order they succeeded, each once, and the
consumers in the order they were started; ``replay`` hands them to a ``Target`` (the new
channel): every queue, exchange, binding and the prefetch first, then the consumers, so their
queues exist and the prefetch applies to them. Used on one thread (the transport's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .base import OnMessage

__all__ = [
    "Binding",
    "Consumer",
    "Declaration",
    "Exchange",
    "ExchangeBinding",
    "Prefetch",
    "Queue",
    "Target",
    "Topology",
    "declare",
]


@dataclass(frozen=True, slots=True)
class Queue:
    """A named queue (server-named ones cannot be declared again, so are not recorded)."""

    name: str
    durable: bool = True
    exclusive: bool = False
    auto_delete: bool = False
    arguments: Mapping[str, Any] | None = None  # x-queue-type, x-expires, ... as declared

    def __post_init__(self) -> None:
        if self.arguments is not None:  # a copy: the caller's mapping may change afterwards
            object.__setattr__(self, "arguments", dict(self.arguments))


@dataclass(frozen=True, slots=True)
class Exchange:
    """A durable exchange of ``kind`` (``fanout``, ``direct``, ...)."""

    name: str
    kind: str
    arguments: Mapping[str, Any] | None = None  # alternate-exchange, ... as declared

    def __post_init__(self) -> None:
        if self.arguments is not None:
            object.__setattr__(self, "arguments", dict(self.arguments))


@dataclass(frozen=True, slots=True)
class Binding:
    """``queue`` bound to ``exchange`` with ``routing_key`` ("" for fanout exchanges)."""

    queue: str
    exchange: str
    routing_key: str = ""


@dataclass(frozen=True, slots=True)
class ExchangeBinding:
    """Exchange ``destination`` bound to exchange ``source`` with ``routing_key``."""

    destination: str
    source: str
    routing_key: str = ""


@dataclass(frozen=True, slots=True)
class Prefetch:
    """The channel's prefetch limit; ``channel_wide`` False limits each later consumer instead."""

    count: int
    channel_wide: bool


@dataclass(frozen=True, slots=True)
class Consumer:
    """A consumer under its consumer tag."""

    tag: str
    queue: str
    on_message: OnMessage = field(compare=False)
    auto_ack: bool = False
    arguments: Mapping[str, Any] | None = None  # x-stream-offset, ... as given


Declaration = Queue | Exchange | Binding | ExchangeBinding | Prefetch


class Target(Protocol):
    """Where a ``Topology`` is replayed: one method per kind of declaration."""

    def declare_queue(self, queue: Queue) -> None: ...

    def declare_exchange(self, exchange: Exchange) -> None: ...

    def bind(self, binding: Binding) -> None: ...

    def bind_exchange(self, binding: ExchangeBinding) -> None: ...

    def set_prefetch(self, prefetch: Prefetch) -> None: ...

    def start_consumer(self, consumer: Consumer) -> None: ...


class Topology:
    """Declarations (in order, without repeats) and consumers (by tag) to replay."""

    def __init__(self) -> None:
        self._declarations: list[Declaration] = []
        self._consumers: dict[str, Consumer] = {}

    def add(self, declaration: Declaration) -> None:
        """Record a declaration the broker accepted; a new prefetch replaces the previous one."""
        if isinstance(declaration, Prefetch):
            self._declarations = [d for d in self._declarations if not isinstance(d, Prefetch)]
        elif declaration in self._declarations:
            return
        self._declarations.append(declaration)

    def unbind(self, binding: Binding) -> None:
        if binding in self._declarations:
            self._declarations.remove(binding)

    def delete_queue(self, name: str) -> None:
        """Forget queue ``name`` and its bindings (its consumers end when the broker cancels them)."""
        self._declarations = [
            d for d in self._declarations if not (isinstance(d, (Queue, Binding)) and _queue_of(d) == name)
        ]

    def add_consumer(self, consumer: Consumer) -> None:
        self._consumers[consumer.tag] = consumer

    def cancel(self, tag: str) -> None:
        self._consumers.pop(tag, None)

    def replay(self, target: Target) -> None:
        """Declarations in their order, then consumers in theirs."""
        for declaration in self._declarations:
            declare(target, declaration)
        for consumer in self._consumers.values():
            target.start_consumer(consumer)


def declare(target: Target, declaration: Declaration) -> None:
    """Hand ``declaration`` to the method of ``target`` for its kind."""
    if isinstance(declaration, Queue):
        target.declare_queue(declaration)
    elif isinstance(declaration, Exchange):
        target.declare_exchange(declaration)
    elif isinstance(declaration, Binding):
        target.bind(declaration)
    elif isinstance(declaration, ExchangeBinding):
        target.bind_exchange(declaration)
    else:
        target.set_prefetch(declaration)


def _queue_of(declaration: Queue | Binding) -> str:
    return declaration.name if isinstance(declaration, Queue) else declaration.queue
