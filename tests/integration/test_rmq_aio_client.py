"""Issue 15 (client half), SPEC §10: ``taskell.aio`` on a real RabbitMQ, with sync workers.

Every test runs its coroutine on a fresh event loop next to a ticker coroutine that wakes every
5 ms and records the longest gap between two of its ticks: whatever the client does (connect,
submit, await results and progress, abort, attach, close), the loop must never stall longer
than ``STALL_BOUND``. The test of 1,000 concurrent awaits uses a worker subprocess, so that the
worker's threads do not share the client's GIL; the others use an in-process worker.

Sync ↔ async interop: the workers here are the existing sync ones (in-process and
``taskell worker examples.worker:handlers``); sync and async handles depend on each other.
"""

from __future__ import annotations

import asyncio
import decimal
import gc
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

import taskell
import taskell.aio
from examples.worker import FLAKY_PAYMENTS, Impl
from generated.demo import SLEEP, SQUARE, AsyncClient, Client, DiscountTooLarge, Order
from taskell import _wire
from tests.support import RESULT_TIMEOUT, SpawnWorker, StartWorker, blocking_connection, wait_until

T = TypeVar("T")

TICK = 0.005
STALL_BOUND = 0.05  # the loop never waits longer than this between two ticks
# A submission costs the caller as much CPU as a sync one (validation, the message, handing it
# to the I/O thread: 0.1-0.4 ms on the 2-core test machine); a loop turn that submits 1,000 at
# once is the caller's own stall, so the test submits in bursts like requests arriving.
SUBMIT_BURST = 20
JOIN_QUEUES = tuple(f"taskell.join.{n}" for n in range(4))


def runqueue_seconds() -> float:
    """How long this thread has waited for a CPU while runnable (Linux schedstat)."""
    with open("/proc/thread-self/schedstat") as stat:
        return int(stat.read().split()[1]) / 1e9


def on_loop(main: Callable[[], Awaitable[T]], timeout: float = 2 * RESULT_TIMEOUT) -> T:
    """Run ``main()`` on a new event loop with a ticker beside it; fail if the loop ever stalled
    longer than ``STALL_BOUND`` (or ``main`` took longer than ``timeout``).

    A stall is the time between two ticks minus the time the loop's thread was runnable but
    waiting for a CPU: the test machine is shared (load 10 on 2 cores while other suites run;
    a ticker alone then sees 50 ms gaps), and the OS preempting the process is not the loop
    being blocked. A blocking wait (a lock, a condition, a socket) or another thread holding
    the GIL still counts in full.

    The heap that exists before the loop starts (pytest, every module, earlier tests) is
    frozen (``gc.freeze``, as long-running services do after start-up): otherwise the full
    collection the test's allocations trigger scans it all, 60-180 ms here, whoever allocates.
    """
    stalls: list[float] = []
    raw: list[float] = []

    async def tick() -> None:
        last, queued = time.perf_counter(), runqueue_seconds()
        while True:
            await asyncio.sleep(TICK)
            now, now_queued = time.perf_counter(), runqueue_seconds()
            raw.append(now - last)
            stalls.append(now - last - (now_queued - queued))
            last, queued = now, now_queued

    async def run() -> T:
        ticker = asyncio.create_task(tick())
        try:
            async with asyncio.timeout(timeout):
                return await main()
        finally:
            ticker.cancel()

    pauses: list[tuple[float, int]] = []  # the interpreter's collections: (seconds, generation)

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            pauses.append((-time.perf_counter(), info["generation"]))
        else:
            pauses[-1] = (pauses[-1][0] + time.perf_counter(), pauses[-1][1])

    gc.callbacks.append(on_gc)
    gc.freeze()
    try:
        result = asyncio.run(run())
    finally:
        gc.unfreeze()
        gc.callbacks.remove(on_gc)
    print(f"gc: {len(pauses)} collections, longest {max(pauses, default=(0.0, 0))}")
    assert stalls, "the ticker never ran"
    worst = max(stalls)
    print(f"ticks: {len(stalls)}, longest stall {worst * 1000:.1f} ms (wall gap {max(raw) * 1000:.1f} ms)")
    assert worst < STALL_BOUND, (
        f"the event loop stalled {worst * 1000:.0f} ms (bound {STALL_BOUND * 1000:.0f})"
    )
    return result


