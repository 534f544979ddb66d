"""Fewer thread hand-offs on a call's path (transport/amqp.py, ``LockedIOLoop``): a caller
publishes its own task while the connection's I/O thread is idle, and so does a worker's pool
thread with its reply. A caller waiting for its result runs the loop itself and so receives its
reply, and an idle pool thread receives the task it then runs. The first four tests fail where
every pika call goes through the I/O thread. A long borrow (an idle worker, a long wait) does
not keep the I/O thread looking every few milliseconds, and it hands the loop back at once."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import taskell
from generated.demo import Client
from taskell.transport import amqp, pika_connection
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


def test_a_caller_publishes_its_task_itself(
    config: taskell.Config, worker: taskell.Worker, publishers: list[tuple[str, str]]
) -> None:
    me = threading.current_thread().name
    with taskell.connect(config=config) as conn:
        demo = Client(conn)
        demo.square(x=1).result(timeout=RESULT_TIMEOUT)  # the queue's first declaration
        publishers.clear()
        for i in range(CALLS):
            assert demo.square(x=i).result(timeout=RESULT_TIMEOUT) == i * i
            time.sleep(0.005)  # the I/O threads go idle, as between real calls
    tasks = [thread for key, thread in publishers if key == "taskell.q1"]
    assert len(tasks) == CALLS
    # Most, not all: the I/O thread may be busy at that moment (an ack, a confirm), and then
    # the caller hands its publish over as before rather than wait.
    assert tasks.count(me) >= CALLS // 2, f"task publishes by thread: {tasks}"


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


def test_a_waiting_caller_receives_its_reply_itself(
    monkeypatch: pytest.MonkeyPatch, config: taskell.Config, worker: taskell.Worker
) -> None:
    receivers: list[str] = []
    on_reply = taskell.Connection._on_reply

    def recorded(self: Any, delivery: Any) -> None:
        receivers.append(threading.current_thread().name)
        on_reply(self, delivery)

    monkeypatch.setattr(taskell.Connection, "_on_reply", recorded)
    me = threading.current_thread().name
    with taskell.connect(config=config) as conn:
        demo = Client(conn)
        demo.square(x=1).result(timeout=RESULT_TIMEOUT)
        receivers.clear()
        for i in range(CALLS):
            assert demo.square(x=i).result(timeout=RESULT_TIMEOUT) == i * i
            time.sleep(0.005)
    assert len(receivers) == CALLS
    # Most, not all: a reply that comes before the caller waits is received by the I/O thread.
    assert receivers.count(me) >= CALLS // 2, f"replies received by thread: {receivers}"


def test_an_idle_pool_thread_receives_the_task_it_runs(
    monkeypatch: pytest.MonkeyPatch, conn: taskell.Connection, start_worker: Any
) -> None:
    received: dict[str, str] = {}  # task id -> thread that received it
    ran: dict[str, str] = {}  # task id -> thread that ran it
    on_delivery, execute = taskell.Worker._on_delivery, taskell.Worker._execute

    def on_delivery_recorded(self: Any, delivery: Any) -> None:
        received[delivery.message.message_id] = threading.current_thread().name
        on_delivery(self, delivery)

    def execute_recorded(self: Any, delivery: Any) -> None:
        ran[delivery.message.message_id] = threading.current_thread().name
        execute(self, delivery)

    monkeypatch.setattr(taskell.Worker, "_on_delivery", on_delivery_recorded)
    monkeypatch.setattr(taskell.Worker, "_execute", execute_recorded)
    start_worker(parallelism=1)
    demo = Client(conn)
    ids = []
    for i in range(CALLS):
        handle = demo.square(x=i)
        assert handle.result(timeout=RESULT_TIMEOUT) == i * i
        ids.append(handle.id)
        time.sleep(0.005)
    same = [task for task in ids if received[task] == ran[task]]
    assert all(ran[task].startswith("taskell-task_") for task in ids)
    assert len(same) >= CALLS // 2, (
        f"received by {[received[t] for t in ids]}, ran by {[ran[t] for t in ids]}"
    )


def test_the_io_thread_takes_the_loop_back_after_a_borrower(
    conn: taskell.Connection, worker: taskell.Worker
) -> None:
    # A borrower gives the loop back without waking the I/O thread; whoever then waits without
    # running the loop (here: polling done()) relies on that thread coming back by itself.
    demo = Client(conn)
    for i in range(20):
        assert demo.square(x=i).result(timeout=RESULT_TIMEOUT) == i * i  # run the loop
        handle = demo.square(x=i)
        deadline = time.monotonic() + 5
        while not handle.done():
            assert time.monotonic() < deadline, "nobody ran the loop after the borrower left"
            time.sleep(0.001)


def test_an_idle_worker_does_not_keep_its_io_thread_looking(
    monkeypatch: pytest.MonkeyPatch, conn: taskell.Connection, start_worker: Any
) -> None:
    start_worker(parallelism=2)  # one pool thread borrows the loop, the other asks for it too
    assert Client(conn).square(x=3).result(timeout=RESULT_TIMEOUT) == 9
    time.sleep(0.2)  # idle: a pool thread runs the loop, waiting for a task
    looks: list[float] = []
    check_interval = pika_connection.LockedIOLoop._check_interval

    def counted(self: pika_connection.LockedIOLoop) -> float:
        looks.append(time.monotonic())
        return check_interval(self)

    monkeypatch.setattr(pika_connection.LockedIOLoop, "_check_interval", counted)
    time.sleep(1.0)
    assert len(looks) <= 5, f"the I/O thread looked {len(looks)} times in 1 s of idling"


def test_a_long_borrow_gives_the_loop_back_at_once(conn: taskell.Connection, worker: taskell.Worker) -> None:
    demo = Client(conn)
    loop = conn._transport._ioloop  # type: ignore[attr-defined]
    for _ in range(3):
        assert demo.sleep(seconds=0.2).result(timeout=RESULT_TIMEOUT) == pytest.approx(0.2, abs=0.15)
        given_back = time.monotonic()
        while loop._stepped_aside:  # the I/O thread, aside while the caller ran the loop
            assert time.monotonic() - given_back < 0.2, "the I/O thread did not take the loop back"
            time.sleep(0.001)


def test_callers_on_many_threads_share_the_loop(conn: taskell.Connection, worker: taskell.Worker) -> None:
    demo = Client(conn)
    slow = demo.sleep(seconds=1.0)  # a thread waits for this one meanwhile
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


def test_an_idle_pool_thread_runs_the_loop_without_looking_every_few_ms(
    monkeypatch: pytest.MonkeyPatch, conn: taskell.Connection, start_worker: Any
) -> None:
    worker = start_worker(parallelism=1)
    assert Client(conn).square(x=3).result(timeout=RESULT_TIMEOUT) == 9
    loop = worker._transport._ioloop
    waits: list[float] = []
    polled = pika_connection.LockedIOLoop._polled

    def counted(self: pika_connection.LockedIOLoop, timeout: float, epoll: Any) -> Any:
        if threading.current_thread() is self._borrower:
            waits.append(timeout)
        return polled(self, timeout, epoll)

    time.sleep(0.2)  # idle: the pool thread runs the loop, waiting for a task
    assert loop._borrower is not None and loop._borrower.name.startswith("taskell-task")
    monkeypatch.setattr(pika_connection.LockedIOLoop, "_polled", counted)
    time.sleep(1.5)
    assert len(waits) <= 5, f"the idle pool thread polled {len(waits)} times in 1.5 s"


def test_wake_makes_a_thread_running_the_loop_look_at_once(conn: taskell.Connection) -> None:
    transport: Any = conn._transport
    flag = threading.Event()
    returned: list[float] = []
    waiter = threading.Thread(
        target=lambda: returned.append(
            transport.run_loop_until(flag.is_set, 30, look_every=30) and time.monotonic()
        )
    )
    waiter.start()
    time.sleep(0.2)  # it runs the loop now, looking at the flag only every 30 s
    assert transport._ioloop._borrower is waiter
    flag.set()
    woken = time.monotonic()
    transport.wake()  # as Execution.stop does once it closed the buffer of an idle pool
    waiter.join(5)
    assert returned and returned[0] - woken < 0.5
