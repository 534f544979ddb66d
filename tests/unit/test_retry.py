"""Retries without a broker: which failures are retried and when (``taskell._retry``), what the
next attempt's message carries (``_wire.retry_copy``), and the runtime on the in-memory
broker: ``ctx.attempt``, the ``retrying`` notices on the handle, the final error, progress of
every attempt in one stream, ``taskell call --follow``'s retry lines."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import io
import itertools
import json
import threading
import uuid
from typing import Any

import pytest
from rich.console import Console

import taskell
from generated.demo import BOOK, SUM, DiscountTooLarge, Order, Receipt
from taskell import _wire
from taskell._progress_bar import follow, retry_line
from taskell._retry import Retry, retry_of
from taskell.handle import deliver_outcome, deliver_progress, deliver_retrying
from taskell.transport import Message
from tests.support import wait_until

POLICY = taskell.RetryPolicy(attempts=3, delay=0.5)
RETRIED_SUM = dataclasses.replace(SUM, retry=POLICY)
RETRIED_BOOK = dataclasses.replace(BOOK, retry=dataclasses.replace(POLICY, on=("demo.DiscountTooLarge",)))


def failed(error_type: str, message: str = "boom") -> bytes:
    return _wire.error_body(error_type, message, "Traceback ...")


def test_a_handler_failure_is_retried_with_the_policy_delay() -> None:
    assert retry_of(RETRIED_SUM, _wire.FAILED, failed("ValueError"), 1) == Retry(1, 0.5, "ValueError", "boom")
    assert retry_of(RETRIED_SUM, _wire.FAILED, failed("ValueError"), 2) == Retry(2, 1.0, "ValueError", "boom")
    # A crashed process-pool child and a time limit are handler failures too.
    assert retry_of(RETRIED_SUM, _wire.FAILED, failed(_wire.WORKER_CRASHED), 1) is not None
    assert retry_of(RETRIED_SUM, _wire.FAILED, failed(_wire.TIME_LIMIT_EXCEEDED), 1) is not None


def test_the_last_attempt_and_a_task_without_policy_are_final() -> None:
    assert retry_of(RETRIED_SUM, _wire.FAILED, failed("ValueError"), 3) is None
    assert retry_of(SUM, _wire.FAILED, failed("ValueError"), 1) is None


@pytest.mark.parametrize(
    "error_type",
    [_wire.PAYLOAD_ERROR, _wire.TASK_ABORTED, _wire.TASK_EXPIRED, _wire.DEPENDENCY_FAILED],
)
def test_what_is_never_retried(error_type: str) -> None:
    assert retry_of(RETRIED_SUM, _wire.FAILED, failed(error_type), 1) is None


@pytest.mark.parametrize("kind", [_wire.RESULT, _wire.ABORTED, _wire.REJECTED])
def test_only_failures_are_retried(kind: str) -> None:
    assert retry_of(RETRIED_SUM, kind, failed("ValueError"), 1) is None


def test_on_names_the_retried_errors() -> None:
    assert retry_of(RETRIED_BOOK, _wire.FAILED, failed("demo.DiscountTooLarge"), 1) is not None
    assert retry_of(RETRIED_BOOK, _wire.FAILED, failed("ValueError"), 1) is None


def test_a_malformed_failure_body_is_final() -> None:
    assert retry_of(RETRIED_SUM, _wire.FAILED, b"not json", 1) is None
    assert retry_of(RETRIED_SUM, _wire.FAILED, b"[1]", 1) is None


def test_the_next_attempt_is_the_same_task_without_its_redelivery_count_or_expiry() -> None:
    original = Message(
        body=b'{"numbers": [1]}',
        type=SUM.name,
        message_id="t-1",
        reply_to="replies",
        content_type=_wire.JSON,
        persistent=True,
        headers={
            _wire.FINGERPRINT_HEADER: SUM.fingerprint,
            _wire.EXPIRES_HEADER: "2026-12-02T10:00:00+00:00",
            _wire.DELIVERIES_HEADER: 2,
            _wire.DELIVERY_COUNT_HEADER: 3,
            "x-death": [{"count": 1}],
            _wire.ATTEMPT_HEADER: 1,
        },
        priority=7,
    )
    before = _wire.now_ms()
    copy = _wire.retry_copy(original, 2)
    assert before <= copy.headers.pop(_wire.SUBMITTED_HEADER) <= _wire.now_ms()  # its queue wait starts now
    assert copy.headers == {
        _wire.FINGERPRINT_HEADER: SUM.fingerprint,
        _wire.ATTEMPT_HEADER: 2,
    }
    assert (copy.body, copy.type, copy.message_id, copy.reply_to, copy.priority, copy.persistent) == (
        original.body,
        SUM.name,
        "t-1",
        "replies",
        7,
        True,
    )
    assert _wire.attempt_of(copy) == 2
    assert original.headers[_wire.DELIVERIES_HEADER] == 2  # the delivery's own message is untouched


@pytest.mark.parametrize(("header", "attempt"), [(None, 1), (3, 3), ("2", 2), ("x", 1), (0, 1)])
def test_the_attempt_of_a_message(header: object, attempt: int) -> None:
    headers = {} if header is None else {_wire.ATTEMPT_HEADER: header}
    assert _wire.attempt_of(Message(body=b"", headers=headers)) == attempt


def test_a_retrying_notice_has_the_wire_keys() -> None:
    body = json.loads(_wire.retrying_body(2, 1.5, "ValueError", "boom"))
    assert body == {"attempt": 2, "delay_s": 1.5, "error_type": "ValueError", "message": "boom"}


# The runtime on the in-memory broker

_names = itertools.count()


@pytest.fixture(params=["thread", "process"])
def config(request: pytest.FixtureRequest) -> taskell.Config:
    url = f"memory://retry-{next(_names)}"
    return taskell.Config.load(None, env={}, url=url, parallelism=2, pool=request.param)


def test_a_task_failing_twice_then_succeeding(config: taskell.Config) -> None:
    spec = dataclasses.replace(SUM, retry=taskell.RetryPolicy(attempts=3, delay=0.05))

    def flaky(ctx: taskell.Context[int], args: Any) -> int:
        ctx.progress(ctx.attempt * 10)
        if ctx.attempt < 3:
            raise ValueError(f"boom {ctx.attempt}")
        return ctx.attempt * 100

    registry = taskell.Registry()
    registry.add(spec, flaky)
    with taskell.Worker(registry, config), taskell.connect(config=config) as conn:
        handle = conn.submit(spec, {"numbers": [1]})
        assert handle.result(timeout=10) == 300  # ctx.attempt was 3 on the last run
        assert list(handle.progress()) == [10, 20, 30]  # every attempt's progress, in one stream
        assert handle.retries == [
            taskell.Retrying(attempt=1, delay_s=0.05, error_type="ValueError", message="boom 1"),
            taskell.Retrying(attempt=2, delay_s=0.1, error_type="ValueError", message="boom 2"),
        ]


def test_exhausted_attempts_raise_the_last_error_typed(config: taskell.Config) -> None:
    spec = dataclasses.replace(BOOK, retry=taskell.RetryPolicy(attempts=2, delay=0.05))

    def book(ctx: taskell.Context[str], args: Any) -> Receipt:
        raise DiscountTooLarge(discount=decimal.Decimal(ctx.attempt), limit=decimal.Decimal(1))

    registry = taskell.Registry()
    registry.add(spec, book)
    order = Order(
        id=uuid.UUID(int=42),
        placed_at=datetime.datetime(2026, 3, 4, 5, 6, tzinfo=datetime.UTC),
        amount=decimal.Decimal(1),
    )
    with taskell.Worker(registry, config), taskell.connect(config=config) as conn:
        handle = conn.submit(spec, {"order": order})
        with pytest.raises(DiscountTooLarge) as info:
            handle.result(timeout=10)
    assert info.value.discount == decimal.Decimal(2)  # the second (last) attempt's error
    assert [(r.attempt, r.error_type) for r in handle.retries] == [(1, "demo.DiscountTooLarge")]


def test_a_retry_line_per_failed_attempt_on_follow() -> None:
    assert retry_line(taskell.Retrying(1, 2.0, "ValueError", "boom")) == (
        "attempt 1 failed (ValueError: boom); retrying in 2s"
    )
    assert retry_line(taskell.Retrying(3, 0.25, "demo.Out[Of]Stock", "[b]x")) == (
        "attempt 3 failed (demo.Out[Of]Stock: [b]x); retrying in 250ms"
    )


def test_follow_prints_each_retry_and_the_handle_stays_pending() -> None:
    conn = taskell.connect("memory://retry-follow")
    try:
        handle = conn._new_handle(SUM)
        deliver_retrying(handle, taskell.Retrying(1, 2.0, "ValueError", "boom [1]"))  # before following
        out = io.StringIO()
        console = Console(file=out, width=80, color_system=None, force_terminal=False)
        following = threading.Thread(target=follow, args=(handle, 10, console))
        following.start()
        deliver_progress(handle, b"50")
        deliver_retrying(handle, taskell.Retrying(2, 4.0, "ValueError", "boom 2"))
        deliver_retrying(handle, taskell.Retrying(2, 4.0, "ValueError", "boom 2"))  # a duplicate
        wait_until(lambda: "attempt 2" in out.getvalue(), 5, "the second retry printed")
        assert not handle.done() and following.is_alive()
        deliver_outcome(handle, b"7", (_wire.RESULT, b"7"))
        following.join(5)
        assert not following.is_alive()
    finally:
        conn.close()
    lines = [line for line in out.getvalue().splitlines() if line.startswith("attempt")]
    assert lines == [
        "attempt 1 failed (ValueError: boom [1]); retrying in 2s",
        "attempt 2 failed (ValueError: boom 2); retrying in 4s",
    ]
    assert handle.retries == [
        taskell.Retrying(1, 2.0, "ValueError", "boom [1]"),
        taskell.Retrying(2, 4.0, "ValueError", "boom 2"),
    ]
    assert handle.result(timeout=1) == 7
