"""The worker's intake checks (``taskell._intake``): which decision each delivery gets, without
a broker."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

import taskell
from examples.worker import Impl
from generated.demo import SQUARE, SquareArgs, registry
from taskell import _wire
from taskell._intake import DeadLetter, Finish, Hold, Intake, Recount, Run
from taskell.transport import Delivery, Message


def intake(aborted: set[str] | None = None, **overrides: Any) -> Intake:
    config = taskell.Config.load(None, env={}, url="memory://intake", **overrides)
    return Intake(registry(Impl()), config, (aborted or set()).__contains__)


def delivery(
    body: bytes = b'{"x": 3}',
    *,
    type: str | None = SQUARE.name,
    task_id: str | None = "t-1",
    redelivered: bool = False,
    headers: dict[str, Any] | None = None,
) -> Delivery:
    message = Message(
        body=body,
        type=type,
        message_id=task_id,
        reply_to="replies",
        headers={_wire.FINGERPRINT_HEADER: SQUARE.fingerprint} if headers is None else headers,
    )
    return Delivery(message, tag=1, redelivered=redelivered, queue=SQUARE.queue)


def test_a_valid_task_runs_with_its_validated_args() -> None:
    decision = intake().check(delivery())
    assert isinstance(decision, Run)
    assert decision.binding.spec is SQUARE and decision.args == SquareArgs(x=3)


@pytest.mark.parametrize(
    ("kwargs", "overrides", "reason"),
    [
        ({"type": "demo.nope"}, {}, "unknown task type 'demo.nope'"),
        ({"type": None}, {}, "unknown task type None"),
        ({"body": b'{"x": 30000}'}, {"max_payload_bytes": 10}, "demo.square: payload of 12 bytes over"),
        ({"task_id": None}, {}, "demo.square: message has no message_id (task id)"),
        ({"task_id": ""}, {}, "demo.square: message has no message_id (task id)"),
        ({"body": b'{"x": "seven"}'}, {}, "demo.square: args do not validate: x: "),
        ({"body": b"not json"}, {}, "demo.square: args do not validate: (root): "),
    ],
)
def test_what_can_never_run_is_dead_lettered_with_its_reason(
    kwargs: dict[str, Any], overrides: dict[str, Any], reason: str
) -> None:
    decision = intake(**overrides).check(delivery(**kwargs))
    assert isinstance(decision, DeadLetter)
    assert decision.reason.startswith(reason), decision.reason


def test_the_first_check_that_applies_gives_the_reason() -> None:
    # Unknown type before size, size before the missing id.
    checks = intake(max_payload_bytes=5)
    first = checks.check(delivery(b"x" * 100, type="demo.nope", task_id=None))
    assert first == DeadLetter("unknown task type 'demo.nope'")
    second = checks.check(delivery(b"x" * 100, task_id=None))
    assert isinstance(second, DeadLetter) and "over max_payload_bytes" in second.reason


def test_an_aborted_task_finishes_as_aborted_without_running() -> None:
    decision = intake(aborted={"t-1"}).check(delivery())
    assert isinstance(decision, Finish) and decision.kind == _wire.ABORTED
    assert json.loads(decision.body)["error_type"] == _wire.TASK_ABORTED


def test_a_classic_redelivery_is_replaced_by_a_copy_carrying_the_count() -> None:
    original = delivery(redelivered=True)
    decision = intake(delivery_limit=3).check(original)
    assert isinstance(decision, Recount)
    assert decision.copy.headers[_wire.DELIVERIES_HEADER] == 1
    assert decision.copy.body == original.message.body
    assert decision.copy.message_id == "t-1"
    assert _wire.DELIVERIES_HEADER not in original.message.headers  # the delivery is left alone


def test_a_copy_that_was_counted_runs() -> None:
    headers = {_wire.FINGERPRINT_HEADER: SQUARE.fingerprint, _wire.DELIVERIES_HEADER: 2}
    assert isinstance(intake(delivery_limit=3).check(delivery(headers=headers)), Run)


def test_a_classic_task_redelivered_up_to_the_limit_is_poison() -> None:
    headers = {_wire.DELIVERIES_HEADER: 2}
    decision = intake(delivery_limit=3).check(delivery(redelivered=True, headers=headers))
    assert decision == DeadLetter(
        "demo.square: delivered 4 times, over delivery_limit (3): its worker died on it each time"
    )


@pytest.mark.parametrize(("count", "poison"), [(0, False), (2, False), (3, True), (7, True)])
def test_quorum_queues_count_deliveries_themselves(count: int, poison: bool) -> None:
    headers = {_wire.FINGERPRINT_HEADER: SQUARE.fingerprint, _wire.DELIVERY_COUNT_HEADER: count}
    decision = intake(delivery_limit=3).check(delivery(redelivered=count > 0, headers=headers))
    if poison:
        assert isinstance(decision, DeadLetter) and "over delivery_limit (3)" in decision.reason
    else:
        assert isinstance(decision, Run)  # never republished: the broker counts


def test_a_fingerprint_mismatch_runs_and_warns_once_per_fingerprint(caplog: pytest.LogCaptureFixture) -> None:
    checks = intake()
    caplog.set_level(logging.WARNING, logger="taskell.worker")
    for fingerprint in ("old", "old", "older"):
        assert isinstance(checks.check(delivery(headers={_wire.FINGERPRINT_HEADER: fingerprint})), Run)
    warnings = [r.getMessage() for r in caplog.records if "fingerprint" in r.getMessage()]
    assert len(warnings) == 2
    assert warnings[0].startswith("demo.square: fingerprint old differs from this worker's ")
    assert isinstance(checks.check(delivery()), Run)
    assert len([r for r in caplog.records if "fingerprint" in r.getMessage()]) == 2


def expiring(when: object) -> Delivery:
    return delivery(headers={_wire.FINGERPRINT_HEADER: SQUARE.fingerprint, _wire.EXPIRES_HEADER: when})


def iso(seconds_from_now: float) -> str:
    return (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds_from_now)).isoformat()


# Header forms, as functions of "seconds from now" (evaluated when the test runs, not when it
# is collected: a long suite would otherwise let a "future" time pass).
HEADER_FORMS: dict[str, Callable[[float], object]] = {
    "offset": iso,
    "Z": lambda seconds: iso(seconds).replace("+00:00", "Z"),
    "bytes": lambda seconds: iso(seconds).encode(),  # a header may arrive as bytes
    "naive, as UTC": lambda seconds: iso(seconds).replace("+00:00", ""),
    "another offset": lambda seconds: (
        datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=2)))
        + datetime.timedelta(seconds=seconds)
    ).isoformat(),
}


@pytest.mark.parametrize("form", HEADER_FORMS)
@pytest.mark.parametrize("seconds", [-1, -86400])
def test_an_expired_task_fails_as_expired_without_running(form: str, seconds: float) -> None:
    decision = intake().check(expiring(HEADER_FORMS[form](seconds)))
    assert isinstance(decision, Finish) and decision.kind == _wire.FAILED
    body = json.loads(decision.body)
    assert body["error_type"] == _wire.TASK_EXPIRED
    assert body["message"].startswith("expired at ") and body["message"].endswith(" before it started")


@pytest.mark.parametrize("form", HEADER_FORMS)
@pytest.mark.parametrize("seconds", [60, 3600 * 24 * 365 * 900])
def test_a_task_not_expired_yet_runs(form: str, seconds: float) -> None:
    assert isinstance(intake().check(expiring(HEADER_FORMS[form](seconds))), Run)


def test_an_aborted_and_expired_task_is_aborted() -> None:
    decision = intake(aborted={"t-1"}).check(expiring(iso(-1)))
    assert isinstance(decision, Finish) and decision.kind == _wire.ABORTED


def test_a_malformed_expiry_counts_as_none_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    checks = intake()
    caplog.set_level(logging.WARNING, logger="taskell.worker")
    for when in ("tomorrow", "2026-13-45T00:00:00Z", 12345, b"\xff"):
        assert isinstance(checks.check(expiring(when)), Run)
    warnings = [r.getMessage() for r in caplog.records if _wire.EXPIRES_HEADER in r.getMessage()]
    assert warnings == [f"demo.square: ignoring malformed {_wire.EXPIRES_HEADER} header 'tomorrow'"]


def due_in(seconds: float) -> Delivery:
    due = int((time.time() + seconds) * 1000)
    return delivery(headers={_wire.FINGERPRINT_HEADER: SQUARE.fingerprint, _wire.DUE_HEADER: due})


def test_a_delayed_task_handed_over_before_it_is_due_is_held_again() -> None:
    decision = intake().check(due_in(5.0))
    assert isinstance(decision, Hold) and 4.0 < decision.delay <= 5.0


def test_a_delayed_task_that_is_due_runs() -> None:
    assert isinstance(intake().check(due_in(-0.5)), Run)


def test_an_aborted_delayed_task_is_aborted_without_waiting() -> None:
    assert isinstance(intake({"t-1"}).check(due_in(5.0)), Finish)
