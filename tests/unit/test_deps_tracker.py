"""Client-side dependency tracking (``taskell._deps.DependencyTracker``) on the in-memory
broker: the join record and binding a pending dependency gets, dependencies resolved on the
spot, the client's forwards, and the sync of reply queues at close. Replies are published by
the test where a worker would, so each step is seen alone; the last test runs a worker.
The same protocol on RabbitMQ is proven in tests/integration/test_rmq_deps.py."""

from __future__ import annotations

import ast
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskell
from examples.worker import Impl
from generated.demo import FAIL, SQUARE, TOTAL, Client, registry
from taskell import _wire
from taskell.handle import when_done
from taskell.transport import Delivery, Message
from taskell.transport.memory import MemoryBroker, MemoryTransport

_names = itertools.count()
WAIT = 5.0


@pytest.fixture
def name() -> str:
    return f"deps-{next(_names)}"  # a fresh broker per test


@pytest.fixture
def config(name: str) -> taskell.Config:
    return taskell.Config.load(None, env={}, url=f"memory://{name}", parallelism=2)


@pytest.fixture
def broker(name: str) -> Iterator[MemoryTransport]:
    """A connection of the test's own to the broker, to play the worker's part."""
    transport = MemoryTransport(MemoryBroker.named(name), name="test")
    yield transport
    transport.close()


@pytest.fixture
def conn(config: taskell.Config) -> Iterator[taskell.Connection]:
    with taskell.connect(config=config) as conn:
        yield conn


class Reader:
    """Consumes one queue and keeps every message that arrives."""

    def __init__(self, transport: MemoryTransport, queue: str) -> None:
        self.messages: list[Message] = []
        self._arrived = threading.Condition()
        transport.consume(queue, self._on_message, auto_ack=True).result()

    def _on_message(self, delivery: Delivery) -> None:
        with self._arrived:
            self.messages.append(delivery.message)
            self._arrived.notify_all()

    def wait_for(self, count: int) -> list[Message]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= count, WAIT):
                raise AssertionError(f"{len(self.messages)} messages arrived, expected {count}")
            return list(self.messages)


def send_reply(
    broker: MemoryTransport, conn: taskell.Connection, kind: str, task_id: str, body: bytes
) -> None:
    broker.publish("", conn.reply_queue, _wire.reply(kind, task_id, body), mandatory=True).result()


def hold_thread(conn: taskell.Connection, broker: MemoryTransport, seconds: float) -> None:
    """Keep ``conn``'s thread busy for ``seconds`` from now, so replies sent next wait in its
    reply queue: the thread runs a done callback that sleeps."""
    handle = Client(conn).square(x=0)
    when_done(handle, lambda: time.sleep(seconds))
    send_reply(broker, conn, _wire.RESULT, handle.id, b"0")


def test_a_pending_dependency_gets_a_join_record_and_a_binding(
    conn: taskell.Connection, broker: MemoryTransport
) -> None:
    demo = Client(conn)
    a, c = demo.square(x=2), demo.square(x=3)  # no worker: both stay pending
    b = demo.total(parts=[1, a], after=[c])
    partition = Reader(broker, _wire.join_queue(b.id))
    [record] = partition.wait_for(1)
    assert (record.type, record.message_id, record.reply_to) == (_wire.JOIN, b.id, conn.reply_queue)
    assert json.loads(record.body) == {"parts": [1, None]}
    assert record.persistent
    headers = record.headers
    assert (headers[_wire.TASK_HEADER], headers[_wire.QUEUE_HEADER]) == ("demo.total", TOTAL.queue)
    assert headers[_wire.FINGERPRINT_HEADER] == TOTAL.fingerprint
    assert headers[_wire.DEPS_HEADER] == [a.id, c.id]
    assert json.loads(headers[_wire.REFS_HEADER]) == [[["parts", 1], a.id]]

    # The partition is bound to both dependencies' outcome events, and to nothing else.
    for dep in (a, c, b):
        event = _wire.outcome(dep.id, "demo.square", _wire.RESULT, b"4")
        broker.publish(_wire.OUTCOMES_EXCHANGE, dep.id, event, mandatory=False).result()
    assert [m.correlation_id for m in partition.wait_for(3)[1:]] == [a.id, c.id]


def test_an_outcome_reaching_the_client_is_forwarded_to_the_partition(
    conn: taskell.Connection, broker: MemoryTransport
) -> None:
    demo = Client(conn)
    a = demo.square(x=2)
    b = demo.square(x=a)
    partition = Reader(broker, _wire.join_queue(b.id))
    send_reply(broker, conn, _wire.RESULT, a.id, b"4")
    assert a.result(timeout=WAIT) == 4
    forward = partition.wait_for(2)[1]
    assert (forward.type, forward.correlation_id, forward.body) == (_wire.OUTCOME, a.id, b"4")
    assert forward.headers == {_wire.KIND_HEADER: _wire.RESULT, _wire.TASK_HEADER: "demo.square"}


