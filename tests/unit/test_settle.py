"""Settling (``taskell._settle``) over the in-memory broker: what a settled delivery leaves
behind (reply, dead-letter copy, outcome event) and that it is acknowledged, or given back."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

import pytest

import taskell
from generated.demo import SQUARE
from taskell import _wire
from taskell._retry import Retry
from taskell._settle import Settler
from taskell.transport import Delivery, Message
from taskell.transport.memory import MemoryBroker, MemoryTransport

TASKS, REPLIES, EVENTS = "tasks", "replies", "events"


@dataclass
class Setup:
    broker: MemoryBroker
    worker: MemoryTransport  # holds the task deliveries, unacknowledged until settled
    client: MemoryTransport
    settler: Settler
    config: taskell.Config
    deliveries: queue.Queue[Delivery]
    replies: queue.Queue[Message]
    events: queue.Queue[Message]

    def task(self, task_id: str = "t-1", *, reply_to: str | None = REPLIES) -> Delivery:
        """Submit a task and return its delivery to the worker side."""
        message = _wire.task_message(SQUARE, task_id, b'{"x": 3}', reply_to)
        self.client.publish("", TASKS, message, mandatory=True).result()
        self.client.bind(EVENTS, _wire.OUTCOMES_EXCHANGE, task_id).result()
        return self.deliveries.get(timeout=5)

    def settled(self) -> None:
        """Wait until what settling handed to the worker's thread has run."""
        self.settler.wait(5)
        done = threading.Event()
        self.worker.call_soon(done.set)
        assert done.wait(5)


@pytest.fixture
def setup() -> Iterator[Setup]:
    broker = MemoryBroker()
    config = taskell.Config.load(None, env={}, url="memory://settle")
    worker, client = MemoryTransport(broker), MemoryTransport(broker)
    deliveries: queue.Queue[Delivery] = queue.Queue()
    replies: queue.Queue[Message] = queue.Queue()
    events: queue.Queue[Message] = queue.Queue()
    worker.declare_queue(TASKS).result()
    worker.declare_queue(config.dead_letter_queue).result()
    worker.declare_exchange(_wire.OUTCOMES_EXCHANGE, "direct").result()
    worker.consume(TASKS, deliveries.put).result()
    client.declare_queue(REPLIES, exclusive=True).result()
    client.declare_queue(EVENTS, exclusive=True).result()
    client.consume(REPLIES, lambda d: replies.put(d.message), auto_ack=True).result()
    client.consume(EVENTS, lambda d: events.put(d.message), auto_ack=True).result()
    yield Setup(broker, worker, client, Settler(worker, config), config, deliveries, replies, events)
    client.close()
    worker.close()


def test_a_finished_task_replies_then_tells_joiners_then_is_acknowledged(setup: Setup) -> None:
    delivery = setup.task()
    setup.settler.finish(delivery, _wire.RESULT, b"9")
    setup.settled()
    reply = setup.replies.get(timeout=5)
    assert (reply.type, reply.correlation_id, reply.body, reply.persistent) == (
        _wire.RESULT,
        "t-1",
        b"9",
        True,
    )
    event = setup.events.get(timeout=5)
    assert (event.type, event.correlation_id, event.body) == (_wire.OUTCOME, "t-1", b"9")
    assert event.headers == {_wire.KIND_HEADER: _wire.RESULT, _wire.TASK_HEADER: SQUARE.name}
    assert setup.worker.unacked == {}


def test_a_task_without_a_handle_is_acknowledged_without_reply_or_event(setup: Setup) -> None:
    delivery = setup.task(reply_to=None)
    setup.settler.finish(delivery, _wire.RESULT, b"9")
    setup.settled()
    assert setup.worker.unacked == {}
    assert setup.replies.empty() and setup.events.empty()


def test_a_dead_lettered_task_is_kept_with_its_reason_and_its_client_told(setup: Setup) -> None:
    delivery = setup.task()
    setup.settler.dead_letter(delivery, "demo.square: bad")
    setup.settled()
    assert setup.worker.unacked == {}
    assert setup.broker.queue_depth(TASKS) == 0
    dead: queue.Queue[Message] = queue.Queue()
    setup.client.consume(setup.config.dead_letter_queue, lambda d: dead.put(d.message), auto_ack=True)
    copy = dead.get(timeout=5)
    assert (copy.message_id, copy.type, copy.body, copy.persistent) == ("t-1", SQUARE.name, b'{"x": 3}', True)
    assert copy.headers[_wire.REASON_HEADER] == "demo.square: bad"
    assert copy.headers[_wire.QUEUE_HEADER] == TASKS
    assert copy.headers[_wire.FINGERPRINT_HEADER] == SQUARE.fingerprint
    reply = setup.replies.get(timeout=5)
    assert (reply.type, reply.correlation_id) == (_wire.REJECTED, "t-1")
    assert json.loads(reply.body) == {
        "error_type": _wire.PAYLOAD_ERROR,
        "message": "demo.square: bad",
        "traceback": "",
    }
    assert setup.events.get(timeout=5).headers[_wire.KIND_HEADER] == _wire.REJECTED


