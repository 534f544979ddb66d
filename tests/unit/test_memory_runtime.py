"""The runtime on the in-memory broker (what users' own unit tests run on): submit, progress,
results, errors, abort, dead letters. The same behaviour on RabbitMQ is proven in
tests/integration/."""

from __future__ import annotations

import gc
import itertools
import threading
import time
from collections.abc import Iterator

import pytest

import taskell
from examples.worker import Impl
from generated.demo import SUM, Client, registry
from taskell.transport import Delivery, Message
from taskell.transport.memory import MemoryBroker, MemoryTransport
from tests.support import wait_until

_names = itertools.count()


@pytest.fixture
def config() -> taskell.Config:
    # A fresh broker per test: memory://NAME brokers are shared by name within a process.
    return taskell.Config.load(None, env={}, url=f"memory://unit-{next(_names)}", parallelism=2)


@pytest.fixture
def demo(config: taskell.Config) -> Iterator[Client]:
    with taskell.Worker(registry(Impl()), config), taskell.connect(config=config) as conn:
        yield Client(conn)


def test_result_and_progress_in_order(demo: Client) -> None:
    handle = demo.sum(numbers=list(range(1, 201)))
    seen = list(handle.progress())
    assert handle.result(timeout=10) == sum(range(1, 201))
    assert seen == sorted(seen) and seen[-1] == 100
    assert list(handle.progress()) == seen  # replayed
    assert handle.latest_progress == 100
    assert handle.done()


def test_remote_error_keeps_worker_serving(demo: Client) -> None:
    with pytest.raises(taskell.TaskFailed) as info:
        demo.fail(message="nope").result(timeout=10)
    assert (info.value.error_type, info.value.message, info.value.task) == ("ValueError", "nope", "demo.fail")
    assert "raise ValueError" in info.value.traceback
    assert demo.square(x=3).result(timeout=10) == 9


def test_result_timeout_is_builtin_and_task_goes_on(demo: Client) -> None:
    handle = demo.sleep(seconds=0.3)
    with pytest.raises(TimeoutError):
        handle.result(timeout=0.05)
    assert handle.result(timeout=10) == 0.3


def test_abort_running_python_handler(demo: Client) -> None:
    handle = demo.sleep(seconds=30)
    next(iter(handle.progress()))  # it is running
    started = time.monotonic()
    assert handle.abort() is True
    with pytest.raises(taskell.TaskAborted):
        handle.result(timeout=5)
    assert time.monotonic() - started < 1
    assert handle.abort() is False  # finished: a no-op
    assert demo.square(x=4).result(timeout=10) == 16  # the slot is free again


def test_abort_queued_task_never_starts(config: taskell.Config) -> None:
    calls: list[float] = []

    class Recording(Impl):
        def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
            calls.append(seconds)
            return super().sleep(ctx, seconds)

    with taskell.Worker(registry(Recording()), config, parallelism=1), taskell.connect(config=config) as conn:
        demo = Client(conn)
        blocker, queued = demo.sleep(seconds=0.5), demo.sleep(seconds=7)
        wait_until(lambda: blocker.latest_progress is not None, 10, "the blocker running")
        conn.abort(queued.id)
        with pytest.raises(taskell.TaskAborted):
            queued.result(timeout=10)
        assert blocker.result(timeout=10) == 0.5
    assert calls == [0.5]


def test_invalid_args_raise_payload_error_at_the_call_site(demo: Client) -> None:
    with pytest.raises(taskell.PayloadError) as info:
        demo.square(x="seven")  # type: ignore[arg-type]
    assert info.value.task == "demo.square" and "x" in info.value.detail


