"""Time limits, expiry and priorities on the in-memory broker, and their wire forms: a handler
past its ``time_limit`` is stopped (thread pool: interrupted, ``finally`` runs; process pool: its
child killed) and its client gets ``TimeLimitExceeded``; an expired task never runs and its
client gets ``TaskExpired``; queues get priorities only where a task asks, never on quorum."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import taskell
from generated.demo import FAIL, SLEEP, SQUARE, SleepArgs, SquareArgs
from taskell import _wire
from taskell._deps import dependency_failed
from taskell._execution import time_limit_interval
from taskell.handle import TaskHandle
from taskell.registry import Registry

_names = itertools.count()

LIMITED_SLEEP = dataclasses.replace(SLEEP, time_limit=0.3)
PRIORITY_SQUARE = dataclasses.replace(SQUARE, queue_priorities=True)


def memory_config(**overrides: Any) -> taskell.Config:
    return taskell.Config.load(None, env={}, url=f"memory://limits-{next(_names)}", **overrides)


# Time limits


def spin(seconds: float) -> float:
    """Run Python code for ``seconds`` (bounded, so a test whose limit never fires fails
    instead of hanging)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.005)
    return seconds


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_handler_past_its_time_limit_is_stopped(pool: str) -> None:
    finally_ran = threading.Event()

    def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        try:
            return spin(15)  # Python code: interruptible in both pools
        finally:
            finally_ran.set()  # in the process pool this is the child's copy, never seen here

    def square(ctx: taskell.Context[None], args: SquareArgs) -> int:
        return os.getpid()

    reg = Registry()
    reg.add(LIMITED_SLEEP, sleep)
    reg.add(SQUARE, square)
    config = memory_config(pool=pool)
    with taskell.Worker(reg, config, parallelism=1), taskell.connect(config=config) as conn:
        started = time.monotonic()
        handle = conn.submit(LIMITED_SLEEP, {"seconds": 60})
        with pytest.raises(taskell.TimeLimitExceeded) as info:
            handle.result(timeout=10)
        elapsed = time.monotonic() - started
        error = info.value
        assert (error.limit_s, error.task_id, error.task) == (0.3, handle.id, "demo.sleep")
        assert error.error_type == "taskell.TimeLimitExceeded"
        assert error.message == "stopped after its time limit of 0.3 s"
        assert 0.3 <= elapsed < 5
        # The pool slot is free again (process pool: a new child).
        pid = conn.submit(SQUARE, {"x": 1}).result(timeout=10)
        if pool == "thread":
            assert finally_ran.is_set()
            assert "time.sleep(0.005)" in error.traceback  # where it was interrupted
            assert pid == os.getpid()
        else:
            assert not finally_ran.is_set()
            assert pid != os.getpid()


def test_a_task_that_ends_in_time_is_not_stopped() -> None:
    def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        time.sleep(args.seconds)
        return args.seconds

    reg = Registry()
    reg.add(dataclasses.replace(SLEEP, time_limit=5.0), sleep)
    config = memory_config()
    with taskell.Worker(reg, config, parallelism=2), taskell.connect(config=config) as conn:
        handles = [conn.submit(SLEEP, {"seconds": 0.2}) for _ in range(4)]
        assert [h.result(timeout=10) for h in handles] == [0.2] * 4


def test_time_limit_failure_reaches_a_dependent_as_its_cause() -> None:
    def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        return spin(15)

    reg = Registry()
    reg.add(LIMITED_SLEEP, sleep)
    reg.add(SQUARE, lambda ctx, args: args.x * args.x)
    config = memory_config(parallelism=2)
    with taskell.Worker(reg, config), taskell.connect(config=config) as conn:
        upstream = conn.submit(LIMITED_SLEEP, {"seconds": 60})
        dependent = conn.submit(SQUARE, {"x": 2}, after=[upstream])
        with pytest.raises(taskell.DependencyFailed) as info:
            dependent.result(timeout=10)
        assert isinstance(info.value.cause, taskell.TimeLimitExceeded)
        assert info.value.cause.limit_s == 0.3


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_time_limit_failure_is_retried_when_the_policy_names_it(pool: str) -> None:
    policy = taskell.RetryPolicy(attempts=3, delay=0.05, on=(_wire.TIME_LIMIT_EXCEEDED,))
    spec = dataclasses.replace(LIMITED_SLEEP, retry=policy)

    def sleep(ctx: taskell.Context[float], args: SleepArgs) -> float:
        return spin(15) if ctx.attempt < 3 else float(ctx.attempt)  # the first two overrun

    reg = Registry()
    reg.add(spec, sleep)
    config = memory_config(pool=pool)
    with taskell.Worker(reg, config, parallelism=1), taskell.connect(config=config) as conn:
        handle = conn.submit(spec, {"seconds": 1})
        assert handle.result(timeout=20) == 3.0
        assert [(r.attempt, r.error_type) for r in handle.retries] == [
            (1, _wire.TIME_LIMIT_EXCEEDED),
            (2, _wire.TIME_LIMIT_EXCEEDED),
        ]


def test_the_time_limit_sweep_interval() -> None:
    assert time_limit_interval([30.0, 600.0]) == 1.0
    assert time_limit_interval([2.0, 30.0]) == 0.2
    assert time_limit_interval([0.1]) == 0.05


