"""Async handlers (SPEC §10, the worker half of issue 15) on a real RabbitMQ, with the sync client.

A worker whose registry holds ``async def`` handlers runs them on an event loop of its own, up
to ``parallelism`` at once, and keeps every guarantee of the thread pool: results, progress,
typed errors, retries, dependencies, priorities, expiry, dead letters, leases, redelivery after
a SIGKILL and the graceful stop; sync and async workers serve the same queue. An abort and the time limit cancel the handler (``asyncio.CancelledError`` at
its next ``await``, its ``finally`` runs); a handler that blocks the loop is logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import decimal
import json
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from examples.async_worker import AsyncImpl
from examples.worker import FLAKY_PAYMENTS, Impl
from generated.demo import SLEEP, SQUARE, Client, DiscountTooLarge, Order, SleepArgs, SquareArgs
from taskell.registry import Registry
from tests.support import RESULT_TIMEOUT, SpawnWorker, StartWorker, wait_until, worker_pids

LIMIT = 0.5
LIMITED_SLEEP = dataclasses.replace(SLEEP, time_limit=LIMIT)
PRIORITY_SQUARE = dataclasses.replace(SQUARE, queue_priorities=True)
ASYNC_TARGET = "examples.async_worker:handlers"

Handler = Callable[[taskell.Context[Any], Any], Awaitable[Any]]


@contextmanager
def serve(
    config: taskell.Config, *bindings: tuple[taskell.TaskSpec[Any, Any, Any], Handler], parallelism: int = 1
) -> Iterator[taskell.Worker]:
    """An in-process worker of these async handlers, stopped (bounded) on the way out."""
    reg = Registry()
    for spec, run in bindings:
        reg.add_async(spec, run)
    worker = taskell.Worker(reg, config, parallelism=parallelism)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop(20)


async def square(ctx: taskell.Context[None], args: SquareArgs) -> int:
    return args.x * args.x


def order(*tags: str) -> Order:
    return Order(
        id=uuid.uuid4(),
        placed_at=datetime.datetime.now(datetime.UTC),
        amount=decimal.Decimal(10),
        tags=tags,
    )


# What a handler can do


def test_async_handlers_give_results_progress_typed_errors_and_retries(
    conn: taskell.Connection, start_worker: StartWorker
) -> None:
    worker = start_worker(parallelism=4, impl=AsyncImpl(delay=0.01))
    assert worker.is_async
    client = Client(conn)
    assert client.square(x=7).result(timeout=RESULT_TIMEOUT) == 49
    summed = client.sum(numbers=list(range(1, 21)))
    assert summed.result(timeout=RESULT_TIMEOUT) == 210
    values = list(summed.progress())
    assert values[-1] == 100 and values == sorted(values), values  # coalesced, in order, last one sent
    with pytest.raises(DiscountTooLarge) as declined:
        client.book(order=order(), discount=decimal.Decimal(2)).result(timeout=RESULT_TIMEOUT)
    assert (declined.value.discount, declined.value.limit) == (decimal.Decimal(2), decimal.Decimal(1))
    with pytest.raises(taskell.TaskFailed) as failed:
        client.fail(message="no luck").result(timeout=RESULT_TIMEOUT)
    assert (failed.value.error_type, failed.value.message) == ("ValueError", "no luck")
    assert "in fail" in failed.value.traceback
    flaky = client.book(order=order(FLAKY_PAYMENTS))  # attempt 1: Unavailable, retried by the schema
    assert flaky.result(timeout=RESULT_TIMEOUT).total == decimal.Decimal(10)
    assert [r.attempt for r in flaky.retries] == [1]
    assert client.total(parts=[client.square(x=3), 4]).result(timeout=RESULT_TIMEOUT) == 13  # a dependency
    with pytest.raises(taskell.DependencyFailed):
        client.total(parts=[4], after=[client.fail()]).result(timeout=RESULT_TIMEOUT)


def test_parallelism_n_runs_n_tasks_at_once_and_not_more(
    conn: taskell.Connection, config: taskell.Config
) -> None:
    n = 5
    running, peak = [0], [0]

    async def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        running[0] += 1  # on the one loop thread: no lock needed
        peak[0] = max(peak[0], running[0])
        try:
            await asyncio.sleep(args.seconds)
        finally:
            running[0] -= 1
        return args.seconds

    with serve(config, (SLEEP, sleep), parallelism=n):
        began = time.monotonic()
        handles = [conn.submit(SLEEP, {"seconds": 0.3}) for _ in range(3 * n)]
        assert [h.result(timeout=RESULT_TIMEOUT) for h in handles] == [0.3] * (3 * n)
        elapsed = time.monotonic() - began
    assert peak[0] == n, f"{peak[0]} tasks ran at once with parallelism {n}"
    assert elapsed >= 0.9, f"{3 * n} tasks of 0.3 s in {elapsed:.2f} s: more than {n} ran at once"


def test_a_thousand_sleeping_tasks_share_one_loop(conn: taskell.Connection, config: taskell.Config) -> None:
    """1,000 tasks each awaiting asyncio.sleep(0.1) on one worker of parallelism 1,000 finish
    within a generous 2 s beyond the sleep (1,000 pool threads of 4 would take 25 s); the
    precise figure, and the loop's longest stall, are in bench/bench_aio_worker.py."""
    n, nap = 1000, 0.1
    running, peak = [0], [0]

    async def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await asyncio.sleep(args.seconds)
        running[0] -= 1
        return args.seconds

    handles = [conn.submit(SLEEP, {"seconds": nap}) for _ in range(n)]
    conn.flush(30)  # all queued before the worker starts: the time is the worker's alone
    with serve(config, (SLEEP, sleep), parallelism=n):
        began = time.monotonic()
        assert all(h.result(timeout=RESULT_TIMEOUT) == nap for h in handles)
        elapsed = time.monotonic() - began
    print(f"\n{n} x asyncio.sleep({nap}): {elapsed:.3f} s, at most {peak[0]} at once")
    assert elapsed - nap < 2.0, f"{n} tasks took {elapsed:.2f} s: {elapsed - nap:.2f} s beyond the sleep"
    assert peak[0] > 50, f"at most {peak[0]} tasks slept at once"