def test_unknown_task_is_dead_lettered_and_client_told(config: taskell.Config) -> None:
    broker = MemoryBroker.named(config.broker_url()[len("memory://") :])
    with taskell.Worker(registry(Impl()), config):
        probe = MemoryTransport(broker)
        replies: list[Delivery] = []
        got = threading.Event()
        reply_queue = probe.declare_queue("", exclusive=True).result()

        def on_reply(delivery: Delivery) -> None:
            replies.append(delivery)
            got.set()

        probe.consume(reply_queue, on_reply, auto_ack=True).result()
        bad = Message(body=b"{}", type="demo.nope", message_id="t-1", reply_to=reply_queue)
        probe.publish("", SUM.queue, bad, mandatory=True).result()
        assert got.wait(5)
        assert replies[0].message.type == "rejected" and replies[0].message.correlation_id == "t-1"
        assert broker.queue_depth(config.dead_letter_queue) == 1
        probe.close()


def test_unacked_delivery_is_redelivered_when_its_connection_closes() -> None:
    broker = MemoryBroker()
    first, second = MemoryTransport(broker), MemoryTransport(broker)
    first.declare_queue("q").result()
    received: list[Delivery] = []
    first.consume("q", received.append).result()
    first.publish("", "q", Message(body=b"x", message_id="m"), mandatory=True).result()
    wait_until(lambda: bool(received), 5, "the message delivered")
    assert not received[0].redelivered
    first.close()  # never acknowledged
    again: list[Delivery] = []
    second.consume("q", again.append).result()
    wait_until(lambda: bool(again), 5, "the message delivered again")
    assert again[0].redelivered and again[0].message.message_id == "m"
    second.close()


def test_mandatory_publish_to_missing_queue_fails() -> None:
    transport = MemoryTransport(MemoryBroker())
    with pytest.raises(taskell.BrokerUnavailable, match="unroutable"):
        transport.publish("", "nowhere", Message(body=b"x", message_id="m"), mandatory=True).result()
    transport.close()


def test_bcc_routes_with_each_key_and_is_not_delivered() -> None:
    # As RabbitMQ's sender-selected distribution, which the scheduler's submissions rely on.
    transport = MemoryTransport(MemoryBroker())
    for name in ("a", "b", "c"):
        transport.declare_queue(name).result()
    transport.declare_exchange("x", "direct").result()
    transport.bind("c", "x", "to-c").result()
    got: list[tuple[str, Message]] = []
    for name in ("a", "b", "c"):
        transport.consume(name, lambda d: got.append((d.queue, d.message)), auto_ack=True).result()
    message = Message(body=b"1", message_id="m", headers={"BCC": ["b"], "keep": 1})
    transport.publish("", "a", message, mandatory=True).result()
    transport.publish("x", "none", Message(body=b"2", headers={"BCC": ["to-c"]}), mandatory=True).result()
    wait_until(lambda: len(got) == 3, 5, "three deliveries")
    assert sorted((queue, m.body, m.headers) for queue, m in got) == [
        ("a", b"1", {"keep": 1}),
        ("b", b"1", {"keep": 1}),
        ("c", b"2", {}),
    ]
    transport.close()


def test_fire_and_forget_runs_the_task_without_a_reply(config: taskell.Config) -> None:
    ran = threading.Event()

    class Recording(Impl):
        def square(self, ctx: taskell.Context[None], x: int) -> int:
            ran.set()
            return x * x

    with taskell.Worker(registry(Recording()), config), taskell.connect(config=config) as conn:
        task_id = taskell.fire(Client(conn).square, x=3)
        assert len(task_id) == 36 and ran.wait(5)
        assert conn._handles == {}  # nothing waits for a reply
        with pytest.raises(TypeError, match="generated Client"):
            taskell.fire(lambda: Client(conn).square(x=1))


def test_a_worker_run_as_the_process_freezes_what_lives_before_it_starts(
    config: taskell.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Worker.run owns the process: the collector's full passes then skip what lived before.
    worker = taskell.Worker(registry(Impl()), config)
    frozen_at_start: list[int] = []

    def start() -> None:
        frozen_at_start.append(gc.get_freeze_count())
        raise RuntimeError("stopped here")

    monkeypatch.setattr(worker, "start", start)
    gc.unfreeze()
    try:
        with pytest.raises(RuntimeError, match="stopped here"):
            worker.run()
    finally:
        gc.unfreeze()
    assert frozen_at_start and frozen_at_start[0] > 1000