def test_time_limit_wire_form_decodes_to_time_limit_exceeded() -> None:
    body = json.loads(_wire.time_limit_body(1.5, "Traceback ..."))
    assert body == {
        "error_type": _wire.TIME_LIMIT_EXCEEDED,
        "message": "stopped after its time limit of 1.5 s",
        "traceback": "Traceback ...",
        "error": {"limit_s": 1.5},
    }
    error = _wire.task_failed(SLEEP, "t-1", body)
    assert isinstance(error, taskell.TimeLimitExceeded)
    assert (error.limit_s, error.task_id, error.task, error.traceback) == (
        1.5,
        "t-1",
        "demo.sleep",
        "Traceback ...",
    )
    # Without a usable limit it stays a plain TaskFailed, like an undecodable declared error.
    bad_forms: list[dict[str, Any]] = [
        {},
        {"error": {"limit_s": "soon"}},
        {"error": {"limit_s": True}},
        {"error": [1]},
    ]
    for bad in bad_forms:
        plain = _wire.task_failed(SLEEP, "t-1", {**body, "error": None, **bad})
        assert type(plain) is taskell.TaskFailed and plain.error_type == _wire.TIME_LIMIT_EXCEEDED
    # As a dependency failure's cause.
    failure = json.loads(
        _wire.dependency_failed_body("up", "demo.sleep", _wire.FAILED, _wire.time_limit_body(2, ""))
    )
    cause = dependency_failed("down", failure).cause
    assert isinstance(cause, taskell.TimeLimitExceeded) and cause.limit_s == 2.0


# Expiry


def test_an_expired_task_never_runs_and_its_client_gets_task_expired() -> None:
    ran: list[int] = []

    def square(ctx: taskell.Context[None], args: SquareArgs) -> int:
        ran.append(args.x)
        return args.x * args.x

    reg = Registry()
    reg.add(SQUARE, square)
    config = memory_config()
    with taskell.connect(config=config) as conn:
        expired = conn.options(expires=0.2).submit(SQUARE, {"x": 1})
        fresh = conn.options(expires=60).submit(SQUARE, {"x": 2})
        time.sleep(0.4)  # no worker yet: the first expires in the queue
        with taskell.Worker(reg, config):
            with pytest.raises(taskell.TaskExpired) as info:
                expired.result(timeout=10)
            assert info.value.task_id == expired.id
            assert str(info.value).startswith(f"task {expired.id}: expired at ")
            assert fresh.result(timeout=10) == 4
            dependent = conn.submit(SQUARE, {"x": 3}, after=[expired])
            with pytest.raises(taskell.DependencyFailed) as dep:
                dependent.result(timeout=10)
            assert isinstance(dep.value.cause, taskell.TaskExpired)
            assert dep.value.cause.task_id == expired.id
    assert ran == [2]


# Priorities


def test_the_worker_starts_waiting_tasks_highest_priority_first() -> None:
    started: list[int] = []
    release = threading.Event()

    def square(ctx: taskell.Context[None], args: SquareArgs) -> int:
        started.append(args.x)
        if args.x < 0:
            release.wait(10)
        return args.x

    reg = Registry()
    reg.add(PRIORITY_SQUARE, square)
    config = memory_config()
    with taskell.Worker(reg, config, parallelism=1) as worker, taskell.connect(config=config) as conn:
        blocker = conn.submit(PRIORITY_SQUARE, {"x": -1})
        deadline = time.monotonic() + 10
        while not started and time.monotonic() < deadline:
            time.sleep(0.01)
        priorities = [3, None, 9, 0, 5, 9, 1, 5]
        handles = [
            conn.options(priority=p).submit(PRIORITY_SQUARE, {"x": n}) for n, p in enumerate(priorities)
        ]
        while len(worker._execution._buffer) < len(handles) and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        release.set()
        assert blocker.result(timeout=10) == -1
        assert [h.result(timeout=10) for h in handles] == list(range(len(priorities)))
    assert started == [-1, 2, 5, 4, 7, 0, 6, 1, 3]


def test_queue_arguments_have_priorities_only_where_asked() -> None:
    classic, quorum = memory_config(), memory_config(queue_type="quorum")
    assert _wire.queue_arguments(classic) == {"x-queue-type": "classic"}
    assert _wire.queue_arguments(classic, priorities=True) == {"x-queue-type": "classic", "x-max-priority": 9}
    assert _wire.queue_arguments(quorum)["x-queue-type"] == "quorum"
    with pytest.raises(taskell.ConfigError) as info:
        _wire.queue_arguments(quorum, priorities=True, queue="taskell.q1")
    assert info.value.key == "taskell.queue_type"
    assert "quorum queues cannot order tasks by priority" in info.value.message
    assert "taskell.q1" in info.value.message


def test_quorum_queues_refuse_priorities_at_worker_start_and_first_submission() -> None:
    square: Callable[[taskell.Context[None], SquareArgs], int] = lambda ctx, args: args.x  # noqa: E731
    reg = Registry()
    reg.add(PRIORITY_SQUARE, square)
    reg.add(FAIL, lambda ctx, args: None)
    quorum = memory_config(queue_type="quorum")
    with pytest.raises(taskell.ConfigError) as info:
        taskell.Worker(reg, quorum)
    assert info.value.key == "taskell.queue_type"
    # A worker consuming only queues without priorities is fine.
    taskell.Worker(reg, quorum, queues=[FAIL.queue])
    with taskell.connect(config=quorum) as conn:  # connect() does not know the schema yet
        dependency: TaskHandle[Any, Any] = conn.submit(FAIL, {})
        with pytest.raises(taskell.ConfigError) as submitted:
            conn.submit(PRIORITY_SQUARE, {"x": 1})
        assert submitted.value.key == "taskell.queue_type"
        with pytest.raises(taskell.ConfigError):
            conn.submit(PRIORITY_SQUARE, {"x": 1}, after=[dependency])
