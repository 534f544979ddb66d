"""Per-call submission options (``conn.options``) and what a task message carries, on the
in-memory broker: delays and etas held by the broker, also after dependencies; priority and
expiry on the message, per call over the schema's; bad options refused naming the option.
The same on RabbitMQ: tests/integration/test_rmq_delays.py."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import taskell
from examples.worker import Impl
from generated.demo import SQUARE, Client, Tree, registry
from taskell import _wire
from taskell._options import SubmitOptions
from taskell.transport import Delivery, Message
from taskell.transport.memory import MemoryBroker, MemoryTransport
from tests.support import wait_until

_names = itertools.count()


class Clock(Impl):
    """The demo handlers, noting when ``square`` and ``total`` start and ``sum`` ends."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        self.at[f"square {x}"] = time.monotonic()
        return x * x

    def total(self, ctx: taskell.Context[None], parts: list[int]) -> int:
        self.at["total"] = time.monotonic()
        return sum(parts)

    def sum(self, ctx: taskell.Context[int], numbers: list[int]) -> int:
        time.sleep(0.2)  # still running when its dependent is submitted
        self.at["sum"] = time.monotonic()
        return sum(numbers)


@pytest.fixture
def config() -> taskell.Config:
    return taskell.Config.load(None, env={}, url=f"memory://options-{next(_names)}", parallelism=2)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def conn(config: taskell.Config, clock: Clock) -> Iterator[taskell.Connection]:
    with taskell.Worker(registry(clock), config), taskell.connect(config=config) as conn:
        yield conn


def test_a_delayed_task_starts_when_due(conn: taskell.Connection, clock: Clock) -> None:
    start = time.monotonic()
    later = Client(conn.options(delay=0.4)).square(x=2)
    sooner = Client(conn.options(delay=timedelta(milliseconds=100))).square(x=3)
    now = Client(conn).square(x=4)
    assert (now.result(timeout=10), sooner.result(timeout=10), later.result(timeout=10)) == (16, 9, 4)
    assert clock.at["square 4"] < clock.at["square 3"] < clock.at["square 2"]
    assert clock.at["square 3"] - start >= 0.1
    assert clock.at["square 2"] - start >= 0.4


def test_an_eta_holds_the_task_until_then(conn: taskell.Connection, clock: Clock) -> None:
    start = time.monotonic()
    eta = datetime.now(UTC) + timedelta(seconds=0.3)
    assert Client(conn.options(eta=eta)).square(x=5).result(timeout=10) == 25
    assert clock.at["square 5"] - start >= 0.29  # the clocks differ by the conversion only
    past = datetime.now(UTC) - timedelta(hours=1)
    assert Client(conn.options(eta=past)).square(x=6).result(timeout=10) == 36


def test_fire_and_forget_through_a_view(conn: taskell.Connection, clock: Clock) -> None:
    start = time.monotonic()
    task_id = taskell.fire(Client(conn.options(delay=0.2)).square, x=7)
    assert task_id
    wait_until(lambda: "square 7" in clock.at, 10, "the fired task")
    assert clock.at["square 7"] - start >= 0.2


def test_a_delay_counts_from_when_the_dependencies_are_done(conn: taskell.Connection, clock: Clock) -> None:
    numbers = Client(conn).sum(numbers=[1, 2])
    total = Client(conn.options(delay=0.4)).total(parts=[numbers, 10])
    assert total.result(timeout=10) == 13
    assert clock.at["total"] - clock.at["sum"] >= 0.4


def test_bad_options_are_refused_naming_the_option(conn: taskell.Connection) -> None:
    eta = datetime.now(UTC)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"delay": 1, "eta": eta}, "delay or eta"),
        ({"eta": datetime.now()}, "timezone-aware"),  # naive
        ({"eta": "2030-01-01T00:00:00+00:00"}, "eta must be a datetime"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"priority": True}, "priority"),
        ({"priority": 2.0}, "priority"),
        ({"delay": -1}, "delay must be a duration >= 0"),
        ({"delay": timedelta(seconds=-1)}, "delay must be a duration >= 0"),
        ({"delay": float("nan")}, "delay"),
        ({"delay": "5s"}, "delay must be seconds or a timedelta"),
        ({"delay": 10 * 365 * 86400}, "longest"),
        ({"expires": -5}, "expires must be a duration >= 0"),
        ({"expires": 0}, "expires must be more than 0"),
    ]
    for options, message in bad:
        with pytest.raises(ValueError, match=message):
            conn.options(**options)
    far = conn.options(eta=datetime.now(UTC) + timedelta(days=365 * 9))
    with pytest.raises(ValueError, match="further away"):
        Client(far).square(x=1)


def test_view_options_combine() -> None:
    base = SubmitOptions.make(delay=5, priority=1, expires=60)
    assert base.combine(SubmitOptions.make(priority=3)) == SubmitOptions(5.0, None, 3, 60.0)
    eta = datetime.now(UTC)
    assert base.combine(SubmitOptions.make(eta=eta)) == SubmitOptions(None, eta, 1, 60.0)
    assert SubmitOptions.make(eta=eta).combine(SubmitOptions.make(delay=1)).eta is None


def test_a_view_of_a_view_keeps_the_connection(conn: taskell.Connection) -> None:
    view = conn.options(priority=2).options(delay=1)
    assert isinstance(view, taskell.ConnectionView)
    assert view.connection is conn
    assert "priority" in repr(view) and "delay" in repr(view)


# What a task message carries