# Cancellation: abort and time limit


def test_an_abort_cancels_a_running_async_handler(conn: taskell.Connection, config: taskell.Config) -> None:
    started, finally_ran = threading.Event(), threading.Event()
    seen: list[str] = []

    async def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        started.set()
        try:
            await asyncio.sleep(args.seconds)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            finally_ran.set()
        return args.seconds

    with serve(config, (SLEEP, sleep), (SQUARE, square), parallelism=1):
        handle = conn.submit(SLEEP, {"seconds": 30})
        assert started.wait(RESULT_TIMEOUT), "the task did not start"
        began = time.monotonic()
        assert handle.abort()
        with pytest.raises(taskell.TaskAborted):
            handle.result(timeout=RESULT_TIMEOUT)
        assert time.monotonic() - began < 2.0
        assert finally_ran.is_set() and seen == ["cancelled"]
        assert conn.submit(SQUARE, {"x": 6}).result(timeout=RESULT_TIMEOUT) == 36  # the slot is free


def test_the_time_limit_cancels_an_async_handler(conn: taskell.Connection, config: taskell.Config) -> None:
    finally_ran = threading.Event()

    async def limited_sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        try:
            await asyncio.sleep(args.seconds)
        finally:
            finally_ran.set()
        return args.seconds

    with serve(config, (LIMITED_SLEEP, limited_sleep), (SQUARE, square), parallelism=1):
        began = time.monotonic()
        handle = conn.submit(LIMITED_SLEEP, {"seconds": 20})
        with pytest.raises(taskell.TimeLimitExceeded) as info:
            handle.result(timeout=RESULT_TIMEOUT)
        elapsed = time.monotonic() - began
        assert LIMIT <= elapsed < 3, elapsed
        assert (info.value.limit_s, info.value.task_id) == (LIMIT, handle.id)
        assert "in limited_sleep" in info.value.traceback  # where it was cancelled
        assert finally_ran.is_set()
        assert conn.submit(SQUARE, {"x": 7}).result(timeout=RESULT_TIMEOUT) == 49


