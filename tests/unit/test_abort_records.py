"""Abort records on the in-memory broker (what users' unit tests run on): an abort sent while no
worker is up still stops the queued task, within ``abort_retention``; and the stream semantics
of the memory broker they rely on. tests/integration/test_rmq_abort.py proves the same on
RabbitMQ."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import taskell
from examples.worker import Impl
from generated.demo import Client, registry
from taskell import _abort_log
from taskell.transport import Delivery, Message
from taskell.transport.memory import MemoryBroker, MemoryTransport

_names = itertools.count()


def memory_config(**overrides: Any) -> taskell.Config:
    # A fresh broker per test: memory://NAME brokers are shared by name within a process.
    return taskell.Config.load(None, env={}, url=f"memory://aborts-{next(_names)}", **overrides)


class Recording(Impl):
    """Remembers the ids of the ``sleep`` tasks it started."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
        self.started.append(ctx.task_id)
        return super().sleep(ctx, seconds)


def test_an_abort_sent_before_any_worker_stops_the_queued_task() -> None:
    config = memory_config()
    impl = Recording()
    with taskell.connect(config=config) as conn:
        client = Client(conn)
        doomed, kept = client.sleep(seconds=0.01), client.sleep(seconds=0.01)
        conn.flush(5)
        assert doomed.abort() is True
        with taskell.Worker(registry(impl), config):
            with pytest.raises(taskell.TaskAborted, match="before it started"):
                doomed.result(timeout=5)
            assert kept.result(timeout=5) == 0.01
    assert impl.started == [kept.id]


def test_a_worker_started_after_another_read_the_record_refuses_the_task_too() -> None:
    config = memory_config()
    impl = Recording()
    with taskell.connect(config=config) as conn:
        handle = Client(conn).sleep(seconds=0.01)
        conn.flush(5)
        conn.abort(handle.id)
        with taskell.Worker(registry(Impl()), config, queues=["taskell.q1"]):
            time.sleep(0.1)
            assert not handle.done()
            with (
                taskell.Worker(registry(impl), config, queues=["taskell.default"]),
                pytest.raises(taskell.TaskAborted),
            ):
                handle.result(timeout=5)
    assert impl.started == []


def test_an_abort_older_than_the_retention_is_forgotten() -> None:
    config = memory_config(abort_retention=0.5)
    impl = Recording()
    with taskell.connect(config=config) as conn:
        handle = Client(conn).sleep(seconds=0.01)
        conn.flush(5)
        conn.abort(handle.id)
        time.sleep(0.7)
        with taskell.Worker(registry(impl), config):
            assert handle.result(timeout=5) == 0.01
    assert impl.started == [handle.id]


def test_a_worker_ignores_records_stamped_older_than_the_retention() -> None:
    """The broker may hand out a few records older than the offset asked for (RabbitMQ reads
    whole chunks): the worker checks each record's own time."""
    config = memory_config(abort_retention=60)
    impl = Recording()
    with taskell.connect(config=config) as conn:
        stale, recent = Client(conn).sleep(seconds=0.01), Client(conn).sleep(seconds=0.01)
        conn.flush(5)
        conn.abort(recent.id)  # declares the stream
        record = {"task_id": stale.id, "at": time.time() - 61}
        message = Message(body=json.dumps(record).encode(), type=_abort_log.RECORD, message_id=stale.id)
        conn._transport.publish("", _abort_log.stream_name(config), message, mandatory=True).result()
        with taskell.Worker(registry(impl), config):
            with pytest.raises(taskell.TaskAborted):
                recent.result(timeout=5)
            assert stale.result(timeout=5) == 0.01
    assert impl.started == [stale.id]


def test_with_no_retention_no_record_is_kept() -> None:
    config = memory_config(abort_retention=0)
    broker = MemoryBroker.named(config.broker_url()[len("memory://") :])
    impl = Recording()
    with taskell.connect(config=config) as conn:
        handle = Client(conn).sleep(seconds=0.01)
        conn.flush(5)
        conn.abort(handle.id)  # reaches nobody
        with taskell.Worker(registry(impl), config):
            assert handle.result(timeout=5) == 0.01
    assert impl.started == [handle.id]
    assert _abort_log.stream_name(config) not in broker._queues


