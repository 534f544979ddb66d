"""Time limits, expiry and priorities on a real RabbitMQ.

- A handler past its ``time_limit`` is stopped: the thread pool interrupts its Python code (its
  ``finally`` runs), the process pool kills its child even in a C call; the client gets
  ``TimeLimitExceeded`` and the next task runs.
- A task that expired while it sat in a queue with no worker never runs: the worker that later
  takes it answers ``TaskExpired``, and a task depending on it fails with that cause.
- A queue whose tasks ask for priorities is declared with ``x-max-priority``, and a worker with
  the default (deep) prefetch starts the waiting tasks highest priority first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from generated.demo import SLEEP, SQUARE, SleepArgs, SquareArgs
from taskell import _wire
from taskell.registry import Registry
from tests.support import RESULT_TIMEOUT, blocking_connection, wait_until

LIMIT = 0.5
LIMITED_SLEEP = dataclasses.replace(SLEEP, time_limit=LIMIT)
PRIORITY_SQUARE = dataclasses.replace(SQUARE, queue_priorities=True)


def spin(seconds: float) -> float:
    """Run Python code for ``seconds`` (bounded: a limit that never fires fails the test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.005)
    return seconds


@pytest.fixture
def workers(config: taskell.Config) -> Iterator[list[taskell.Worker]]:
    """Workers a test starts (``start`` them itself); stopped, bounded, at teardown."""
    started: list[taskell.Worker] = []
    yield started
    for worker in started:
        worker.stop(20)


def start(
    workers: list[taskell.Worker], reg: Registry, config: taskell.Config, **kwargs: Any
) -> taskell.Worker:
    worker = taskell.Worker(reg, config, **kwargs)
    worker.start()
    workers.append(worker)
    return worker


# Time limits


def test_thread_pool_interrupts_a_handler_past_its_time_limit(
    conn: taskell.Connection, config: taskell.Config, workers: list[taskell.Worker]
) -> None:
    finally_ran = threading.Event()

    def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        try:
            return spin(20)
        finally:
            finally_ran.set()

    reg = Registry()
    reg.add(LIMITED_SLEEP, sleep)
    reg.add(SQUARE, lambda ctx, args: args.x * args.x)
    start(workers, reg, config, parallelism=1)
    began = time.monotonic()
    handle = conn.submit(LIMITED_SLEEP, {"seconds": 20})
    with pytest.raises(taskell.TimeLimitExceeded) as info:
        handle.result(timeout=RESULT_TIMEOUT)
    elapsed = time.monotonic() - began
    assert LIMIT <= elapsed < 5, elapsed
    assert (info.value.limit_s, info.value.task_id, info.value.error_type) == (
        LIMIT,
        handle.id,
        "taskell.TimeLimitExceeded",
    )
    assert "in spin" in info.value.traceback  # where the handler was interrupted
    assert finally_ran.is_set()
    assert conn.submit(SQUARE, {"x": 7}).result(timeout=RESULT_TIMEOUT) == 49  # the slot is free
    # A dependent fails with the time limit as its cause.
    with pytest.raises(taskell.DependencyFailed) as dep:
        conn.submit(SQUARE, {"x": 1}, after=[handle]).result(timeout=RESULT_TIMEOUT)
    assert isinstance(dep.value.cause, taskell.TimeLimitExceeded) and dep.value.cause.limit_s == LIMIT