def test_a_handler_that_blocks_the_loop_is_logged_by_name(
    conn: taskell.Connection, config: taskell.Config, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="taskell.worker")

    async def blocking_sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        time.sleep(args.seconds)  # wrong on purpose: blocks every task on the loop
        return args.seconds

    with serve(config, (SLEEP, blocking_sleep), (SQUARE, square), parallelism=2):
        quick = conn.submit(SQUARE, {"x": 3})
        assert quick.result(timeout=RESULT_TIMEOUT) == 9
        assert "event loop blocked" not in caplog.text  # a well-behaved task is not reported
        handle = conn.submit(SLEEP, {"seconds": 1.0})
        assert handle.result(timeout=RESULT_TIMEOUT) == 1.0
        wait_until(lambda: "event loop was blocked" in caplog.text, 5, "the end of the stall logged")
    blocked = [r.getMessage() for r in caplog.records if "event loop blocked" in r.getMessage()]
    assert len(blocked) == 1, blocked  # once per stall
    assert f"task demo.sleep [{handle.id}]" in blocked[0]
    assert "in blocking_sleep" in blocked[0] and "time.sleep(args.seconds)" in blocked[0]  # where
    ended = next(r.getMessage() for r in caplog.records if "event loop was blocked" in r.getMessage())
    seconds = float(ended.split("blocked for ")[1].split(" s")[0])
    assert 0.8 <= seconds <= 1.5, ended


# Interop, and every guarantee of the sync worker


def test_sync_and_async_workers_serve_the_same_queue(
    conn: taskell.Connection, start_worker: StartWorker
) -> None:
    ran: dict[str, set[int]] = {"sync": set(), "async": set()}

    class Sync(Impl):
        def square(self, ctx: taskell.Context[None], x: int) -> int:
            ran["sync"].add(x)
            time.sleep(0.02)
            return x * x

    class Async(AsyncImpl):
        async def square(self, ctx: taskell.Context[None], x: int) -> int:
            ran["async"].add(x)
            await asyncio.sleep(0.02)
            return x * x

    assert not start_worker(parallelism=2, impl=Sync()).is_async
    assert start_worker(parallelism=2, impl=Async()).is_async
    client = Client(conn)
    handles = [client.square(x=x) for x in range(60)]
    assert [h.result(timeout=RESULT_TIMEOUT) for h in handles] == [x * x for x in range(60)]
    assert ran["sync"] and ran["async"], ran  # both kinds of worker took tasks
    assert ran["sync"] | ran["async"] == set(range(60))


def test_waiting_tasks_start_highest_priority_first(
    conn: taskell.Connection, config: taskell.Config, amqp: Any
) -> None:
    started: list[int] = []
    release = threading.Event()

    async def prioritized(ctx: taskell.Context[None], args: SquareArgs) -> int:
        started.append(args.x)
        while args.x < 0 and not release.is_set():
            await asyncio.sleep(0.01)
        return args.x

    with serve(config, (PRIORITY_SQUARE, prioritized), parallelism=1):  # default (deep) prefetch
        blocker = conn.submit(PRIORITY_SQUARE, {"x": -1})
        wait_until(lambda: started == [-1], RESULT_TIMEOUT, "the blocker started")
        priorities = [0, 3, None, 9, 1, 5, 9, 0, 7, 2, 5, 8, 4, 6, None, 3]
        handles = [
            conn.options(priority=p).submit(PRIORITY_SQUARE, {"x": n}) for n, p in enumerate(priorities)
        ]
        conn.flush(10)
        wait_until(
            lambda: int(amqp.queue_declare(SQUARE.queue, passive=True).method.message_count) == 0,
            RESULT_TIMEOUT,
            "every task delivered to the worker",
        )
        release.set()
        assert blocker.result(timeout=RESULT_TIMEOUT) == -1
        assert [h.result(timeout=RESULT_TIMEOUT) for h in handles] == list(range(len(priorities)))
    assert started == [-1, *sorted(range(len(priorities)), key=lambda n: (-(priorities[n] or 0), n))]


