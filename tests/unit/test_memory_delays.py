"""Delayed messages on the in-memory broker: held by the broker (one timer thread, however many
wait), put in their queue when due and never earlier, refused like RabbitMQ refuses them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from taskell.errors import BrokerUnavailable
from taskell.transport import Delivery, Message
from taskell.transport.delays import MAX_DELAY_MS
from taskell.transport.memory import MemoryBroker, MemoryTransport
from tests.support import wait_until


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    transport = MemoryTransport(MemoryBroker())
    transport.declare_queue("tasks").result()
    yield transport
    transport.close()


def arrivals(transport: MemoryTransport) -> list[tuple[float, str]]:
    got: list[tuple[float, str]] = []

    def on_message(delivery: Delivery) -> None:
        got.append((time.monotonic(), str(delivery.message.message_id)))
        transport.ack(delivery.tag)

    transport.consume("tasks", on_message).result()
    return got


def test_delayed_messages_arrive_when_due_in_due_order(transport: MemoryTransport) -> None:
    got = arrivals(transport)
    start = time.monotonic()
    delays = {"c": 0.6, "a": 0.2, "b": 0.4, "now": 0.0}
    for name, delay in delays.items():
        transport.publish_delayed("tasks", Message(b"", message_id=name), delay).result(1)
    wait_until(lambda: len(got) == 4, 5, "every delayed message")
    assert [name for _, name in got] == ["now", "a", "b", "c"]
    for at, name in got:
        assert delays[name] <= at - start < delays[name] + 0.2, name


def test_one_timer_thread_holds_many_messages(transport: MemoryTransport) -> None:
    got = arrivals(transport)
    before = threading.active_count()
    for n in range(200):
        transport.publish_delayed("tasks", Message(b"", message_id=str(n)), 0.3 + n / 1000).result(1)
    assert threading.active_count() <= before + 1
    assert transport._broker.delayed_count() == 200
    assert got == []
    wait_until(lambda: len(got) == 200, 5, "200 delayed messages")
    assert [name for _, name in got] == [str(n) for n in range(200)]


def test_a_delayed_message_to_no_queue_is_refused(transport: MemoryTransport) -> None:
    with pytest.raises(BrokerUnavailable, match="unroutable"):
        transport.publish_delayed("missing", Message(b"", message_id="x"), 1).result(1)


def test_a_delay_longer_than_the_broker_holds_is_a_value_error(transport: MemoryTransport) -> None:
    with pytest.raises(ValueError, match=r"8\.7 years"):
        transport.publish_delayed("tasks", Message(b""), MAX_DELAY_MS / 1000 + 1)


def test_a_due_message_whose_queue_was_deleted_waits_for_it(transport: MemoryTransport) -> None:
    transport.publish_delayed("tasks", Message(b"", message_id="kept"), 0.1).result(1)
    transport.delete_queue("tasks")
    time.sleep(0.3)
    assert transport._broker.delayed_count() == 1  # kept, not dropped
    transport.declare_queue("tasks").result()
    got = arrivals(transport)
    wait_until(lambda: len(got) == 1, 5, "the kept message")