def test_process_pool_kills_a_child_stuck_in_c_past_its_time_limit(
    conn: taskell.Connection, config: taskell.Config, workers: list[taskell.Worker], tmp_path: Path
) -> None:
    def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        (tmp_path / "pid").write_text(str(os.getpid()))
        time.sleep(args.seconds)  # one C call: only killing the process stops it
        return args.seconds

    reg = Registry()
    reg.add(LIMITED_SLEEP, sleep)
    reg.add(SQUARE, lambda ctx, args: os.getpid())
    start(workers, reg, config.model_copy(update={"pool": "process"}), parallelism=1)
    first_child = conn.submit(SQUARE, {"x": 0}).result(timeout=RESULT_TIMEOUT)
    began = time.monotonic()
    handle = conn.submit(LIMITED_SLEEP, {"seconds": 60})
    with pytest.raises(taskell.TimeLimitExceeded) as info:
        handle.result(timeout=RESULT_TIMEOUT)
    assert LIMIT <= time.monotonic() - began < 5
    assert info.value.limit_s == LIMIT
    assert int((tmp_path / "pid").read_text()) == first_child
    # The next task runs, in a new child; the killed one is gone.
    second_child = conn.submit(SQUARE, {"x": 0}).result(timeout=RESULT_TIMEOUT)
    assert second_child not in (first_child, os.getpid())
    with pytest.raises(ProcessLookupError):
        os.kill(first_child, 0)


def test_a_time_limit_named_by_the_retry_policy_is_retried_then_final(
    conn: taskell.Connection, config: taskell.Config, workers: list[taskell.Worker]
) -> None:
    policy = taskell.RetryPolicy(attempts=2, delay=0.1, on=(_wire.TIME_LIMIT_EXCEEDED,))
    spec = dataclasses.replace(LIMITED_SLEEP, retry=policy)
    reg = Registry()
    reg.add(spec, lambda ctx, args: spin(20))
    start(workers, reg, config.model_copy(update={"pool": "process"}), parallelism=1)
    handle = conn.submit(spec, {"seconds": 20})
    with pytest.raises(taskell.TimeLimitExceeded) as info:
        handle.result(timeout=RESULT_TIMEOUT)
    assert info.value.limit_s == LIMIT
    assert [(r.attempt, r.error_type) for r in handle.retries] == [(1, _wire.TIME_LIMIT_EXCEEDED)]


def test_the_time_limit_failure_reply_on_the_wire(
    config: taskell.Config, workers: list[taskell.Worker], amqp: Any
) -> None:
    reg = Registry()
    reg.add(LIMITED_SLEEP, lambda ctx, args: spin(20))
    start(workers, reg, config, parallelism=1)
    amqp.confirm_delivery()
    reply_queue = amqp.queue_declare("", exclusive=True, auto_delete=True).method.queue
    task_id = str(uuid.uuid4())
    properties = pika.BasicProperties(
        type=SLEEP.name,
        message_id=task_id,
        reply_to=reply_queue,
        content_type="application/json",
        delivery_mode=2,
        headers={_wire.FINGERPRINT_HEADER: SLEEP.fingerprint},
    )
    amqp.basic_publish("", SLEEP.queue, b'{"seconds": 20}', properties, mandatory=True)
    info = json.loads(wait_for_final_reply(amqp, reply_queue, "failed"))
    assert info["error_type"] == "taskell.TimeLimitExceeded"
    assert info["error"] == {"limit_s": LIMIT}
    assert info["message"] == "stopped after its time limit of 0.5 s"
    assert "TimeLimitInterrupt" in info["traceback"]


