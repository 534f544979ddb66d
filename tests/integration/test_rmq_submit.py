"""Issue 3, points 1 and 2: the wire form of a submission, and progress / result on a handle."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any, TypeVar

import pika.exceptions  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import SLEEP, SUM, Client
from tests.support import RESULT_TIMEOUT, StartWorker

T = TypeVar("T")


def collect_progress(handle: taskell.TaskHandle[T, Any], timeout: float = RESULT_TIMEOUT) -> list[T]:
    """Every value ``handle.progress()`` yields, failing (not hanging) if it does not end in time."""
    values: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            values.extend(handle.progress())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"progress() of {handle!r} did not end within {timeout} s"
    if errors:
        raise errors[0]
    return values


def queue_exists(amqp: Any, queue: str) -> bool:
    """Passive declare on a throw-away channel (a 404 closes the channel it happens on)."""
    channel = amqp.connection.channel()
    try:
        channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404, exc
        return False
    channel.close()
    return True


def test_submission_has_every_wire_property(conn: taskell.Connection, amqp: Any) -> None:
    assert not queue_exists(amqp, SUM.queue), "the fixture should have deleted the queue"
    handle = Client(conn).sum(numbers=[1, 2, 3])
    conn.flush(10)

    method, props, body = amqp.basic_get(SUM.queue, auto_ack=True)
    assert method is not None, f"no message on {SUM.queue}: the client did not declare it or publish"
    assert props.type == "demo.sum"
    assert props.message_id == handle.id
    assert str(uuid.UUID(handle.id)) == handle.id  # canonical lowercase UUID
    assert props.content_type == "application/json"
    assert props.delivery_mode == 2
    assert props.headers is not None
    assert props.headers.get("taskell-fingerprint") == SUM.fingerprint
    assert len(SUM.fingerprint) == 64 and int(SUM.fingerprint, 16) >= 0
    assert props.reply_to == conn.reply_queue and props.reply_to
    assert json.loads(body) == {"numbers": [1, 2, 3]}
    assert amqp.basic_get(SUM.queue, auto_ack=True)[0] is None, "exactly one message per submission"


def test_task_queue_is_durable_and_declared_by_the_client(conn: taskell.Connection, amqp: Any) -> None:
    assert not queue_exists(amqp, SUM.queue)
    Client(conn).sum(numbers=[1])
    conn.flush(10)
    assert queue_exists(amqp, SUM.queue)
    # Re-declaring it non-durable must be refused by the broker: the queue is durable.
    channel = amqp.connection.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
        channel.queue_declare(SUM.queue, durable=False, arguments={"x-queue-type": "classic"})
    assert info.value.reply_code == 406
    assert "durable" in str(info.value)


def test_task_submitted_before_any_worker_waits_for_one(
    conn: taskell.Connection, start_worker: StartWorker, amqp: Any
) -> None:
    handle = Client(conn).sum(numbers=[4, 5, 6])
    conn.flush(10)
    time.sleep(0.3)  # a window for anything to pick the task up (nothing may)
    assert not handle.done()
    assert handle.latest_progress is None
    assert amqp.queue_declare(SUM.queue, passive=True).method.message_count == 1
    start_worker(parallelism=1)
    assert handle.result(timeout=RESULT_TIMEOUT) == 15


def test_progress_is_ordered_ends_with_the_task_and_replays(
    conn: taskell.Connection, start_worker: StartWorker
) -> None:
    start_worker(parallelism=2, impl=Impl(delay=0.002))
    client = Client(conn)
    handle = client.sum(numbers=list(range(1, 301)))
    values = collect_progress(handle)  # ends only because the task ends
    assert handle.done(), "progress() ended before the task did"
    assert values, "no progress at all"
    assert all(isinstance(v, int) for v in values)
    assert values == sorted(values), f"progress out of order: {values}"
    assert values[-1] == 100, f"the last value (100) was not delivered: {values[-5:]}"
    assert len(values) > 1, "a 300-step task with delays should report more than once"
    assert collect_progress(handle) == values, "a second progress() must replay the same values"
    assert handle.latest_progress == 100
    total: int = handle.result(timeout=RESULT_TIMEOUT)
    assert type(total) is int and total == sum(range(1, 301))

    # Without delay values may be coalesced, but the last one is always delivered.
    fast = [client.sum(numbers=list(range(n))) for n in range(1, 40)]
    for n, h in enumerate(fast, start=1):
        got = collect_progress(h)
        assert got and got[-1] == 100 and got == sorted(got), (n, got)
        assert h.result(timeout=RESULT_TIMEOUT) == sum(range(n))


def test_result_timeout_raises_builtin_timeout_error_and_the_task_goes_on(
    conn: taskell.Connection, worker: taskell.Worker
) -> None:
    handle = Client(conn).sleep(seconds=1.5)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        handle.result(timeout=0.3)
    assert type(info.value) is TimeoutError
    assert not isinstance(info.value, taskell.TaskellError)
    assert time.monotonic() - started < 1.4, "result(timeout) waited longer than asked"
    assert not handle.done()
    assert handle.result(timeout=RESULT_TIMEOUT) == 1.5
    assert time.monotonic() - started >= 1.4
    progress = handle.latest_progress
    assert progress is not None and 0 <= progress <= 1.5
    assert SLEEP.name == handle.task == "demo.sleep"
