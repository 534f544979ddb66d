"""Broker connections: the ``Transport`` interface and ``open_transport``, which picks RabbitMQ
(``amqp``, pika) or the in-process broker of ``memory://NAME`` URLs (``memory``)."""

from __future__ import annotations

from ..config import Config
from .amqp import AmqpTransport
from .base import BCC_HEADER, Delivery, Message, OnMessage, Transport
from .memory import MemoryBroker, MemoryTransport
from .pika_connection import pika_parameters

__all__ = ["BCC_HEADER", "Delivery", "Message", "OnMessage", "Transport", "open_transport"]


def open_transport(config: Config, *, name: str = "taskell") -> Transport:
    """Open a broker connection for ``config``: RabbitMQ, or the in-memory broker for
    ``memory://NAME``. Tries each of ``config.broker_urls()`` in turn.

    Raises:
        BrokerUnavailable: no broker answered.
    """
    urls = config.broker_urls()
    if urls[0].startswith("memory://"):
        return MemoryTransport(MemoryBroker.named(urls[0][len("memory://") :]), name=name)
    params = [pika_parameters(url, config) for url in urls]
    return AmqpTransport(params, name=name, timeout=config.connect_timeout)
