"""Retries on a real RabbitMQ: a failed attempt runs again as a new delivery of the same task
after its delay (``ctx.attempt`` counts), the client gets a ``retrying`` notice per retry and
one final outcome, and progress of every attempt in one stream; what is never retried; the
backoff is never early; workers killed during attempts leave the attempt count right (and a
retry starts with a fresh redelivery count); a declared error crosses the wire typed from the
process pool; an abort while a task waits for its retry ends it; dependents fire on the final
outcome only.

Specs with a retry policy are built here by hand from the demo's."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import functools
import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika.exceptions  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import BOOK, SQUARE, SUM, Client, DiscountTooLarge, Order, Receipt, Unavailable
from tests.integration.retry_handlers import RETRIED_SUM
from tests.support import (
    RESULT_TIMEOUT,
    ROOT,
    TASKELL,
    RunCli,
    StartWorker,
    cli_env,
    stop_process,
    wait_consuming,
    wait_until,
)

ORDER = Order(
    id=uuid.UUID(int=42),
    placed_at=datetime.datetime(2026, 3, 4, 5, 6, tzinfo=datetime.UTC),
    amount=decimal.Decimal("10"),
)
POOLS = ["thread", "process"]


def retried(spec: taskell.TaskSpec[Any, Any, Any], **policy: Any) -> taskell.TaskSpec[Any, Any, Any]:
    return dataclasses.replace(spec, retry=taskell.RetryPolicy(**policy))


def serve(
    config: taskell.Config,
    *handlers: tuple[taskell.TaskSpec[Any, Any, Any], Callable[..., Any]],
    pool: str = "thread",
) -> taskell.Worker:
    registry = taskell.Registry()
    for spec, run in handlers:
        registry.add(spec, run)
    return taskell.Worker(registry, config.model_copy(update={"pool": pool}), parallelism=2)


class Attempts:
    """What the handlers of a test saw, per task id (thread pool: the handlers run here)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seen: dict[str, list[tuple[int, float]]] = {}  # task id -> [(ctx.attempt, start time)]

    def start(self, ctx: taskell.Context[Any]) -> None:
        with self._lock:
            self.seen.setdefault(ctx.task_id, []).append((ctx.attempt, time.monotonic()))

    def of(self, task_id: str) -> list[int]:
        with self._lock:
            return [attempt for attempt, _ in self.seen.get(task_id, [])]


@pytest.mark.parametrize("pool", POOLS)
def test_a_task_failing_twice_then_succeeding(
    config: taskell.Config, conn: taskell.Connection, pool: str
) -> None:
    spec = retried(SUM, attempts=3, delay=0.2)

    def flaky(ctx: taskell.Context[int], args: Any) -> int:
        ctx.progress(ctx.attempt)
        if ctx.attempt < 3:
            raise ValueError(f"attempt {ctx.attempt} fails")
        return 10 * ctx.attempt

    with serve(config, (spec, flaky), pool=pool):
        handle = conn.submit(spec, {"numbers": [1]})
        assert handle.result(timeout=RESULT_TIMEOUT) == 30
    assert list(handle.progress()) == [1, 2, 3]  # ctx.attempt of each run, in one stream
    assert handle.retries == [
        taskell.Retrying(attempt=1, delay_s=0.2, error_type="ValueError", message="attempt 1 fails"),
        taskell.Retrying(attempt=2, delay_s=0.4, error_type="ValueError", message="attempt 2 fails"),
    ]


@pytest.mark.parametrize("pool", POOLS)
def test_exhausted_attempts_raise_the_last_error_typed(
    config: taskell.Config, conn: taskell.Connection, pool: str
) -> None:
    spec = retried(BOOK, attempts=3, delay=0.1, on=("demo.DiscountTooLarge",))

    def book(ctx: taskell.Context[str], args: Any) -> Receipt:
        ctx.progress(f"attempt {ctx.attempt}")
        raise DiscountTooLarge(discount=decimal.Decimal(ctx.attempt), limit=decimal.Decimal(1))

    with serve(config, (spec, book), pool=pool):
        handle = conn.submit(spec, {"order": ORDER})
        with pytest.raises(DiscountTooLarge) as info:
            handle.result(timeout=RESULT_TIMEOUT)
    assert (info.value.discount, info.value.limit) == (decimal.Decimal(3), decimal.Decimal(1))
    assert (info.value.task_id, info.value.error_type) == (handle.id, "demo.DiscountTooLarge")
    assert [(r.attempt, r.delay_s, r.error_type) for r in handle.retries] == [
        (1, 0.1, "demo.DiscountTooLarge"),
        (2, 0.2, "demo.DiscountTooLarge"),
    ]
    assert "Decimal('2')" in handle.retries[1].message
    assert list(handle.progress()) == ["attempt 1", "attempt 2", "attempt 3"]


