"""Fewer thread hand-offs on a call's path (transport/amqp.py: ``LockedIOLoop``, ``drive_until``):
a caller publishes its own task and reads its own reply while the connection's I/O thread is
idle, and a worker's pool thread publishes its own reply. Each test fails where every pika call
goes through the I/O thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import taskell
from generated.demo import Client
from taskell.connection import Connection
from taskell.transport import amqp
from taskell.transport.base import Delivery
from tests.support import RESULT_TIMEOUT

CALLS = 30


@pytest.fixture
def publishers(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(routing key, thread name) of every publish handed to pika from now on."""
    seen: list[tuple[str, str]] = []
    publish = amqp.AmqpTransport._basic_publish

    def recorded(self: Any, channel: Any, message: Any) -> None:
        seen.append((message.routing_key, threading.current_thread().name))
        publish(self, channel, message)

    monkeypatch.setattr(amqp.AmqpTransport, "_basic_publish", recorded)
    return seen


@pytest.fixture
def reply_readers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of the thread that handled each reply a client received from now on."""
    seen: list[str] = []
    on_reply = Connection._on_reply

    def recorded(self: Connection, delivery: Delivery) -> None:
        seen.append(threading.current_thread().name)
        on_reply(self, delivery)

    monkeypatch.setattr(Connection, "_on_reply", recorded)
    return seen


def test_a_caller_publishes_its_task_and_reads_its_reply_itself(
    config: taskell.Config,
    worker: taskell.Worker,
    publishers: list[tuple[str, str]],
    reply_readers: list[str],
) -> None:
    me = threading.current_thread().name
    with taskell.connect(config=config) as conn:
        demo = Client(conn)
        demo.square(x=1).result(timeout=RESULT_TIMEOUT)  # the queue's first declaration
        publishers.clear()
        reply_readers.clear()
        for i in range(CALLS):
            assert demo.square(x=i).result(timeout=RESULT_TIMEOUT) == i * i
            time.sleep(0.005)  # the I/O threads go idle, as between real calls
    tasks = [thread for key, thread in publishers if key == "taskell.q1"]
    assert len(tasks) == CALLS
    # Most, not all: the I/O thread may be busy at that moment (an ack, a confirm), and then
    # the caller hands its publish over as before rather than wait.
    assert tasks.count(me) >= CALLS // 2, f"task publishes by thread: {tasks}"
    assert reply_readers.count(me) >= CALLS // 2, f"replies read by thread: {reply_readers}"


def test_a_pool_thread_publishes_its_reply_itself(
    conn: taskell.Connection, worker: taskell.Worker, publishers: list[tuple[str, str]]
) -> None:
    demo = Client(conn)
    demo.square(x=1).result(timeout=RESULT_TIMEOUT)
    publishers.clear()
    for i in range(CALLS):
        demo.square(x=i).result(timeout=RESULT_TIMEOUT)
        time.sleep(0.005)
    replies = [thread for key, thread in publishers if key == conn.reply_queue]
    assert len(replies) == CALLS
    by_pool = [thread for thread in replies if thread.startswith("taskell-task_")]
    assert len(by_pool) >= CALLS // 2, f"reply publishes by thread: {replies}"


def test_a_driving_caller_keeps_its_timeout_and_hands_the_loop_back(
    conn: taskell.Connection, start_worker: Any
) -> None:
    demo = Client(conn)
    pending = demo.square(x=3)  # no worker yet
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        pending.result(timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2.0
    # The I/O thread runs the loop again: a reply read while this thread sleeps reaches the handle.
    start_worker(parallelism=2)
    deadline = time.monotonic() + RESULT_TIMEOUT
    while not pending.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pending.done(), "nobody read the reply while the caller was not waiting"
    assert pending.result(timeout=0) == 9


def test_callers_on_many_threads_share_the_loop(conn: taskell.Connection, worker: taskell.Worker) -> None:
    demo = Client(conn)
    slow = demo.sleep(seconds=1.0)  # one thread drives while it waits for this one
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            for i in range(20):
                results[n * 100 + i] = demo.square(x=n * 100 + i).result(timeout=RESULT_TIMEOUT)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=lambda: slow.result(timeout=RESULT_TIMEOUT))
    waiter.start()
    threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in [*threads, waiter]:
        thread.join(RESULT_TIMEOUT)
    assert not errors
    assert results == {k: k * k for k in results} and len(results) == 80
    assert slow.result(timeout=0) == pytest.approx(1.0, abs=0.5)