@pytest.fixture
def clean_join_state(clean_queues: None) -> Iterator[None]:
    """The join partitions and outcomes exchange, deleted before and after (as test_rmq_deps)."""

    def delete() -> None:
        connection = blocking_connection()
        try:
            channel = connection.channel()
            for queue in JOIN_QUEUES:
                channel.queue_delete(queue)
            channel.exchange_delete("taskell.outcomes")
        finally:
            connection.close()

    delete()
    yield
    delete()


def test_submit_returns_the_handle_at_once_and_await_gives_the_result(
    config: taskell.Config, worker: taskell.Worker
) -> None:
    async def main() -> None:
        async with taskell.aio.connect(config=config) as conn:
            demo = AsyncClient(conn)
            first = demo.square(x=7)  # its queue is declared first, off the loop
            assert isinstance(first, taskell.aio.TaskHandle) and isinstance(first, taskell.Ref)
            assert uuid.UUID(first.id) and not first.done()
            assert await first == 49
            assert first.done()
            assert await first.result(timeout=1) == 49  # again, at once
            second = demo.square(x=8)  # the queue is known now: published from the loop
            assert await second.result(timeout=RESULT_TIMEOUT) == 64
            assert await demo.sum(numbers=[1, 2, 3]) == 6
            with pytest.raises(taskell.PayloadError, match=r"demo\.square"):
                conn.submit(SQUARE, {"x": "not a number"})  # bad args raise at the call

    on_loop(main)


def test_publishes_keep_the_order_of_the_calls(config: taskell.Config, amqp: Any) -> None:
    """The first call waits for its queue's declaration on the submission thread; the calls
    after it must not overtake it from the loop."""

    async def main() -> list[str]:
        async with taskell.aio.connect(config=config) as conn:
            demo = AsyncClient(conn)
            handles = [demo.square(x=n) for n in range(50)]
            await conn.flush(RESULT_TIMEOUT)
            return [h.id for h in handles]

    ids = on_loop(main)
    got = []
    while (message := amqp.basic_get(SQUARE.queue, auto_ack=True))[0] is not None:
        got.append(message[1].message_id)
    assert got == ids


def test_progress_arrives_live_and_replays(config: taskell.Config, start_worker: StartWorker) -> None:
    start_worker(parallelism=1, impl=Impl(delay=0.1))

    async def main() -> None:
        async with taskell.aio.connect(config=config) as conn:
            handle = AsyncClient(conn).sum(numbers=list(range(8)))
            live = []
            async for value in handle.progress():
                live.append((value, handle.done()))
            values = [v for v, _ in live]
            assert values == sorted(values) and values[-1] == 100, values
            assert not live[0][1], "the first value came only once the task had ended"
            assert [v async for v in handle.progress()] == values  # replayed, in order
            assert await handle == sum(range(8))
            # A second reader that starts late sees every value too.
            late = AsyncClient(conn).sum(numbers=list(range(4)))
            await asyncio.sleep(0.25)
            assert [v async for v in late.progress()] == [25, 50, 75, 100]
            assert late.latest_progress == 100

    on_loop(main)


def test_abort_a_running_and_a_queued_task(config: taskell.Config, start_worker: StartWorker) -> None:
    start_worker(parallelism=1)

    async def main() -> None:
        async with taskell.aio.connect(config=config) as conn:
            demo = AsyncClient(conn)
            running = demo.sleep(seconds=30)
            queued = demo.sleep(seconds=30)
            async for _ in running.progress():
                break  # it runs
            started = time.monotonic()
            assert await queued.abort() is True  # refused once the worker is free
            assert await running.abort() is True
            with pytest.raises(taskell.TaskAborted, match="while running"):
                await running
            with pytest.raises(taskell.TaskAborted, match="before it started"):
                await queued.result(timeout=RESULT_TIMEOUT)
            assert time.monotonic() - started < 5, "the aborts took too long"
            assert await running.abort() is False  # ended: a no-op
            assert [v async for v in running.progress()]  # its progress ends with the task
            # The worker is free again.
            assert await demo.square(x=3).result(timeout=RESULT_TIMEOUT) == 9

    on_loop(main)


