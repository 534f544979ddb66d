"""Declared errors on a real RabbitMQ, with the thread and the process pool: the failure reply
carries the error's fields under ``error``, the client raises the generated class with the same
field values, and an exception the task does not declare stays a plain ``TaskFailed``."""

from __future__ import annotations

import datetime
import decimal
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import BOOK, Client, DiscountTooLarge, Order, registry
from tests.support import RESULT_TIMEOUT

ORDER = Order(
    id=uuid.UUID(int=42),
    placed_at=datetime.datetime(2026, 3, 4, 5, 6, tzinfo=datetime.UTC),
    amount=decimal.Decimal("99.95"),
)


@pytest.fixture(params=["thread", "process"])
def pool_worker(request: pytest.FixtureRequest, config: taskell.Config) -> Iterator[taskell.Worker]:
    worker = taskell.Worker(
        registry(Impl()), config.model_copy(update={"pool": request.param}), parallelism=2
    )
    with worker:
        yield worker


def test_declared_error_crosses_the_wire_typed(conn: taskell.Connection, pool_worker: taskell.Worker) -> None:
    client = Client(conn)
    handle = client.book(order=ORDER, discount=decimal.Decimal("1.75"))
    with pytest.raises(DiscountTooLarge) as info:
        handle.result(timeout=RESULT_TIMEOUT)
    error = info.value
    assert (error.discount, error.limit) == (decimal.Decimal("1.75"), decimal.Decimal(1))
    assert (error.task_id, error.task, error.error_type) == (handle.id, "demo.book", "demo.DiscountTooLarge")
    assert "raise DiscountTooLarge" in error.traceback
    # An exception the task does not declare stays a plain TaskFailed.
    with pytest.raises(taskell.TaskFailed) as plain:
        client.fail(message="untyped").result(timeout=RESULT_TIMEOUT)
    assert type(plain.value) is taskell.TaskFailed
    assert (plain.value.error_type, plain.value.message) == ("ValueError", "untyped")
    # A task that depends on the failed one fails with the typed error as its cause.
    with pytest.raises(taskell.DependencyFailed) as dep:
        client.square(x=1, after=[handle]).result(timeout=RESULT_TIMEOUT)
    assert isinstance(dep.value.cause, DiscountTooLarge)
    assert dep.value.cause.discount == decimal.Decimal("1.75")


def test_failure_reply_carries_the_fields(pool_worker: taskell.Worker, amqp: Any) -> None:
    amqp.confirm_delivery()
    reply_queue = amqp.queue_declare("", exclusive=True, auto_delete=True).method.queue
    args = {"order": json.loads(ORDER.model_dump_json()), "discount": "3"}
    task_id = str(uuid.uuid4())
    amqp.basic_publish(
        "",
        BOOK.queue,
        json.dumps(args).encode(),
        pika.BasicProperties(
            type=BOOK.name,
            message_id=task_id,
            reply_to=reply_queue,
            content_type="application/json",
            delivery_mode=2,
            headers={"taskell-fingerprint": BOOK.fingerprint},
        ),
        mandatory=True,
    )
    deadline = time.monotonic() + RESULT_TIMEOUT
    replies: list[tuple[Any, bytes]] = []
    while not any(props.type == "failed" for props, _ in replies) and time.monotonic() < deadline:
        method, props, body = amqp.basic_get(reply_queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
        else:
            replies.append((props, body))
    failed = [(props, body) for props, body in replies if props.type == "failed"]
    assert len(failed) == 1, replies
    props, body = failed[0]
    assert props.correlation_id == task_id
    info = json.loads(body)
    assert info["error_type"] == "demo.DiscountTooLarge"
    assert info["error"] == {"discount": "3", "limit": "1"}
    assert info["message"] == "discount=Decimal('3'), limit=Decimal('1')"
    assert "raise DiscountTooLarge" in info["traceback"]
