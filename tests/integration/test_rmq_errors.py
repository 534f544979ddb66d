"""Issue 3, points 3 and 6: remote errors, and dead-lettering of malformed messages."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, cast

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import SUM, Client, Image
from tests.support import RESULT_TIMEOUT, StartWorker


class WrongSquare(Impl):
    """``square`` returns a str where the schema says int."""

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        return cast(int, str(x * x))


class WrongImage(Impl):
    """``thumbnail`` returns records that bypass pydantic validation (``model_construct``):
    a str where ``Image.width`` is an int, or an object where ``Image.pixels`` is bytes."""

    def thumbnail(self, ctx: taskell.Context[None], image: Image, size: int = 128) -> Image:
        if image.label == "unserializable":
            return Image.model_construct(width=1, height=1, pixels=cast(bytes, object()), label=None)
        return Image.model_construct(width=cast(int, "wide"), height=1, pixels=b"", label=None)


def test_remote_exception_becomes_task_failed(conn: taskell.Connection, worker: taskell.Worker) -> None:
    client = Client(conn)
    handle = client.fail(message="it broke: 42")
    with pytest.raises(taskell.TaskFailed) as info:
        handle.result(timeout=RESULT_TIMEOUT)
    error = info.value
    assert error.error_type == "ValueError"
    assert error.message == "it broke: 42"
    assert "raise ValueError" in error.traceback
    assert "Traceback" in error.traceback
    assert error.task == "demo.fail"
    assert error.task_id == handle.id
    assert handle.done()
    # The worker keeps serving.
    assert client.square(x=7).result(timeout=RESULT_TIMEOUT) == 49
    with pytest.raises(taskell.TaskFailed, match="boom"):
        client.fail().result(timeout=RESULT_TIMEOUT)
    assert client.sum(numbers=[1, 2]).result(timeout=RESULT_TIMEOUT) == 3


def test_wrong_typed_result_becomes_task_failed(conn: taskell.Connection, start_worker: StartWorker) -> None:
    start_worker(parallelism=1, impl=WrongSquare())
    client = Client(conn)
    handle = client.square(x=3)
    with pytest.raises(taskell.TaskFailed) as info:
        handle.result(timeout=RESULT_TIMEOUT)
    error = info.value
    assert error.task == "demo.square"
    assert error.task_id == handle.id
    assert "demo.square" in error.message
    assert "result" in error.message
    assert "int" in error.message, error.message  # says what was expected
    # Still serving.
    assert client.sum(numbers=[2, 3]).result(timeout=RESULT_TIMEOUT) == 5


def test_wrong_typed_record_field_becomes_task_failed_naming_the_field(
    conn: taskell.Connection, start_worker: StartWorker
) -> None:
    start_worker(parallelism=1, impl=WrongImage())
    client = Client(conn)
    handle = client.thumbnail(image=Image(width=1, height=1, pixels=b"\x00", label="wrong"))
    with pytest.raises(taskell.TaskFailed) as info:
        handle.result(timeout=10)
    error = info.value
    assert error.task == "demo.thumbnail"
    assert "width" in error.message, error.message


def test_unserializable_result_becomes_task_failed_not_a_redelivery_loop(
    conn: taskell.Connection, start_worker: StartWorker
) -> None:
    start_worker(parallelism=1, impl=WrongImage())
    client = Client(conn)
    handle = client.thumbnail(image=Image(width=1, height=1, pixels=b"\x00", label="unserializable"))
    with pytest.raises(taskell.TaskFailed) as info:
        handle.result(timeout=10)
    error = info.value
    assert error.task == "demo.thumbnail"
    assert "pixels" in error.message, error.message
    # The worker is free for other tasks (not stuck re-running the poison one).
    assert client.square(x=9).result(timeout=RESULT_TIMEOUT) == 81


def _publish_raw(amqp: Any, body: bytes, task_type: str, reply_to: str) -> str:
    message_id = str(uuid.uuid4())
    amqp.basic_publish(
        "",
        SUM.queue,
        body,
        pika.BasicProperties(
            type=task_type,
            message_id=message_id,
            reply_to=reply_to,
            content_type="application/json",
            delivery_mode=2,
            headers={"taskell-fingerprint": SUM.fingerprint},
        ),
        mandatory=True,
    )
    return message_id


def _drain(amqp: Any, queue: str, expected: int, timeout: float) -> list[tuple[Any, bytes]]:
    """basic_get up to ``expected`` messages from ``queue`` within ``timeout`` seconds."""
    got: list[tuple[Any, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        method, props, body = amqp.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
        else:
            got.append((props, body))
    return got


def test_malformed_messages_are_dead_lettered_and_rejected(
    conn: taskell.Connection, worker: taskell.Worker, amqp: Any
) -> None:
    amqp.confirm_delivery()
    reply_queue = amqp.queue_declare("", exclusive=True, auto_delete=True).method.queue
    bad_json = _publish_raw(amqp, b'{"numbers": [1, 2', "demo.sum", reply_queue)
    invalid = _publish_raw(amqp, json.dumps({"numbers": ["one", 2]}).encode(), "demo.sum", reply_queue)
    unknown = _publish_raw(amqp, json.dumps({"numbers": [1]}).encode(), "demo.nope", reply_queue)
    ids = {bad_json, invalid, unknown}

    notices = _drain(amqp, reply_queue, 3, timeout=15)
    assert len(notices) == 3, f"expected 3 rejected notices, got {notices}"
    assert {props.correlation_id for props, _ in notices} == ids
    for props, body in notices:
        assert props.type == "rejected"
        info = json.loads(body)
        assert set(info) >= {"error_type", "message", "traceback"}
        assert info["message"]

    dead = _drain(amqp, "taskell.dead", 3, timeout=10)
    assert len(dead) == 3, f"expected 3 dead letters, got {dead}"
    reasons = {props.message_id: str((props.headers or {}).get("taskell-reason", "")) for props, _ in dead}
    assert set(reasons) == ids
    assert all(reasons.values()), reasons
    assert "json" in reasons[bad_json].lower(), reasons[bad_json]
    assert "numbers" in reasons[invalid], reasons[invalid]
    assert "demo.nope" in reasons[unknown] and "unknown" in reasons[unknown].lower(), reasons[unknown]
    bodies = {props.message_id: body for props, body in dead}
    assert bodies[bad_json] == b'{"numbers": [1, 2', "the dead letter keeps the original bytes"

    # Not redelivered in a loop: nothing comes back to the task queue, the dead-letter queue
    # or the reply queue once they are dealt with.
    time.sleep(1.0)  # a window for such a loop to show
    assert amqp.queue_declare(SUM.queue, passive=True).method.message_count == 0
    assert amqp.basic_get("taskell.dead", auto_ack=True)[0] is None
    assert amqp.basic_get(reply_queue, auto_ack=True)[0] is None
    assert worker.status()["running"] == []

    # The worker still completes good tasks.
    client = Client(conn)
    assert client.sum(numbers=[1, 2, 3]).result(timeout=RESULT_TIMEOUT) == 6
    assert client.square(x=12).result(timeout=RESULT_TIMEOUT) == 144


def test_submit_json_that_does_not_validate_raises_payload_error(conn: taskell.Connection, amqp: Any) -> None:
    with pytest.raises(taskell.PayloadError) as info:
        conn.submit_json(SUM, '{"numbers": ["one", 2]}')
    assert info.value.task == "demo.sum"
    assert "numbers" in info.value.detail
    with pytest.raises(taskell.PayloadError) as missing:
        conn.submit_json(SUM, "{}")
    assert "numbers" in missing.value.detail
    with pytest.raises(taskell.PayloadError):
        conn.submit_json(SUM, "not json")
    # Nothing was published.
    conn.flush(10)
    try:
        count = amqp.queue_declare(SUM.queue, passive=True).method.message_count
    except pika.exceptions.ChannelClosedByBroker:
        count = 0
    assert count == 0