def test_intake_decisions_bad_args_expired_and_aborted_before_start(
    conn: taskell.Connection, config: taskell.Config, amqp: Any
) -> None:
    ran: list[int] = []

    async def recorded(ctx: taskell.Context[None], args: SquareArgs) -> int:
        ran.append(args.x)
        return args.x * args.x

    expiring = conn.options(expires=0.2).submit(SQUARE, {"x": 1})  # no worker yet: it expires queued
    conn.flush(10)
    time.sleep(0.5)
    queue = amqp.queue_declare("", exclusive=True).method.queue
    with serve(config, (SQUARE, recorded), parallelism=2):
        message_id = str(uuid.uuid4())
        props = pika.BasicProperties(
            type=SQUARE.name,
            message_id=message_id,
            reply_to=queue,
            delivery_mode=2,
            content_type="application/json",
        )
        amqp.basic_publish("", SQUARE.queue, b'{"x": "seven"}', props)
        wait_until(
            lambda: amqp.queue_declare("taskell.dead", passive=True).method.message_count == 1,
            RESULT_TIMEOUT,
            "the bad message dead-lettered",
        )
        _, properties, body = amqp.basic_get(queue, auto_ack=True)
        assert (properties.type, properties.correlation_id) == ("rejected", message_id)
        assert "args do not validate" in json.loads(body)["message"]
        # An abort sent before the task is delivered: it is answered without running.
        with taskell.connect(config=config) as other:
            view = other.options(delay=1.0)
            delayed = view.submit(SQUARE, {"x": 5})
            other.flush(10)
            assert delayed.abort()
            with pytest.raises(taskell.TaskAborted):
                delayed.result(timeout=RESULT_TIMEOUT)
        with pytest.raises(taskell.TaskExpired):
            expiring.result(timeout=RESULT_TIMEOUT)
        assert conn.submit(SQUARE, {"x": 4}).result(timeout=RESULT_TIMEOUT) == 16
    assert ran == [4]


def test_a_long_async_task_is_leased_and_completes(
    conn: taskell.Connection, config: taskell.Config, amqp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskell.worker")

    async def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        await asyncio.sleep(args.seconds)
        return args.seconds

    leasing = config.model_copy(update={"lease_after": 0.3, "lease_ttl": 2.0})
    with serve(leasing, (SLEEP, sleep), parallelism=2):
        handle = conn.submit(SLEEP, {"seconds": 1.5})
        assert handle.result(timeout=RESULT_TIMEOUT) == 1.5
    assert f"task {handle.id} runs long: leasing it" in caplog.text
    time.sleep(0.5)  # a window for a leftover (unacknowledged or lease copy) to show up
    assert amqp.queue_declare(SLEEP.queue, passive=True).method.message_count == 0


def test_a_task_of_a_sigkilled_async_worker_completes_on_another(
    conn: taskell.Connection, spawn_worker: SpawnWorker
) -> None:
    first = spawn_worker(parallelism=10, target=ASYNC_TARGET)
    handle = Client(conn).sleep(seconds=3.0)
    wait_until(lambda: handle.latest_progress is not None, 20, "the first worker started the task")
    running = [
        task["task_id"]
        for answer in conn.inspect(wait=0.5)
        if worker_pids([answer]) == {first.pid}
        for task in answer["running"]
    ]
    assert running == [handle.id], "the task should be running on the first worker"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert first.returncode == -signal.SIGKILL
    assert not handle.done()
    spawn_worker(parallelism=10, target=ASYNC_TARGET)
    assert handle.result(timeout=RESULT_TIMEOUT) == 3.0


def test_sigterm_lets_running_async_tasks_finish(
    conn: taskell.Connection, spawn_worker: SpawnWorker, amqp: Any
) -> None:
    worker = spawn_worker(parallelism=8, target=ASYNC_TARGET)
    client = Client(conn)
    handles = [client.sleep(seconds=1.0) for _ in range(4)]
    wait_until(
        lambda: all(h.latest_progress is not None for h in handles), 20, "the worker started the tasks"
    )
    os.kill(worker.pid, signal.SIGTERM)
    assert worker.wait(15) == 0
    assert [h.result(timeout=5) for h in handles] == [1.0] * 4
    time.sleep(0.5)  # a window for the broker to requeue what the closed connection left unacked
    assert amqp.queue_declare(SLEEP.queue, passive=True).method.message_count == 0


def test_a_graceful_stop_cancels_and_requeues_what_outlives_the_grace_period(
    conn: taskell.Connection, config: taskell.Config
) -> None:
    finally_ran = threading.Event()

    async def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        try:
            await asyncio.sleep(args.seconds)
        finally:
            finally_ran.set()
        return args.seconds

    reg = Registry()
    reg.add_async(SLEEP, sleep)
    first = taskell.Worker(reg, config, parallelism=1)
    first.start()
    handle = conn.submit(SLEEP, {"seconds": 3.0})
    wait_until(lambda: len(first.status()["running"]) == 1, 20, "the task started")
    began = time.monotonic()
    first.stop(timeout=0.5)
    assert time.monotonic() - began < 3, "the stop waited for the task instead of requeueing it"
    assert finally_ran.is_set() and not handle.done()
    with serve(config, (SLEEP, sleep)):
        assert handle.result(timeout=RESULT_TIMEOUT) == 3.0
