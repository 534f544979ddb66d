"""Batched acknowledgements on a real RabbitMQ: acks requested from many threads, in any order,
mixed with rejects, go out once per I/O-loop turn as one ``multiple`` ack for the settled prefix
plus single acks behind a gap. A wrong tag would make the broker close the channel (and
redeliver everything unacknowledged); these tests check that never happens and nothing is
left over or delivered twice."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

from taskell.config import Config
from taskell.transport import Delivery, Message
from taskell.transport.amqp import AmqpTransport
from taskell.transport.pika_connection import pika_parameters
from tests.support import URL, wait_until

COUNT = 600


@pytest.fixture
def transport(broker: str) -> Iterator[AmqpTransport]:
    t = AmqpTransport([pika_parameters(URL, Config.from_url(URL))], name="test-acks")
    yield t
    t.close()


def _fill(transport: AmqpTransport, count: int) -> str:
    queue = f"test.acks.{uuid.uuid4().hex[:8]}"
    transport.declare_queue(queue, durable=False).result(10)
    confirms = [
        transport.publish("", queue, Message(body=str(i).encode(), message_id=str(i)), mandatory=True)
        for i in range(count)
    ]
    for confirm in confirms:
        confirm.result(10)
    return queue


def _settle_all(transport: AmqpTransport, queue: str, reject: set[int], threads: int) -> list[Delivery]:
    """Consume ``queue``; settle every delivery from ``threads`` threads in shuffled order."""
    received: list[Delivery] = []
    lock = threading.Lock()
    done = threading.Event()

    def on_message(delivery: Delivery) -> None:
        with lock:
            received.append(delivery)
            if len(received) >= COUNT:
                done.set()

    transport.set_prefetch(COUNT).result(10)
    tag = transport.consume(queue, on_message).result(10)
    assert done.wait(30), f"{len(received)} of {COUNT} delivered"
    order = list(received)
    random.Random(7).shuffle(order)

    def settle(part: list[Delivery]) -> None:
        for delivery in part:
            if int(delivery.message.message_id or 0) in reject:
                transport.reject(delivery.tag, requeue=False)
            else:
                transport.ack(delivery.tag)
            if random.random() < 0.05:
                time.sleep(0.001)  # spread the settling over several loop turns

    workers = [threading.Thread(target=settle, args=(order[n::threads],)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    # The last acks go out at the end of a loop turn.
    wait_until(lambda: transport._batcher.unsettled == [], 10, "every delivery settled on the channel")
    transport.cancel(tag)
    return received


def _left_after_close(transport: AmqpTransport, queue: str) -> int:
    """Close ``transport`` (the broker requeues what it did not acknowledge), then count the
    messages in ``queue`` and delete it."""
    transport.close()
    conn = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        channel = conn.channel()
        ok: Any = channel.queue_declare(queue, passive=True).method
        channel.queue_delete(queue)
        return int(ok.message_count)
    finally:
        conn.close()


def test_acks_from_many_threads_in_any_order_settle_everything(transport: AmqpTransport) -> None:
    queue = _fill(transport, COUNT)
    reject = set(random.Random(3).sample(range(COUNT), 40))
    received = _settle_all(transport, queue, reject, threads=4)

    assert len(received) == COUNT and not any(d.redelivered for d in received)
    assert transport._generation == 0, "the channel was closed (a wrong ack?) and reconnected"
    assert transport._batcher.unsettled == [], "some deliveries are still unacknowledged"
    assert _left_after_close(transport, queue) == 0  # every ack and reject reached the broker


def test_a_held_delivery_does_not_block_the_acks_behind_it(transport: AmqpTransport) -> None:
    """The first delivery stays unsettled (say, a long task): the others are acknowledged one
    by one behind it, and a multiple ack covers everything once it is settled."""
    queue = _fill(transport, COUNT)
    received: list[Delivery] = []
    all_in = threading.Event()

    def on_message(delivery: Delivery) -> None:
        received.append(delivery)
        if len(received) == COUNT:
            all_in.set()

    transport.set_prefetch(COUNT).result(10)
    transport.consume(queue, on_message).result(10)
    assert all_in.wait(30)
    held, rest = received[0], received[1:]
    for delivery in rest:
        transport.ack(delivery.tag)
    held_tag = held.tag & ((1 << 40) - 1)
    wait_until(
        lambda: transport._batcher.unsettled == [held_tag], 10, "all but the held delivery acknowledged"
    )
    transport.ack(held.tag)
    wait_until(lambda: transport._batcher.unsettled == [], 10, "the held delivery acknowledged")
    assert transport._generation == 0
    assert _left_after_close(transport, queue) == 0