def wait_for_final_reply(amqp: Any, reply_queue: str, kind: str) -> bytes:
    deadline = time.monotonic() + RESULT_TIMEOUT
    while time.monotonic() < deadline:
        method, props, body = amqp.basic_get(reply_queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
        elif props.type != _wire.PROGRESS:
            assert props.type == kind, (props.type, body)
            return bytes(body)
    raise AssertionError(f"no {kind} reply within {RESULT_TIMEOUT} s")


# Expiry


def test_a_task_that_expired_in_a_queue_without_worker_never_runs(
    conn: taskell.Connection, config: taskell.Config, workers: list[taskell.Worker]
) -> None:
    ran: list[int] = []

    def square(ctx: taskell.Context[None], args: SquareArgs) -> int:
        ran.append(args.x)
        return args.x * args.x

    expiring = conn.options(expires=1.0).submit(SQUARE, {"x": 1})
    lasting = conn.options(expires=600).submit(SQUARE, {"x": 2})
    plain = conn.submit(SQUARE, {"x": 3})
    dependent = conn.submit(SQUARE, {"x": 4}, after=[expiring])
    conn.flush(10)
    time.sleep(1.5)  # no worker: everything waits in the queue, the first task past its expiry
    reg = Registry()
    reg.add(SQUARE, square)
    start(workers, reg, config, parallelism=2)
    with pytest.raises(taskell.TaskExpired) as info:
        expiring.result(timeout=RESULT_TIMEOUT)
    assert info.value.task_id == expiring.id
    assert (lasting.result(timeout=RESULT_TIMEOUT), plain.result(timeout=RESULT_TIMEOUT)) == (4, 9)
    with pytest.raises(taskell.DependencyFailed) as dep:
        dependent.result(timeout=RESULT_TIMEOUT)
    assert isinstance(dep.value.cause, taskell.TaskExpired) and dep.value.cause.task_id == expiring.id
    assert sorted(ran) == [2, 3]


# Priorities


def test_priority_queues_are_declared_with_max_priority(
    conn: taskell.Connection, config: taskell.Config, workers: list[taskell.Worker]
) -> None:
    reg = Registry()
    reg.add(PRIORITY_SQUARE, lambda ctx, args: args.x)
    start(workers, reg, config)
    assert conn.options(priority=9).submit(PRIORITY_SQUARE, {"x": 5}).result(timeout=RESULT_TIMEOUT) == 5
    # Declaring the queue again without x-max-priority is refused: it has the argument.
    connection = blocking_connection()
    try:
        channel = connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="x-max-priority"):
            channel.queue_declare(SQUARE.queue, durable=True, arguments=_wire.queue_arguments(config))
    finally:
        connection.close()


def test_waiting_tasks_start_highest_priority_first_with_the_default_prefetch(
    conn: taskell.Connection, config: taskell.Config, workers: list[taskell.Worker], amqp: Any
) -> None:
    started: list[int] = []
    release = threading.Event()

    def square(ctx: taskell.Context[None], args: SquareArgs) -> int:
        started.append(args.x)
        if args.x < 0:
            release.wait(RESULT_TIMEOUT)
        return args.x

    reg = Registry()
    reg.add(PRIORITY_SQUARE, square)
    start(workers, reg, config, parallelism=1)  # prefetch: the default, 32 per slot
    blocker = conn.submit(PRIORITY_SQUARE, {"x": -1})
    wait_until(lambda: started == [-1], RESULT_TIMEOUT, "the blocker started")
    priorities = [0, 3, None, 9, 1, 5, 9, 0, 7, 2, 5, 8, 4, 6, None, 3]
    handles = [conn.options(priority=p).submit(PRIORITY_SQUARE, {"x": n}) for n, p in enumerate(priorities)]
    conn.flush(10)

    def all_prefetched() -> bool:
        return int(amqp.queue_declare(SQUARE.queue, passive=True).method.message_count) == 0

    wait_until(all_prefetched, RESULT_TIMEOUT, "every task delivered to the worker")
    release.set()
    assert blocker.result(timeout=RESULT_TIMEOUT) == -1
    assert [h.result(timeout=RESULT_TIMEOUT) for h in handles] == list(range(len(priorities)))
    expected = sorted(range(len(priorities)), key=lambda n: (-(priorities[n] or 0), n))
    assert started == [-1, *expected]


def test_adding_priorities_to_a_live_queue_is_refused_by_the_broker(
    config: taskell.Config, workers: list[taskell.Worker], amqp: Any
) -> None:
    amqp.queue_declare(SQUARE.queue, durable=True, arguments=_wire.queue_arguments(config))
    reg = Registry()
    reg.add(PRIORITY_SQUARE, lambda ctx, args: args.x)
    worker = taskell.Worker(reg, config)
    with pytest.raises(
        taskell.BrokerUnavailable, match="PRECONDITION_FAILED - inequivalent arg 'x-max-priority'"
    ):
        worker.start()
