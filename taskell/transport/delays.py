"""Delayed delivery on RabbitMQ: a fixed ladder of TTL queues, one per binary digit of the delay.

The delay, rounded up to whole milliseconds, is written as 38 binary digits, most significant
first. Level N (37 down to 0) is a topic exchange ``taskell.delay.N`` and a queue of the same
name whose messages expire after 2**N ms and are then dead-lettered to exchange
``taskell.delay.(N-1)`` (level 0: to ``taskell.delay.deliver``). Exchange N routes a message
whose digit N is 1 into queue N, and one whose digit N is 0 straight on to exchange N-1 (an
exchange-to-exchange binding, no wait). A delayed message is published with the routing key
``<38 digits, one word each>.<destination queue>`` to the level of its highest 1 digit (the
levels above would only pass it on: each exchange-to-exchange hop costs the broker about 0.1 ms
of routing per message); dead-lettering keeps that key, so it waits in exactly the levels of its
1 digits, longest first, then leaves level 0 through ``taskell.delay.deliver`` to
``taskell.delay.route``, which routes it to its queue: each queue is bound there with 38 ``*``
words and its own name (an exact match: ``#.name`` would also catch a queue whose name ends with
``.name``). A message whose queue was deleted meanwhile goes to the queue
``taskell.delay.unroutable`` (the route exchange's alternate exchange): retried in its level
instead, it would hold up the messages behind it there.

Every message of one level waits the same time, so the queue's head always expires first: a
level never holds a due message behind a later one, and a message is late only by the hops it
makes (about 2 ms each on a local broker), never early. The levels are quorum queues that
dead-letter at-least-once (``x-dead-letter-strategy: at-least-once`` with ``x-overflow:
reject-publish``), whatever type the task queues have: a message moves to the next level only
once that level confirmed it, so a broker restart or a node loss loses none; classic queues'
dead-lettering could. Quorum queues keep message bodies on disk, so waiting messages cost the
broker little memory and workers none.

Limits: at most 2**38 - 1 ms (about 8.7 years); a destination queue name of at most 179 bytes
(a routing key holds 255) without ``*`` or ``#`` words.
"""

from __future__ import annotations

import math
from typing import Any

from .topology import Binding, Declaration, Exchange, ExchangeBinding, Queue

__all__ = [
    "DELIVER_EXCHANGE",
    "LEVELS",
    "MAX_DELAY_MS",
    "ROUTE_EXCHANGE",
    "UNROUTABLE",
    "declarations",
    "delay_ms",
    "destination_binding",
    "entry",
    "routing_key",
    "without_deaths",
]

DUE_HEADER = "taskell-due-ms"  # when a delayed message is due, Unix ms: held again if early

LEVELS = 38
MAX_DELAY_MS = 2**LEVELS - 1
PREFIX = "taskell.delay"
DELIVER_EXCHANGE = f"{PREFIX}.deliver"  # where level 0 (and any run of 0 digits) ends
ROUTE_EXCHANGE = f"{PREFIX}.route"  # binds each destination queue
UNROUTABLE = f"{PREFIX}.unroutable"  # a fanout exchange and its queue: for deleted destinations
_MAX_KEY_BYTES = 255


def level_name(level: int) -> str:
    """The exchange and the queue of ``level``."""
    return f"{PREFIX}.{level}"


def delay_ms(delay: float) -> int:
    """``delay`` seconds in whole milliseconds, rounded up (a delay is never shortened).

    Raises:
        ValueError: over ``MAX_DELAY_MS`` (about 8.7 years), or not a number.
    """
    if not math.isfinite(delay):
        raise ValueError(f"a delay must be a finite number of seconds, not {delay!r}")
    ms = math.ceil(round(delay * 1000, 3))  # to the microsecond first: 0.29 s is 290 ms, not 291
    if ms > MAX_DELAY_MS:
        raise ValueError(
            f"a delay of {delay} s is over the longest one, {MAX_DELAY_MS // 1000} s (about 8.7 years)"
        )
    return max(ms, 0)


def routing_key(ms: int, queue: str) -> str:
    """The key a message delayed ``ms`` milliseconds for ``queue`` is published with.

    Raises:
        ValueError: ``ms`` out of range, or ``queue`` a name the ladder cannot route.
    """
    if not 0 <= ms <= MAX_DELAY_MS:
        raise ValueError(f"a delay of {ms} ms is out of range (0 to {MAX_DELAY_MS})")
    _check_queue(queue)
    return ".".join(format(ms, f"0{LEVELS}b")) + "." + queue


def entry(ms: int) -> str:
    """The exchange a message delayed ``ms`` milliseconds is published to: the level of its
    highest 1 digit (level 0 for no delay: it passes straight on to its queue)."""
    return level_name(max(ms.bit_length() - 1, 0))


def destination_binding(queue: str) -> Binding:
    """How ``queue`` is bound to the route exchange: any 38 digits, then exactly its name."""
    _check_queue(queue)
    return Binding(queue, ROUTE_EXCHANGE, "*." * LEVELS + queue)


def queue_arguments(level: int) -> dict[str, Any]:
    """Level ``level``'s queue: quorum, messages expire after 2**level ms, dead-lettered
    at-least-once to the next level down."""
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": 2**level,
        "x-dead-letter-exchange": level_name(level - 1) if level else DELIVER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",  # at-least-once dead-lettering requires it
    }


def declarations() -> list[Declaration]:
    """Every exchange, queue and binding of the ladder, each exchange before its bindings."""
    out: list[Declaration] = [
        Exchange(UNROUTABLE, "fanout"),
        Queue(UNROUTABLE, durable=True, arguments={"x-queue-type": "quorum"}),
        Binding(UNROUTABLE, UNROUTABLE),
        Exchange(ROUTE_EXCHANGE, "topic", arguments={"alternate-exchange": UNROUTABLE}),
        Exchange(DELIVER_EXCHANGE, "topic"),
        ExchangeBinding(ROUTE_EXCHANGE, DELIVER_EXCHANGE, "#"),
    ]
    for level in range(LEVELS):
        name = level_name(level)
        digit = "*." * (LEVELS - 1 - level)  # the words before digit ``level``
        out += [
            Exchange(name, "topic"),
            Queue(name, durable=True, arguments=queue_arguments(level)),
            Binding(name, name, f"{digit}1.#"),
            ExchangeBinding(level_name(level - 1) if level else DELIVER_EXCHANGE, name, f"{digit}0.#"),
        ]
    return out


def without_deaths(headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` without the ones RabbitMQ adds on dead-lettering (``x-death``,
    ``x-first-death-*``, ``x-last-death-*``).

    A message held again (released early by the levels) must enter them afresh: with its old
    ``x-death`` still on, RabbitMQ sees it expire from a queue it already expired from, takes
    that for a dead-letter cycle and never delivers it."""
    return {
        name: value
        for name, value in headers.items()
        if name != "x-death" and not name.startswith(("x-first-death-", "x-last-death-"))
    }


def _check_queue(queue: str) -> None:
    if not queue or len(queue.encode()) > _MAX_KEY_BYTES - 2 * LEVELS:
        raise ValueError(f"queue name {queue!r} cannot be delayed to: it must have 1 to 179 bytes")
    if {"*", "#"} & set(queue.split(".")):
        raise ValueError(f"queue name {queue!r} cannot be delayed to: it has a '*' or '#' word")