def test_priority_per_call_else_the_schemas_else_none() -> None:
    assert _wire.task_message(SQUARE, "t", b"{}", None).priority is None
    spec = dataclasses.replace(SQUARE, priority=4)
    assert _wire.task_message(spec, "t", b"{}", None).priority == 4
    assert _wire.task_message(spec, "t", b"{}", None, priority=0).priority == 0


def test_expires_at_is_when_the_task_is_due_plus_expires() -> None:
    assert _wire.EXPIRES_HEADER not in _wire.task_message(SQUARE, "t", b"{}", None).headers
    spec = dataclasses.replace(SQUARE, expires=60.0)
    before = datetime.now(UTC)
    from_spec = _wire.task_message(spec, "t", b"{}", None).headers[_wire.EXPIRES_HEADER]
    per_call = _wire.task_message(spec, "t", b"{}", None, expires=10, delay=100).headers[_wire.EXPIRES_HEADER]
    after = datetime.now(UTC)
    assert str(from_spec).endswith("+00:00")
    at = datetime.fromisoformat(str(from_spec))
    assert before + timedelta(seconds=60) - timedelta(milliseconds=1) <= at <= after + timedelta(seconds=60)
    at = datetime.fromisoformat(str(per_call))
    assert before + timedelta(seconds=110) - timedelta(milliseconds=1) <= at <= after + timedelta(seconds=110)


def test_extra_headers_are_carried() -> None:
    before = _wire.now_ms()
    message = _wire.task_message(SQUARE, "t", b"{}", "r", headers={_wire.ATTEMPT_HEADER: 2})
    assert before <= message.headers.pop(_wire.SUBMITTED_HEADER) <= _wire.now_ms()
    assert message.headers == {_wire.FINGERPRINT_HEADER: SQUARE.fingerprint, _wire.ATTEMPT_HEADER: 2}


def raw_queue(config: taskell.Config, queue: str) -> tuple[MemoryTransport, list[Message]]:
    """A plain consumer of ``queue`` on the memory broker, collecting the task messages."""
    transport = MemoryTransport(MemoryBroker.named(config.broker_urls()[0][len("memory://") :]))
    transport.declare_queue(queue).result()
    got: list[Message] = []

    def on_message(delivery: Delivery) -> None:
        got.append(delivery.message)
        transport.ack(delivery.tag)

    transport.consume(queue, on_message).result()
    return transport, got


def test_submitted_and_joined_tasks_carry_priority_and_expiry(config: taskell.Config) -> None:
    # A worker for taskell.default only: it runs ``sleep`` and the joiner, and leaves the
    # tasks of taskell.q1 to the plain consumer.
    worker_config = config.model_copy(update={"queues": ["taskell.default"]})
    transport, got = raw_queue(config, "taskell.q1")
    try:
        with taskell.Worker(registry(Impl()), worker_config), taskell.connect(config=config) as conn:
            view = conn.options(priority=7, expires=30)
            Client(view).square(x=1)
            tree = Client(conn).tree_sum(tree=Tree(value=5))
            Client(view.options(delay=0.1)).total(parts=[tree])
            wait_until(lambda: len(got) == 2, 10, "both tasks on taskell.q1")
    finally:
        transport.close()
    square, total = got
    assert (square.type, total.type) == ("demo.square", "demo.total")
    for message in (square, total):
        assert message.priority == 7
        expires_at = datetime.fromisoformat(str(message.headers[_wire.EXPIRES_HEADER]))
        assert timedelta(seconds=25) < expires_at - datetime.now(UTC) <= timedelta(seconds=30.2)
        assert message.headers[_wire.FINGERPRINT_HEADER]
        assert message.persistent and message.reply_to
    assert total.body == b'{"parts":[5]}'


def test_a_delay_past_abort_retention_is_warned_once(
    config: taskell.Config, caplog: pytest.LogCaptureFixture
) -> None:
    config = config.model_copy(update={"abort_retention": 1.0})
    with taskell.connect(config=config) as conn:
        view = Client(conn.options(delay=5))
        view.square(x=1)
        view.square(x=2)
        Client(conn.options(delay=0.5)).square(x=3)
    warned = [r for r in caplog.records if "abort_retention" in r.getMessage()]
    assert len(warned) == 1


def test_a_view_is_safe_from_many_threads(conn: taskell.Connection) -> None:
    view = Client(conn.options(delay=0.05))
    handles: list[Any] = []
    threads = [threading.Thread(target=lambda n=n: handles.append(view.square(x=n))) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(h.result(timeout=10) for h in handles) == sorted(n * n for n in range(20))


def test_a_join_record_holds_its_options_in_whole_milliseconds() -> None:
    eta = datetime(2030, 1, 31, 9, 0, tzinfo=UTC)
    headers = _wire.join_options(delay=0.2001, eta=eta, expires=1.5)
    assert headers == {
        _wire.DELAY_HEADER: 201,  # rounded up: never early
        _wire.ETA_HEADER: "2030-01-31T09:00:00.000+00:00",
        _wire.EXPIRES_AFTER_HEADER: 1500,
    }
    assert all(isinstance(v, (int, str)) for v in headers.values())  # what AMQP tables hold
    record = Message(
        b"{}", message_id="t", reply_to="r", headers={**headers, _wire.TASK_HEADER: "demo.square"}
    )
    before = datetime.now(UTC)
    task, delay = _wire.joined_task(record, b'{"x":1}')
    assert 0 < delay <= (eta - before).total_seconds()
    assert (task.type, task.message_id, task.reply_to, task.body) == ("demo.square", "t", "r", b'{"x":1}')
