"""``taskell dead-letters``: list the dead-letter queue, and requeue one message after a fix.

A short-lived admin tool, so it uses pika's ``BlockingConnection`` directly: it takes messages
with ``basic_get`` (unacknowledged) and returns them all to the queue at the end. A requeued
message is republished to its original queue (confirmed) and acked, and the scan stops there:
a worker may dead-letter it again at once, and that copy, behind the others, must not be
requeued a second time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pika  # type: ignore[import-untyped]

from . import _wire
from .config import Config
from .errors import BrokerUnavailable
from .transport.pika_connection import pika_parameters

__all__ = ["RequeueError", "dead_letters", "format_entries", "requeue"]

_INTERNAL_HEADERS = (_wire.REASON_HEADER, _wire.QUEUE_HEADER)


class RequeueError(Exception):
    """The message to requeue is not there, or cannot go back to its queue (bad input)."""


def dead_letters(config: Config, *, limit: int = 100) -> list[dict[str, Any]]:
    """Up to ``limit`` dead-lettered messages as dicts (task id, type, queue, reason, body);
    all of them stay in the queue.

    Raises:
        BrokerUnavailable: the broker cannot be reached or refused an operation.
    """
    with _channel(config) as channel:
        return [_entry(props, body) for _, props, body in _scan(channel, config, limit)]


def requeue(config: Config, task_id: str, *, limit: int = 100) -> dict[str, Any]:
    """Send the dead-lettered message ``task_id`` back to its original queue, exactly once, and
    return its entry (``queue`` is where it went). Only the first ``limit`` messages are looked at.

    Raises:
        RequeueError: no such message among them, or its queue is unknown or gone.
        BrokerUnavailable: the broker cannot be reached or refused an operation.
    """
    with _channel(config) as channel:
        seen = 0
        for delivery_tag, props, body in _scan(channel, config, limit):
            seen += 1
            if props.message_id != task_id:
                continue
            entry = _entry(props, body)
            queue = entry["queue"]
            if not queue:
                raise RequeueError(f"dead-lettered message {task_id} does not say which queue it came from")
            props.headers = {k: v for k, v in (props.headers or {}).items() if k not in _INTERNAL_HEADERS}
            try:
                channel.basic_publish("", queue, body, props, mandatory=True)
            except pika.exceptions.UnroutableError:
                raise RequeueError(f"cannot requeue {task_id}: queue {queue!r} does not exist") from None
            channel.basic_ack(delivery_tag)
            return entry
        looked = f"looked at the first {limit} only" if seen == limit else f"{seen} there"
        raise RequeueError(
            f"dead-lettered message {task_id} not found in {config.dead_letter_queue} ({looked})"
        )


@contextmanager
def _channel(config: Config) -> Iterator[Any]:
    """A confirmed channel; every message taken and not acked goes back to the queue at the end."""
    try:
        connection = pika.BlockingConnection(pika_parameters(config.broker_url(), config))
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"cannot connect to {config.masked_url()}: {exc!r}") from None
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            yield channel
        finally:
            if channel.is_open:
                channel.basic_nack(0, multiple=True, requeue=True)
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"dead-letter queue {config.dead_letter_queue}: {exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()


def _scan(channel: Any, config: Config, limit: int) -> Iterator[tuple[int, Any, bytes]]:
    """Take up to ``limit`` messages (unacked), yielding each delivery tag, properties and body."""
    try:  # passive: whatever its type, never create or re-declare it from here
        channel.queue_declare(config.dead_letter_queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return  # no worker ever declared it: nothing was dead-lettered
        raise
    for _ in range(limit):
        method, props, body = channel.basic_get(config.dead_letter_queue, auto_ack=False)
        if method is None:
            return
        yield method.delivery_tag, props, body


def _entry(props: Any, body: bytes) -> dict[str, Any]:
    headers = props.headers or {}
    queue, death = _death(headers)
    return {
        "task_id": props.message_id,
        "type": props.type,
        "queue": headers.get(_wire.QUEUE_HEADER) or queue,
        "reason": headers.get(_wire.REASON_HEADER) or death,
        "body": body.decode("utf-8", "replace"),
    }


def _death(headers: dict[str, Any]) -> tuple[str | None, str | None]:
    """The original queue and reason of a message the broker dead-lettered itself: quorum
    queues do after ``x-delivery-limit``, with an ``x-death`` header instead of taskell's."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        queue = deaths[0].get("queue")
        return (str(queue) if queue else None), f"{deaths[0].get('reason')} (from {queue})"
    return None, None


def format_entries(entries: list[dict[str, Any]]) -> str:
    """JSON lines, one message each."""
    return "\n".join(json.dumps(entry, sort_keys=True) for entry in entries)