def test_typed_errors_and_retries(config: taskell.Config, start_worker: StartWorker) -> None:
    start_worker(parallelism=2)
    order = Order(id=uuid.uuid4(), placed_at=datetime.now(UTC), amount=decimal.Decimal(10))
    flaky = order.model_copy(update={"tags": (FLAKY_PAYMENTS,)})

    async def main() -> None:
        async with taskell.aio.connect(config=config) as conn:
            demo = AsyncClient(conn)
            declined = demo.book(order=order, discount=decimal.Decimal(2))
            failing = demo.fail(message="no luck")
            retried = demo.book(order=flaky)
            with pytest.raises(DiscountTooLarge) as caught:
                await declined
            assert (caught.value.discount, caught.value.limit) == (decimal.Decimal(2), decimal.Decimal(1))
            assert caught.value.task_id == declined.id
            with pytest.raises(taskell.TaskFailed) as failed:
                await failing
            assert (failed.value.error_type, failed.value.message) == ("ValueError", "no luck")
            receipt = await retried.result(timeout=RESULT_TIMEOUT)
            assert receipt.total == 10
            assert retried.retries == [
                taskell.Retrying(
                    attempt=1, delay_s=1.0, error_type="demo.Unavailable", message="service='payments'"
                )
            ]

    on_loop(main)


def test_result_timeout_leaves_the_task_running(config: taskell.Config, worker: taskell.Worker) -> None:
    async def main() -> None:
        async with taskell.aio.connect(config=config) as conn:
            handle = AsyncClient(conn).sleep(seconds=0.6)
            started = time.monotonic()
            with pytest.raises(TimeoutError, match=handle.id):
                await handle.result(timeout=0.1)
            assert 0.1 <= time.monotonic() - started < 0.4
            assert not handle.done()
            assert await handle.result(timeout=RESULT_TIMEOUT) == 0.6
            # A cancelled await leaves the handle usable too.
            other = AsyncClient(conn).sleep(seconds=0.3)
            waiting = asyncio.ensure_future(other.result())
            await asyncio.sleep(0.05)
            waiting.cancel()
            assert await other == 0.3

    on_loop(main)


def test_dependencies_across_async_and_sync_handles(
    config: taskell.Config, clean_join_state: None, worker: taskell.Worker
) -> None:
    async def main() -> None:
        async with taskell.aio.connect(config=config) as conn:
            demo = AsyncClient(conn)
            a = demo.square(x=3)
            b = demo.square(x=a)  # an async handle as an argument
            c = demo.total(parts=[a, b, 1], after=[a])
            assert await c.result(timeout=RESULT_TIMEOUT) == 9 + 81 + 1
            # Sync ↔ async: a sync connection (used from a thread: its calls block) takes an async
            # handle as a dependency, and an async submission a pending sync handle.
            sync_conn = await asyncio.to_thread(taskell.connect, config=config)
            try:
                sync_demo = Client(sync_conn)
                from_async = await asyncio.to_thread(lambda: sync_demo.square(x=demo.square(x=2)))
                sync_handle = await asyncio.to_thread(lambda: sync_demo.sleep(seconds=0.3))
                on_sync = demo.sleep(seconds=sync_handle)
                assert not sync_handle.done()
                assert await on_sync.result(timeout=RESULT_TIMEOUT) == 0.3
                assert await asyncio.to_thread(from_async.result, RESULT_TIMEOUT) == 16
            finally:
                await asyncio.to_thread(sync_conn.close)
            # A failure upstream fails the dependent, typed.
            broken = demo.total(parts=[1], after=[demo.fail()])
            with pytest.raises(taskell.DependencyFailed) as failed:
                await broken.result(timeout=RESULT_TIMEOUT)
            assert isinstance(failed.value.cause, taskell.TaskFailed)

    on_loop(main)