# The memory broker's streams


@pytest.fixture
def transport() -> Iterator[MemoryTransport]:
    transport = MemoryTransport(MemoryBroker())
    yield transport
    transport.close()


def read(transport: MemoryTransport, queue: str, offset: Any, expected: int) -> list[str]:
    """Consume ``queue`` from ``offset`` and return the ids of the first ``expected`` messages."""
    got: list[Delivery] = []
    enough = threading.Event()

    def on_message(delivery: Delivery) -> None:
        got.append(delivery)
        transport.ack(delivery.tag)
        if len(got) >= expected:
            enough.set()

    arguments = None if offset is None else {"x-stream-offset": offset}
    transport.consume(queue, on_message, arguments=arguments).result()
    assert expected == 0 or enough.wait(5), [d.message.message_id for d in got]
    time.sleep(0.05)  # nothing more comes
    return [str(d.message.message_id) for d in got]


def publish(transport: MemoryTransport, queue: str, *ids: str, body: bytes = b"x") -> None:
    for message_id in ids:
        transport.publish("", queue, Message(body=body, message_id=message_id), mandatory=True).result()


def test_every_stream_consumer_reads_from_its_offset(transport: MemoryTransport) -> None:
    transport.declare_queue("s", arguments={"x-queue-type": "stream"}).result()
    publish(transport, "s", "a", "b")
    before_c = datetime.now(UTC)
    time.sleep(0.01)
    publish(transport, "s", "c")
    assert read(transport, "s", "first", 3) == ["a", "b", "c"]
    assert read(transport, "s", 1, 2) == ["b", "c"]
    assert read(transport, "s", before_c, 1) == ["c"]
    assert read(transport, "s", "last", 1) == ["c"]
    assert read(transport, "s", None, 0) == []  # "next", the default
    with pytest.raises(taskell.BrokerUnavailable, match="x-stream-offset"):
        transport.consume("s", lambda d: None, arguments={"x-stream-offset": "soon"}).result()


def test_a_stream_follows_new_messages_and_keeps_them(transport: MemoryTransport) -> None:
    transport.declare_queue("s", arguments={"x-queue-type": "stream"}).result()
    got: list[str] = []
    transport.consume("s", lambda d: got.append(str(d.message.message_id)), arguments={}).result()
    publish(transport, "s", "a")
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got == ["a"]
    assert read(transport, "s", "first", 1) == ["a"]  # reading consumed nothing


def test_a_stream_drops_what_is_past_its_age_or_size(transport: MemoryTransport) -> None:
    transport.declare_queue("aged", arguments={"x-queue-type": "stream", "x-max-age": "1s"}).result()
    publish(transport, "aged", "old")
    time.sleep(1.1)
    publish(transport, "aged", "new")
    assert read(transport, "aged", "first", 1) == ["new"]
    sized = {"x-queue-type": "stream", "x-max-length-bytes": 25}
    transport.declare_queue("sized", arguments=sized).result()
    publish(transport, "sized", "1", "2", "3", body=b"0123456789")
    assert read(transport, "sized", "first", 2) == ["2", "3"]
    with pytest.raises(taskell.BrokerUnavailable, match="x-max-age"):
        transport.declare_queue("bad", arguments={"x-queue-type": "stream", "x-max-age": "1 day"}).result()


def test_the_record_stream_keeps_aborts_for_the_retention() -> None:
    config = memory_config(abort_retention=90000)
    broker = MemoryBroker.named(config.broker_url()[len("memory://") :])
    with taskell.connect(config=config) as conn:
        conn.abort("t-1")
    stream = broker._queues[_abort_log.stream_name(config)]
    assert stream.log is not None and stream.log.max_age == 90000
    assert stream.log.max_bytes == _abort_log.MAX_BYTES
    assert [m.message_id for _, _, m in stream.log.entries] == ["t-1"]
    assert _abort_log.stream_name(config) == "taskell.abort.log"
