"""``taskell dead-letters``: list the dead-letter queue, and requeue one message after a fix.

A short-lived admin tool, so it uses pika's ``BlockingConnection`` directly: it takes messages
with ``basic_get`` (unacknowledged), prints them, then returns all of them to the queue except
a requeued one, which is republished to its original queue (confirmed) before it is acked.
"""

from __future__ import annotations

import json
from typing import Any

import pika

from . import _wire
from .config import Config
from .errors import BrokerUnavailable
from .transport.pika_connection import pika_parameters

__all__ = ["dead_letters"]

_INTERNAL_HEADERS = (_wire.REASON_HEADER, "taskell-queue")


def dead_letters(config: Config, *, limit: int = 100, requeue: str | None = None) -> list[dict[str, Any]]:
    """Up to ``limit`` dead-lettered messages as dicts (task id, type, queue, reason, body);
    with ``requeue`` (a task id), that message is sent back to its original queue.

    Raises:
        BrokerUnavailable: the broker cannot be reached, or ``requeue`` names no listed message.
    """
    try:
        connection = pika.BlockingConnection(pika_parameters(config.broker_url(), config))
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"cannot connect to {config.masked_url()}: {exc!r}") from None
    try:
        return _list(connection, config, limit, requeue)
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailable(f"dead-letter queue {config.dead_letter_queue}: {exc!r}") from None
    finally:
        if connection.is_open:
            connection.close()


def _list(connection: Any, config: Config, limit: int, requeue: str | None) -> list[dict[str, Any]]:
    channel = connection.channel()
    channel.confirm_delivery()
    try:  # passive: whatever its type, never create or re-declare it from here
        channel.queue_declare(config.dead_letter_queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return []  # no worker ever declared it: nothing was dead-lettered
        raise
    listed: list[dict[str, Any]] = []
    found = False
    for _ in range(limit):
        method, props, body = channel.basic_get(config.dead_letter_queue, auto_ack=False)
        if method is None:
            break
        headers = dict(props.headers or {})
        entry = {
            "task_id": props.message_id,
            "type": props.type,
            "queue": headers.get("taskell-queue"),
            "reason": headers.get(_wire.REASON_HEADER) or _death_reason(headers),
            "body": body.decode("utf-8", "replace"),
        }
        listed.append(entry)
        if requeue is not None and props.message_id == requeue and entry["queue"]:
            for key in _INTERNAL_HEADERS:
                headers.pop(key, None)
            props.headers = headers
            channel.basic_publish("", str(entry["queue"]), body, props, mandatory=True)
            channel.basic_ack(method.delivery_tag)
            entry["requeued"] = True
            found = True
    channel.basic_nack(0, multiple=True, requeue=True)  # everything else goes back
    if requeue is not None and not found:
        raise BrokerUnavailable(f"no dead-lettered message {requeue} among the first {limit}")
    return listed


def _death_reason(headers: dict[str, Any]) -> str | None:
    # Quorum queues dead-letter after x-delivery-limit with an x-death header instead.
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return f"{deaths[0].get('reason')} (from {deaths[0].get('queue')})"
    return None


def format_entries(entries: list[dict[str, Any]]) -> str:
    """JSON lines, one message each."""
    return "\n".join(json.dumps(entry, sort_keys=True) for entry in entries)