def test_an_error_not_in_on_is_final(config: taskell.Config, conn: taskell.Connection) -> None:
    spec = retried(BOOK, attempts=3, delay=0.1, on=("demo.DiscountTooLarge",))
    attempts = Attempts()

    def book(ctx: taskell.Context[str], args: Any) -> Receipt:
        attempts.start(ctx)
        raise ValueError("not retried")

    with serve(config, (spec, book)):
        handle = conn.submit(spec, {"order": ORDER})
        with pytest.raises(taskell.TaskFailed) as info:
            handle.result(timeout=RESULT_TIMEOUT)
        time.sleep(0.5)  # a retry would have started by now
    assert (info.value.error_type, info.value.message) == ("ValueError", "not retried")
    assert handle.retries == []
    assert attempts.of(handle.id) == [1]


def test_aborts_and_payload_errors_are_never_retried(
    config: taskell.Config, conn: taskell.Connection
) -> None:
    spec = retried(SUM, attempts=3, delay=0.1)
    attempts = Attempts()

    def run(ctx: taskell.Context[int], args: Any) -> Any:
        attempts.start(ctx)
        if args.numbers == [0]:  # runs until aborted
            while True:
                ctx.progress(1)
                time.sleep(0.01)
        return "not an int"  # a result that does not fit its type: a payload error

    with serve(config, (spec, run)):
        looping = conn.submit(spec, {"numbers": [0]})
        bad_result = conn.submit(spec, {"numbers": [1]})
        wait_until(lambda: looping.latest_progress is not None, 20, "the looping task started")
        assert looping.abort()
        with pytest.raises(taskell.TaskAborted):
            looping.result(timeout=RESULT_TIMEOUT)
        with pytest.raises(taskell.TaskFailed) as info:
            bad_result.result(timeout=RESULT_TIMEOUT)
        time.sleep(0.5)  # a retry would have started by now
    assert info.value.error_type == "taskell.PayloadError"
    assert "result does not fit its type" in info.value.message
    for handle in (looping, bad_result):
        assert handle.retries == []
        assert attempts.of(handle.id) == [1]


def test_each_attempt_waits_at_least_its_delay(config: taskell.Config, conn: taskell.Connection) -> None:
    policy = taskell.RetryPolicy(attempts=4, delay=0.4, backoff="exponential", max_delay=1.0)
    spec = dataclasses.replace(SUM, retry=policy)
    failed_at: list[float] = []
    attempts = Attempts()

    def flaky(ctx: taskell.Context[int], args: Any) -> int:
        attempts.start(ctx)
        if ctx.attempt < 4:
            failed_at.append(time.monotonic())
            raise ValueError("again")
        return ctx.attempt

    with serve(config, (spec, flaky)):
        handle = conn.submit(spec, {"numbers": [1]})
        assert handle.result(timeout=RESULT_TIMEOUT) == 4
    started = [at for _, at in attempts.seen[handle.id]]
    gaps = [start - failed for failed, start in zip(failed_at, started[1:], strict=True)]
    delays = [policy.delay_after(n) for n in (1, 2, 3)]
    assert delays == [0.4, 0.8, 1.0]
    print("retry gaps (s):", [round(g, 3) for g in gaps], "delays:", delays)
    for gap, delay in zip(gaps, delays, strict=True):
        assert gap >= delay, f"an attempt started {delay - gap:.3f} s early: gaps {gaps}"
        assert gap < delay + 5.0, f"an attempt started {gap - delay:.1f} s late: gaps {gaps}"
    assert [r.delay_s for r in handle.retries] == delays


# Workers killed during attempts


@pytest.fixture(params=["classic", "quorum"])
def queue_type_url(request: pytest.FixtureRequest, broker: str) -> Iterator[tuple[str, str]]:
    """(queue type, broker URL): quorum queues get a vhost of their own (the shared one holds
    classic join queues), created with rabbitmqctl and deleted afterwards."""
    if request.param == "classic":
        yield "classic", broker
        return
    name = f"taskell-retry-{uuid.uuid4().hex[:8]}"
    for command in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
        done = subprocess.run(["rabbitmqctl", "-q", *command], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    try:
        yield "quorum", f"amqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60, check=False
        )


