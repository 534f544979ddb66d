"""Delayed delivery on a real RabbitMQ (taskell/transport/delays.py): messages reach classic and
quorum task queues when due, never early; the delay levels are declared again after a reconnect.
Tasks submitted through ``conn.options`` and ``taskell call``: delays, etas, priority and
expiry on the message, and a delayed task aborted before it is due never runs.
(A broker restart with delayed tasks: tests/faults/test_fault_delays.py.)"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import SQUARE, Client, registry
from taskell import _wire
from taskell.transport import Delivery, Message, Transport, open_transport
from taskell.transport import delays as ladder
from tests.support import RESULT_TIMEOUT, RunCli, wait_until

LATE_OK = 0.5  # seconds a message may arrive after it is due, on a loaded 2-core machine
# Times here are on the wall clock (time.time), the one "due" follows: the broker's message TTL
# and the worker's taskell-due-ms. On these machines it has run up to 0.5 % faster than the
# monotonic clock, so a 1.5 s delay timed on the monotonic clock looked a few ms early.


@pytest.fixture
def transport(config: taskell.Config) -> Iterator[Transport]:
    transport = open_transport(config, name="test-delays")
    yield transport
    transport.close()


def task_queue(transport: Transport, queue_type: str) -> str:
    name = f"test.delays.{queue_type}.{uuid.uuid4().hex[:8]}"
    transport.declare_queue(name, arguments={"x-queue-type": queue_type, "x-expires": 120_000}).result(30)
    return name


def collect(transport: Transport, queue: str) -> dict[str, float]:
    """Arrival times (wall clock) by message id of what ``queue`` receives."""
    arrived: dict[str, float] = {}

    def on_message(delivery: Delivery) -> None:
        arrived[str(delivery.message.message_id)] = time.time()
        transport.ack(delivery.tag)

    transport.consume(queue, on_message).result(30)
    return arrived


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_delayed_messages_reach_the_queue_when_due_never_early(transport: Transport, queue_type: str) -> None:
    queue = task_queue(transport, queue_type)
    arrived = collect(transport, queue)
    transport.publish_delayed(queue, Message(b"warm-up", message_id="warm-up"), 0.01).result(60)
    wait_until(lambda: "warm-up" in arrived, 10, "the first delayed message (levels just declared)")
    sent: dict[str, tuple[float, float]] = {}
    for n, delay in enumerate([1.5, 0.2, 1.0, 0.001, 0.75, 1.234, 0.5, 0.0]):
        message = Message(b"x", message_id=f"m{n}", persistent=True, headers={"h": n}, priority=3)
        sent[f"m{n}"] = (time.time(), delay)
        transport.publish_delayed(queue, message, delay).result(30)
    wait_until(lambda: len(arrived) == len(sent) + 1, 10, "every delayed message")
    for name, (at, delay) in sent.items():
        assert delay <= arrived[name] - at < delay + LATE_OK, (name, delay, arrived[name] - at)


def test_a_delayed_message_keeps_its_properties(transport: Transport) -> None:
    queue = task_queue(transport, "classic")
    got: list[Message] = []

    def on_message(delivery: Delivery) -> None:
        got.append(delivery.message)
        transport.ack(delivery.tag)

    transport.consume(queue, on_message).result(30)
    sent = Message(
        b'{"x": 1}',
        type="demo.square",
        message_id="t1",
        reply_to="r",
        content_type="application/json",
        persistent=True,
        headers={"taskell-fingerprint": "abc"},
        priority=7,
    )
    transport.publish_delayed(queue, sent, 0.05).result(60)
    wait_until(lambda: len(got) == 1, 10, "the delayed message")
    [message] = got
    assert (message.body, message.type, message.message_id, message.reply_to) == (
        sent.body,
        "demo.square",
        "t1",
        "r",
    )
    assert (message.content_type, message.persistent, message.priority) == ("application/json", True, 7)
    assert message.headers["taskell-fingerprint"] == "abc"


def test_the_levels_are_quorum_queues(transport: Transport, amqp: Any) -> None:
    queue = task_queue(transport, "classic")
    transport.publish_delayed(queue, Message(b"", message_id="x"), 0.01).result(60)
    for level in (0, ladder.LEVELS - 1):
        # passive declares only check existence; an active one with other arguments would fail
        amqp.queue_declare(f"taskell.delay.{level}", durable=True, arguments=ladder.queue_arguments(level))


def test_a_delay_too_long_is_a_value_error(transport: Transport) -> None:
    queue = task_queue(transport, "classic")
    with pytest.raises(ValueError, match=r"8\.7 years"):
        transport.publish_delayed(queue, Message(b""), 300_000_000.0)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def vhost(broker: str) -> Iterator[str]:
    """A vhost of this test's own: for task queues of another type than the shared vhost's, or
    to drop every connection to it and delete the levels."""
    name = f"taskell-delays-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120, check=False)


def test_a_reconnect_declares_the_levels_again(vhost: str) -> None:
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    transport = open_transport(taskell.Config.from_url(url), name="test-delays")
    reconnected = threading.Event()
    transport.add_on_reconnect(reconnected.set)
    try:
        queue = task_queue(transport, "classic")
        arrived = collect(transport, queue)
        transport.publish_delayed(queue, Message(b"", message_id="before"), 0.01).result(60)
        wait_until(lambda: "before" in arrived, 10, "the first delayed message")
        # The levels vanish (as on a new node), then the connection drops.
        other = open_transport(taskell.Config.from_url(url), name="test-delete")
        try:
            for level in range(ladder.LEVELS):
                other.delete_queue(f"taskell.delay.{level}")
            other.declare_queue("", exclusive=True).result(60)  # after the deletes, in order
        finally:
            other.close()
        for pid in [
            line.split("\t")[0]
            for line in rabbitmqctl("list_connections", "pid", "vhost").splitlines()
            if line.endswith("\t" + vhost)
        ]:
            rabbitmqctl("close_connection", pid, "test")
        assert reconnected.wait(30)
        start = time.time()
        transport.publish_delayed(queue, Message(b"", message_id="after"), 0.3).result(60)
        wait_until(lambda: "after" in arrived, 10, "a delayed message after the reconnect")
        assert arrived["after"] - start >= 0.3
    finally:
        transport.close()


# Tasks


class Clock(Impl):
    """The demo handlers, noting when each ``square`` started (by its ``x``, wall clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: dict[int, list[float]] = {}

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        self.started.setdefault(x, []).append(time.time())
        return x * x


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_delayed_tasks_start_when_due_never_early(vhost: str, queue_type: str) -> None:
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    config = taskell.Config.load(None, env={}, url=url, queue_type=queue_type)
    clock = Clock()
    delays = {n: 0.1 + n * 0.15 for n in range(12)}
    with taskell.Worker(registry(clock), config, parallelism=4), taskell.connect(config=config) as conn:
        Client(conn.options(delay=0.01)).square(x=99).result(timeout=RESULT_TIMEOUT)  # levels declared
        submitted, handles = {}, []
        for n, delay in delays.items():
            submitted[n] = time.time()
            handles.append(Client(conn.options(delay=delay)).square(x=n))
        assert [h.result(timeout=RESULT_TIMEOUT) for h in handles] == [n * n for n in delays]
    for n, delay in delays.items():
        [started] = clock.started[n]
        assert delay <= started - submitted[n] < delay + LATE_OK, (n, delay, started - submitted[n])


def test_an_eta_holds_the_task_until_then(conn: taskell.Connection, start_worker: Any) -> None:
    clock = Clock()
    start_worker(parallelism=2, impl=clock)
    eta = datetime.now(UTC) + timedelta(seconds=1)
    handle = Client(conn.options(eta=eta)).square(x=4)
    assert handle.result(timeout=RESULT_TIMEOUT) == 16
    [started] = clock.started[4]
    assert datetime.fromtimestamp(started, UTC) >= eta - timedelta(milliseconds=5)


def test_a_task_message_carries_priority_and_expiry(conn: taskell.Connection, amqp: Any) -> None:
    handle = Client(conn.options(delay=0.2, priority=8, expires=60)).square(x=2)
    conn.flush(30)
    due = datetime.now(UTC) + timedelta(seconds=0.2)

    def get() -> Any:
        return amqp.basic_get("taskell.q1", auto_ack=True)

    wait_until(
        lambda: amqp.queue_declare("taskell.q1", passive=True).method.message_count == 1, 10, "the task"
    )
    _, props, body = get()
    assert (props.message_id, props.type, props.priority) == (handle.id, "demo.square", 8)
    expires_at = datetime.fromisoformat(props.headers[_wire.EXPIRES_HEADER])
    assert abs((expires_at - (due + timedelta(seconds=60))).total_seconds()) < 1
    assert props.headers[_wire.FINGERPRINT_HEADER]
    assert json.loads(body) == {"x": 2}


def test_a_delayed_task_aborted_before_it_is_due_never_runs(
    config: taskell.Config, conn: taskell.Connection
) -> None:
    clock = Clock()
    handle = Client(conn.options(delay=2)).square(x=6)
    conn.flush(30)
    # No worker is up: the abort is kept on the broker (abort_retention), and the worker that
    # starts afterwards refuses the task when it comes due.
    conn.abort(handle.id)
    with taskell.Worker(registry(clock), config, parallelism=2):
        with pytest.raises(taskell.TaskAborted):
            handle.result(timeout=RESULT_TIMEOUT)
        assert Client(conn).square(x=7).result(timeout=RESULT_TIMEOUT) == 49
    assert 6 not in clock.started


def test_a_delayed_task_aborted_while_a_worker_is_up_never_runs(
    conn: taskell.Connection, start_worker: Any
) -> None:
    clock = Clock()
    start_worker(parallelism=2, impl=clock)
    start = time.monotonic()
    handle = Client(conn.options(delay=1.5)).square(x=8)
    conn.abort(handle.id)
    with pytest.raises(taskell.TaskAborted):
        handle.result(timeout=RESULT_TIMEOUT)
    assert time.monotonic() - start >= 1.5  # refused when it came due, not before
    assert 8 not in clock.started


def test_call_with_a_delay_priority_and_expiry(taskell_cli: RunCli, worker: taskell.Worker) -> None:
    start = time.monotonic()
    proc = taskell_cli(
        "call",
        "tasks.schema.yaml",
        "square",
        '{"x": 5}',
        "--delay",
        "1s",
        "--priority",
        "3",
        "--expires",
        "1m",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "25"
    assert time.monotonic() - start >= 1.0
    eta = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    proc = taskell_cli("call", "tasks.schema.yaml", "square", '{"x": 6}', "--eta", eta, "--timeout", "30")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "36"


def test_a_header_amqp_cannot_hold_fails_the_publish_at_once(transport: Transport) -> None:
    queue = task_queue(transport, "classic")
    bad = Message(b"", message_id="bad", headers={"seconds": 1.5})  # pika writes no floats
    with pytest.raises(ValueError, match="cannot be encoded"):
        transport.publish("", queue, bad, mandatory=True).result(10)
    transport.publish("", queue, Message(b"", message_id="good"), mandatory=True).result(10)


def test_messages_for_a_deleted_queue_do_not_hold_up_the_others(vhost: str) -> None:
    url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    transport = open_transport(taskell.Config.from_url(url), name="test-delays")
    try:
        gone, kept = task_queue(transport, "classic"), task_queue(transport, "classic")
        # More than a level hands on at once (RabbitMQ's dead-letter worker prefetches 32):
        # retried where they are, they would block that level for minutes.
        for n in range(100):
            transport.publish_delayed(gone, Message(b"", message_id=f"g{n}"), 0.3).result(60)
        transport.delete_queue(gone)
        arrived = collect(transport, kept)
        start = time.time()
        for n in range(10):
            transport.publish_delayed(kept, Message(b"", message_id=f"k{n}"), 0.3).result(60)
        wait_until(lambda: len(arrived) == 10, 10, "the messages for the queue that exists")
        assert max(arrived.values()) - start < 0.3 + 2
        amqp = pika.BlockingConnection(pika.URLParameters(url))
        try:
            channel = amqp.channel()
            wait_until(
                lambda: channel.queue_declare(ladder.UNROUTABLE, passive=True).method.message_count == 100,
                10,
                "the messages for the deleted queue in taskell.delay.unroutable",
            )
        finally:
            amqp.close()
    finally:
        transport.close()


def test_a_delayed_task_released_early_is_held_until_due(transport: Transport, start_worker: Any) -> None:
    # As a broker that lost a level's TTL would do: the message reaches its queue before it is
    # due. The worker must put it back for the rest of its wait, not run it.
    clock = Clock()
    start_worker(parallelism=2, impl=clock)
    due = time.time() + 1.5
    message = _wire.task_message(
        SQUARE, str(uuid.uuid4()), b'{"x": 9}', None, headers={_wire.DUE_HEADER: int(due * 1000)}
    )
    transport.publish("", SQUARE.queue, message, mandatory=True).result(RESULT_TIMEOUT)
    wait_until(lambda: 9 in clock.started, RESULT_TIMEOUT, "the early task ran once due")
    [started] = clock.started[9]
    assert started >= due - 0.005, "it ran before it was due"


def test_a_task_released_early_from_the_levels_is_held_again_and_runs(
    transport: Transport, start_worker: Any
) -> None:
    # As above, but with the x-death history a message has when the levels release it: it must
    # enter them afresh. With that history on, RabbitMQ took its next expiry for a dead-letter
    # cycle and the task never ran.
    clock = Clock()
    start_worker(parallelism=2, impl=clock)
    due = time.time() + 1.5
    passed = datetime.now(UTC)
    deaths = [
        {
            "count": 1,
            "reason": "expired",
            "queue": ladder.level_name(level),
            "time": passed,
            "exchange": ladder.level_name(level),
            "routing-keys": [ladder.routing_key(2**ladder.LEVELS - 1, SQUARE.queue)],
        }
        for level in range(ladder.LEVELS)
    ]
    headers: dict[str, Any] = {
        _wire.DUE_HEADER: int(due * 1000),
        "x-death": deaths,
        "x-first-death-queue": ladder.level_name(ladder.LEVELS - 1),
        "x-first-death-reason": "expired",
        "x-first-death-exchange": ladder.level_name(ladder.LEVELS - 1),
        "x-last-death-queue": ladder.level_name(0),
        "x-last-death-reason": "expired",
        "x-last-death-exchange": ladder.level_name(0),
    }
    message = _wire.task_message(SQUARE, str(uuid.uuid4()), b'{"x": 11}', None, headers=headers)
    transport.publish("", SQUARE.queue, message, mandatory=True).result(RESULT_TIMEOUT)
    wait_until(lambda: 11 in clock.started, RESULT_TIMEOUT, "the early task ran once due")
    [started] = clock.started[11]
    assert started >= due - 0.005, "it ran before it was due"