def test_attach_after_the_submitter_left(config: taskell.Config, worker: taskell.Worker, amqp: Any) -> None:
    results = f"taskell.reply.test-aio-attach-{time.time_ns()}"

    async def main() -> None:
        async with taskell.aio.connect(config=config, results=results) as first:
            task_id = AsyncClient(first).sleep(seconds=0.5).id
        second = await taskell.aio.connect(config=config, results=results)
        try:
            handle = await taskell.aio.attach(second, SLEEP, task_id)
            values = [v async for v in handle.progress()]
            assert await handle == 0.5
            assert values and values == sorted(values)
        finally:
            await second.close()

    try:
        on_loop(main)
    finally:
        amqp.queue_delete(results)


def test_options_delay_priority_and_expiry(
    config: taskell.Config, start_worker: StartWorker, amqp: Any
) -> None:
    async def main() -> tuple[str, str]:
        async with taskell.aio.connect(config=config) as conn:
            view = conn.options(priority=8).options(expires=60)
            marked = AsyncClient(view).square(x=2)
            fired = taskell.aio.fire(AsyncClient(conn).square, x=5)
            await conn.flush(RESULT_TIMEOUT)
            return marked.id, fired

    marked, fired = on_loop(main)
    wait_until(
        lambda: amqp.queue_declare("taskell.q1", passive=True).method.message_count == 2, 10, "both tasks"
    )
    _, props, body = amqp.basic_get("taskell.q1", auto_ack=True)
    assert (props.message_id, props.priority, json.loads(body)) == (marked, 8, {"x": 2})
    assert props.headers[_wire.EXPIRES_HEADER]
    _, props, _ = amqp.basic_get("taskell.q1", auto_ack=True)
    assert (props.message_id, props.reply_to) == (fired, None)  # fire and forget: no reply

    start_worker(parallelism=2)

    async def delayed() -> None:
        async with taskell.aio.connect(config=config) as conn:
            started = time.monotonic()
            assert await AsyncClient(conn.options(delay=0.6)).square(x=4) == 16
            assert time.monotonic() - started >= 0.6

    on_loop(delayed)


def test_thousand_concurrent_awaits_never_stall_the_loop(
    config: taskell.Config, spawn_worker: SpawnWorker
) -> None:
    """1,000 awaited tasks (and a few sleeping ones whose progress is followed, one aborted)
    while a ticker proves the loop never stalls more than 50 ms."""
    spawn_worker(parallelism=4)

    async def follow(handle: taskell.aio.TaskHandle[float, float]) -> list[float]:
        return [v async for v in handle.progress()]

    async def main() -> None:
        conn = await taskell.aio.connect(config=config)
        try:
            demo = AsyncClient(conn)
            sleepers = [demo.sleep(seconds=0.3) for _ in range(3)]
            victim = demo.sleep(seconds=30)
            squares = []
            for n in range(1000):  # as requests arrive: some per loop turn (see SUBMIT_BURST)
                squares.append(demo.square(x=n))
                if n % SUBMIT_BURST == 0:
                    await asyncio.sleep(0)
            followed = [asyncio.ensure_future(follow(h)) for h in sleepers]
            assert await asyncio.gather(*squares) == [n * n for n in range(1000)]
            assert await asyncio.gather(*sleepers) == [0.3] * 3
            for values in await asyncio.gather(*followed):
                assert values and values == sorted(values)
            assert await victim.abort()
            with pytest.raises(taskell.TaskAborted):
                await victim
            assert await conn.inspect(wait=0.2)
        finally:
            await conn.close()

    on_loop(main)


def test_a_closed_connection_fails_its_pending_handles(config: taskell.Config) -> None:
    """No worker: closing (without flushing) ends the handles still waiting, and awaiting them
    raises instead of hanging; submitting afterwards raises at once."""

    async def main() -> None:
        conn = await taskell.aio.connect(config=config)
        handle = AsyncClient(conn).square(x=1)
        waiting = asyncio.ensure_future(handle.result())
        await conn.flush(RESULT_TIMEOUT)
        await conn.close(flush=False)
        with pytest.raises(taskell.BrokerUnavailable):
            await waiting
        with pytest.raises(taskell.BrokerUnavailable):
            AsyncClient(conn).square(x=2)

    on_loop(main)