@pytest.mark.parametrize("pool", POOLS)
def test_workers_killed_during_attempts_leave_the_attempt_count_right(
    queue_type_url: tuple[str, str], pool: str, tmp_path: Path
) -> None:
    """Each attempt's first delivery blocks and its worker is SIGKILLed; the redelivery runs on
    the next worker as the same attempt. With ``delivery_limit`` 2, a redelivery count carried
    over from attempt 1 into attempt 2 would dead-letter attempt 2's redelivery."""
    queue_type, url = queue_type_url
    env = {
        "TASKELL_QUEUE_TYPE": queue_type,
        "TASKELL_DELIVERY_LIMIT": "2",
        "TASKELL_PREFETCH": "1",
        "TASKELL_POOL": pool,
    }
    config = taskell.Config.load(None, env=env, url=url)
    procs: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"worker-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [TASKELL, "worker", "tests.integration.retry_handlers:handlers"],
                cwd=ROOT,
                env={**cli_env(url), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        wait_consuming(config, [(proc, log_path)])
        return proc

    try:
        with taskell.connect(config=config) as conn:
            handle = conn.submit(RETRIED_SUM, {"numbers": [1]})
            for started in (100, 200):  # the progress of attempt 1's, then attempt 2's first delivery
                proc = spawn()
                wait_until(functools.partial(reached, handle, started), 30, f"progress {started}")
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
                assert proc.returncode == -signal.SIGKILL
                assert not handle.done()
            spawn()
            assert handle.result(timeout=RESULT_TIMEOUT) == 2  # ctx.attempt of the run that succeeded
    finally:
        for proc in procs:
            stop_process(proc)
    # 100 * ctx.attempt (+1 on a redelivery): attempt 1 twice, then attempt 2 twice; never a 3.
    assert list(handle.progress()) == [100, 101, 200, 201]
    assert [(r.attempt, r.message) for r in handle.retries] == [(1, "attempt 1 fails")]


def reached(handle: taskell.TaskHandle[int, int], progress: int) -> bool:
    return handle.latest_progress == progress


# Aborts while a task waits for its retry


@pytest.mark.parametrize("restart", [False, True], ids=["same-worker", "worker-started-after-the-abort"])
def test_an_abort_while_the_task_waits_for_its_retry_ends_it(
    config: taskell.Config, conn: taskell.Connection, restart: bool
) -> None:
    spec = retried(SUM, attempts=3, delay=3.0)
    attempts = Attempts()

    def flaky(ctx: taskell.Context[int], args: Any) -> int:
        attempts.start(ctx)
        raise ValueError("again")

    worker = serve(config, (spec, flaky))
    with worker:
        handle = conn.submit(spec, {"numbers": [1]})
        wait_until(lambda: handle.retries != [], 20, "attempt 1 failed and is retried")
        if restart:
            worker.stop(10)  # the next attempt waits in the broker, with no worker at all
        assert handle.abort()
        if restart:
            # A new worker learns of the abort from the broker's abort records.
            with serve(config, (spec, flaky)), pytest.raises(taskell.TaskAborted):
                handle.result(timeout=RESULT_TIMEOUT)
        else:
            with pytest.raises(taskell.TaskAborted):
                handle.result(timeout=RESULT_TIMEOUT)
    assert attempts.of(handle.id) == [1]
    assert [r.attempt for r in handle.retries] == [1]


# Dependencies


@pytest.mark.parametrize("submit_dependent", ["at-once", "after-a-retry"])
def test_a_retried_upstream_fires_its_dependent_on_its_final_outcome(
    config: taskell.Config, conn: taskell.Connection, submit_dependent: str
) -> None:
    spec = retried(SUM, attempts=3, delay=0.2)
    attempts = Attempts()

    def upstream(ctx: taskell.Context[int], args: Any) -> int:
        attempts.start(ctx)
        if ctx.attempt <= args.numbers[0]:  # fails that many attempts
            raise ValueError(f"attempt {ctx.attempt} fails")
        total: int = sum(args.numbers)
        return total

    def square(ctx: taskell.Context[None], args: Any) -> int:
        attempts.start(ctx)
        value: int = args.x * args.x
        return value

    with serve(config, (spec, upstream), (SQUARE, square)):
        ok_later = conn.submit(spec, {"numbers": [1, 5]})  # fails once, then returns 6
        never = conn.submit(spec, {"numbers": [9]})  # fails every attempt
        if submit_dependent == "after-a-retry":
            wait_until(lambda: ok_later.retries != [] and never.retries != [], 20, "both retried once")
            assert not ok_later.done() and not never.done()
        good = conn.submit(SQUARE, {"x": ok_later})
        bad = conn.submit(SQUARE, {"x": never})
        assert good.result(timeout=RESULT_TIMEOUT) == 36
        with pytest.raises(taskell.DependencyFailed) as info:
            bad.result(timeout=RESULT_TIMEOUT)
    assert info.value.dependency_id == never.id
    assert isinstance(info.value.cause, taskell.TaskFailed)
    assert info.value.cause.message == "attempt 3 fails"  # the final outcome, not the first failure
    assert attempts.of(ok_later.id) == [1, 2]
    assert attempts.of(never.id) == [1, 2, 3]
    assert attempts.of(good.id) == [1]
    assert attempts.of(bad.id) == []  # never ran


def test_a_leased_attempt_that_fails_is_retried_once_and_its_lease_dropped(
    config: taskell.Config, conn: taskell.Connection, amqp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskell.worker")
    leasing = config.model_copy(update={"lease_after": 0.3, "lease_ttl": 2.0})
    spec = retried(SUM, attempts=2, delay=0.1)
    attempts = Attempts()

    def slow_then_fine(ctx: taskell.Context[int], args: Any) -> int:
        attempts.start(ctx)
        if ctx.attempt == 1:
            time.sleep(2.0)  # leased meanwhile: the original delivery is acknowledged
            raise ValueError("attempt 1 fails")
        return ctx.attempt

    with serve(leasing, (spec, slow_then_fine)):
        handle = conn.submit(spec, {"numbers": [1]})
        assert handle.result(timeout=RESULT_TIMEOUT) == 2
        time.sleep(3.0)  # past lease_ttl: a lease copy left behind would have come back by now
    assert f"task {handle.id} runs long: leasing it" in caplog.text
    assert attempts.of(handle.id) == [1, 2]
    assert amqp.queue_declare(SUM.queue, passive=True).method.message_count == 0
    for name in (f"taskell.lease.{handle.id}.a", f"taskell.lease.{handle.id}.b"):
        channel = amqp.connection.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            channel.queue_declare(name, passive=True)


# The schema's own policy (demo.book retries Unavailable), through the generated Client and the CLI


class FlakyBooking(Impl):
    """``book`` finds its pricing service unavailable on the first attempt."""

    def book(
        self,
        ctx: taskell.Context[str],
        order: Order,
        discount: decimal.Decimal | None = None,
        coupon: bytes = b"",
    ) -> Receipt:
        ctx.progress(f"attempt {ctx.attempt}")
        if ctx.attempt == 1:
            raise Unavailable(service="pricing")
        return super().book(ctx, order, discount, coupon)


def test_the_schema_retry_policy_through_the_generated_client(
    conn: taskell.Connection, start_worker: StartWorker
) -> None:
    assert BOOK.retry is not None and BOOK.retry.on == ("demo.Unavailable",)
    start_worker(impl=FlakyBooking())
    handle = Client(conn).book(order=ORDER)
    assert handle.result(timeout=RESULT_TIMEOUT).total == decimal.Decimal("10")
    assert handle.retries == [
        taskell.Retrying(attempt=1, delay_s=1.0, error_type="demo.Unavailable", message="service='pricing'")
    ]
    values = list(handle.progress())  # attempt 2's first values may be coalesced with its last
    assert (values[0], values[-1]) == ("attempt 1", "booked")


def test_call_follow_prints_each_retry(taskell_cli: RunCli, start_worker: StartWorker) -> None:
    start_worker(impl=FlakyBooking())
    order = ORDER.model_dump_json()
    proc = taskell_cli(
        "call", "tasks.schema.yaml", "book", f'{{"order": {order}}}', "--follow", "--timeout", "30"
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"] == "10"
    assert "attempt 1 failed (demo.Unavailable: service='pricing'); retrying in 1s" in proc.stderr
    assert "attempt 2 failed" not in proc.stderr