def test_dependencies_that_ended_are_resolved_on_the_spot(
    conn: taskell.Connection, broker: MemoryTransport, name: str
) -> None:
    demo = Client(conn)
    a = demo.square(x=2)
    send_reply(broker, conn, _wire.RESULT, a.id, b"4")
    assert a.result(timeout=WAIT) == 4
    b = demo.total(parts=[a, 1, a])
    tasks = Reader(broker, TOTAL.queue)  # square's queue too
    assert [(m.message_id, json.loads(m.body)) for m in tasks.wait_for(2)] == [
        (a.id, {"x": 2}),
        (b.id, {"parts": [4, 1, 4]}),
    ]
    assert MemoryBroker.named(name).queue_depth(_wire.join_queue(b.id)) == 0  # no join


def test_a_dependency_that_failed_fails_the_task_without_sending_it(
    conn: taskell.Connection, broker: MemoryTransport, name: str
) -> None:
    demo = Client(conn)
    a = demo.fail(message="nope")
    send_reply(broker, conn, _wire.FAILED, a.id, _wire.error_body("ValueError", "nope"))
    with pytest.raises(taskell.TaskFailed):
        a.result(timeout=WAIT)
    b = demo.square(x=2, after=[a])
    with pytest.raises(taskell.DependencyFailed) as info:
        b.result(timeout=0)
    assert (info.value.task_id, info.value.dependency_id) == (b.id, a.id)
    assert isinstance(info.value.cause, taskell.TaskFailed) and info.value.cause.message == "nope"
    assert SQUARE.queue != FAIL.queue
    assert MemoryBroker.named(name).queue_depth(FAIL.queue) == 1  # a, still there
    assert MemoryBroker.named(name).queue_depth(SQUARE.queue) == 0
    assert MemoryBroker.named(name).queue_depth(_wire.join_queue(b.id)) == 0


def test_close_first_handles_the_replies_queued_so_their_outcomes_are_forwarded(
    config: taskell.Config, broker: MemoryTransport
) -> None:
    """The reply of a dependency is in the reply queue, not yet handled, when the client
    closes: closing syncs the reply queue, so the outcome is forwarded before it returns."""
    conn = taskell.connect(config=config)
    demo = Client(conn)
    a = demo.square(x=2)
    b = demo.square(x=a)
    partition = Reader(broker, _wire.join_queue(b.id))
    hold_thread(conn, broker, 0.3)
    send_reply(broker, conn, _wire.RESULT, a.id, b"4")
    conn.close()
    record, forward = partition.wait_for(2)
    assert (record.type, record.message_id) == (_wire.JOIN, b.id)
    assert (forward.type, forward.correlation_id) == (_wire.OUTCOME, a.id)


def test_close_syncs_the_reply_queue_of_the_connection_owning_a_dependency(
    config: taskell.Config, conn: taskell.Connection, broker: MemoryTransport
) -> None:
    """``a`` belongs to ``conn``; ``b`` (another connection's) waits on it. Closing b's
    connection makes sure ``conn`` handled a's reply, so the outcome is forwarded."""
    a = Client(conn).square(x=2)
    other = taskell.connect(config=config)
    b = Client(other).square(x=a)
    partition = Reader(broker, _wire.join_queue(b.id))
    hold_thread(conn, broker, 0.3)
    send_reply(broker, conn, _wire.RESULT, a.id, b"4")
    other.close()
    record, forward = partition.wait_for(2)
    assert (record.type, record.message_id) == (_wire.JOIN, b.id)
    assert (forward.type, forward.correlation_id) == (_wire.OUTCOME, a.id)


def test_dag_on_a_worker(config: taskell.Config) -> None:
    with taskell.Worker(registry(Impl()), config), taskell.connect(config=config) as conn:
        demo = Client(conn)
        a = demo.square(x=2)
        b = demo.square(x=a)
        c = demo.total(parts=[a, 10, b], after=[demo.sleep(seconds=0.05)])
        assert c.result(timeout=WAIT) == 4 + 10 + 16
        failed = demo.square(x=demo.square(x=2, after=[demo.fail(message="root")]))
        with pytest.raises(taskell.DependencyFailed) as info:
            failed.result(timeout=WAIT)
        assert isinstance(info.value.cause, taskell.TaskFailed) and info.value.cause.message == "root"


def test_handle_and_dependency_tracking_do_not_import_the_connection() -> None:
    """handle <- _deps <- connection, in one direction only (even for annotations)."""
    package = Path(taskell.__file__).parent

    def imported(module: str) -> set[str]:
        tree = ast.parse((package / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names |= {node.module} if node.module else {alias.name for alias in node.names}
        return names

    assert not imported("handle") & {"connection", "_deps"}
    assert not imported("_deps") & {"connection"}