def test_a_replaced_delivery_is_acknowledged_behind_its_copy(setup: Setup) -> None:
    delivery = setup.task()
    copy = Message(body=b'{"x": 4}', type=SQUARE.name, message_id="t-1", headers={_wire.DELIVERIES_HEADER: 1})
    setup.settler.replace(delivery, copy)
    again = setup.deliveries.get(timeout=5)
    assert again.tag != delivery.tag and not again.redelivered
    assert again.message.headers == {_wire.DELIVERIES_HEADER: 1}
    assert set(setup.worker.unacked) == {again.tag}


def test_a_requeued_task_comes_back_as_a_redelivery(setup: Setup) -> None:
    delivery = setup.task()
    setup.settler.requeue(delivery)
    again = setup.deliveries.get(timeout=5)
    assert again.redelivered and again.message.message_id == "t-1"
    assert setup.replies.empty() and setup.events.empty()


def test_a_dead_letter_copy_not_confirmed_leaves_the_task_unacknowledged(setup: Setup) -> None:
    delivery = setup.task(reply_to=None)
    setup.worker.delete_queue(setup.config.dead_letter_queue)  # the copy is unroutable
    setup.settler.dead_letter(delivery, "demo.square: bad")
    setup.settled()
    assert set(setup.worker.unacked) == {delivery.tag}  # redelivered once the connection drops
    assert setup.events.empty()


def test_a_dead_letter_copy_not_confirmed_leaves_the_task_unacknowledged_even_if_its_reply_was(
    setup: Setup,
) -> None:
    delivery = setup.task()  # with a reply queue: the rejected reply is confirmed after the copy fails
    setup.worker.delete_queue(setup.config.dead_letter_queue)
    setup.settler.dead_letter(delivery, "demo.square: bad")
    setup.settled()
    assert set(setup.worker.unacked) == {delivery.tag}
    assert setup.events.empty()


def test_a_retried_task_is_published_again_and_its_client_told_then_acknowledged_without_event(
    setup: Setup,
) -> None:
    delivery = setup.task()
    setup.settler.retry(delivery, Retry(attempt=1, delay=0.05, error_type="ValueError", message="boom"))
    setup.settled()
    notice = setup.replies.get(timeout=5)
    assert (notice.type, notice.correlation_id, notice.persistent) == (_wire.RETRYING, "t-1", True)
    assert json.loads(notice.body) == {
        "attempt": 1,
        "delay_s": 0.05,
        "error_type": "ValueError",
        "message": "boom",
    }
    assert setup.worker.unacked == {}
    again = setup.deliveries.get(timeout=5)  # the next attempt, once its delay is over
    assert (again.message.message_id, again.message.body, again.message.reply_to) == (
        "t-1",
        b'{"x": 3}',
        REPLIES,
    )
    assert again.message.headers[_wire.ATTEMPT_HEADER] == 2
    assert not again.redelivered
    assert setup.events.empty()  # dependents wait for the task's final outcome
    setup.settler.finish(again, _wire.RESULT, b"9")
    setup.settled()
    assert setup.replies.get(timeout=5).type == _wire.RESULT
    assert setup.events.get(timeout=5).headers[_wire.KIND_HEADER] == _wire.RESULT
    assert setup.worker.unacked == {}


def test_a_retry_of_a_task_without_a_handle_only_publishes_the_next_attempt(setup: Setup) -> None:
    delivery = setup.task(reply_to=None)
    setup.settler.retry(delivery, Retry(attempt=2, delay=0.0, error_type="ValueError", message="boom"))
    again = setup.deliveries.get(timeout=5)
    assert again.message.headers[_wire.ATTEMPT_HEADER] == 3
    setup.settled()
    assert set(setup.worker.unacked) == {again.tag}
    assert setup.replies.empty() and setup.events.empty()


class _NoDelays(MemoryTransport):
    """A transport whose broker refuses delayed messages."""

    def publish_delayed(self, queue: str, message: Message, delay: float) -> Future[None]:
        refused: Future[None] = Future()
        refused.set_exception(taskell.BrokerUnavailable("refused"))
        return refused


def test_a_retry_not_held_by_the_broker_leaves_the_task_unacknowledged(setup: Setup) -> None:
    worker = _NoDelays(setup.broker)
    try:
        deliveries: queue.Queue[Delivery] = queue.Queue()
        worker.declare_queue("other-tasks").result()
        worker.consume("other-tasks", deliveries.put).result()
        message = _wire.task_message(SQUARE, "t-2", b'{"x": 3}', REPLIES)
        setup.client.publish("", "other-tasks", message, mandatory=True).result()
        delivery = deliveries.get(timeout=5)
        settler = Settler(worker, setup.config)
        settler.retry(delivery, Retry(attempt=1, delay=0.0, error_type="ValueError", message="boom"))
        settler.wait(5)
        done = threading.Event()
        worker.call_soon(done.set)
        assert done.wait(5)
        assert set(worker.unacked) == {delivery.tag}  # redelivered once the connection drops
        assert setup.replies.get(timeout=5).type == _wire.RETRYING  # the notice alone went out
        assert setup.events.empty()
    finally:
        worker.close()
