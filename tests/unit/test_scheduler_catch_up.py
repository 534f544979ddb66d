"""What a scheduler fires from a schedule's done-until time: on time, and after an outage under
each ``schedule_catch_up`` policy; task ids; what a message of the state queue says is done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import taskell
from generated.demo import SQUARE
from taskell import _wire
from taskell.scheduler import (
    CATCH_UP_LIMIT,
    DUE_HEADER,
    SCHEDULE_HEADER,
    _parse,
    _state_message,
    due_to_fire,
    task_id,
)
from taskell.transport import Message

T0 = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
EVERY_MINUTE = taskell.Schedule("m", SQUARE, {"x": 1}, every=60.0)
CRON_HOURLY = taskell.Schedule("h", SQUARE, {"x": 1}, cron="0 * * * *", timezone="Europe/Warsaw")


@pytest.mark.parametrize("policy", ["latest", "all", "none"])
def test_on_time_the_due_time_fires_under_every_policy(policy: str) -> None:
    fire, until = due_to_fire(EVERY_MINUTE, T0, T0 + timedelta(seconds=60.2), policy, taking_over=False)  # type: ignore[arg-type]
    assert fire == [T0 + timedelta(minutes=1)]
    assert until == T0 + timedelta(minutes=1)


def test_nothing_due_changes_nothing() -> None:
    assert due_to_fire(EVERY_MINUTE, T0, T0 + timedelta(seconds=59), "all", taking_over=True) == ([], None)


def test_latest_fires_the_latest_missed_once() -> None:
    now = T0 + timedelta(minutes=10, seconds=5)
    fire, until = due_to_fire(EVERY_MINUTE, T0, now, "latest", taking_over=True)
    assert fire == [T0 + timedelta(minutes=10)]
    assert until == T0 + timedelta(minutes=10)


def test_all_fires_each_missed_in_order() -> None:
    now = T0 + timedelta(minutes=10, seconds=5)
    fire, until = due_to_fire(EVERY_MINUTE, T0, now, "all", taking_over=True)
    assert fire == [T0 + timedelta(minutes=m) for m in range(1, 11)]
    assert until == T0 + timedelta(minutes=10)


def test_all_is_capped_to_the_latest_ones() -> None:
    now = T0 + timedelta(days=365)  # a year without a scheduler: computed, not iterated
    fire, until = due_to_fire(EVERY_MINUTE, T0, now, "all", taking_over=True)
    assert len(fire) == CATCH_UP_LIMIT
    assert fire[-1] == until == now
    assert fire[0] == now - timedelta(minutes=CATCH_UP_LIMIT - 1)


def test_none_skips_the_missed_at_takeover_but_not_later() -> None:
    now = T0 + timedelta(minutes=10, seconds=5)
    fire, until = due_to_fire(EVERY_MINUTE, T0, now, "none", taking_over=True)
    assert fire == [] and until == T0 + timedelta(minutes=10)
    fire, _ = due_to_fire(EVERY_MINUTE, T0, T0 + timedelta(minutes=1), "none", taking_over=False)
    assert fire == [T0 + timedelta(minutes=1)]


def test_cron_catch_up_in_its_timezone() -> None:
    now = T0 + timedelta(hours=3, minutes=1)
    fire, until = due_to_fire(CRON_HOURLY, T0, now, "all", taking_over=True)
    assert fire == [T0 + timedelta(hours=h) for h in (1, 2, 3)]
    fire, until = due_to_fire(CRON_HOURLY, T0, now, "latest", taking_over=True)
    assert fire == [T0 + timedelta(hours=3)] and until == fire[0]


def test_task_ids_are_deterministic_per_schedule_and_due_time() -> None:
    assert task_id("m", T0) == task_id("m", T0.astimezone(ZoneInfo("Europe/Warsaw")))
    assert task_id("m", T0) != task_id("m", T0 + timedelta(minutes=1))
    assert task_id("m", T0) != task_id("h", T0)


def test_state_message_round_trip_and_malformed() -> None:
    state = {"m": T0, "h": T0 + timedelta(hours=1)}
    assert _parse(_state_message(7, state, "host:1:abc")) == (7, "host:1:abc", state)
    bad = _state_message(1, state)
    bad.body = b'{"seq": "x"}'
    assert _parse(bad) == (None, "", {})


def test_the_copy_of_a_submission_says_its_due_time_is_done() -> None:
    headers = {SCHEDULE_HEADER: "m", DUE_HEADER: _wire.utc_iso(T0)}
    copy = _wire.task_message(SQUARE, task_id("m", T0), b'{"x": 1}', None, headers=headers)
    assert _parse(copy) == (None, "", {"m": T0})
    assert _parse(Message(body=b"{}", type="demo.square")) == (None, "", {})  # no headers: nothing
