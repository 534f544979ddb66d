"""Due times of ``taskell.Schedule``: ``every`` counted from the epoch, ``cron`` on the wall
clock of its timezone across DST changes (a skipped local time fires at the end of the gap, a
repeated one at its first occurrence only), and what the constructor refuses."""

from __future__ import annotations

import importlib.util
import math
import re
import zoneinfo
from datetime import UTC, datetime, timedelta
from itertools import islice, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pydantic
import pytest

from taskell import Schedule, TaskSpec

WARSAW = ZoneInfo("Europe/Warsaw")
NEW_YORK = ZoneInfo("America/New_York")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Args(pydantic.BaseModel):
    x: int = 0


SPEC: TaskSpec[Any, Any, Any] = TaskSpec(
    name="demo.square",
    queue="taskell.default",
    fingerprint="0" * 64,
    args=_Args,
    progress=pydantic.TypeAdapter(None),
    result=pydantic.TypeAdapter(None),
)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc,arg-type]


def due(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    times = list(islice(schedule.due_after(after), count))
    assert all(t.tzinfo is UTC for t in times)
    return times


def cron(expr: str, zone: str) -> Schedule:
    return Schedule("s", SPEC, cron=expr, timezone=zone)


# --- every -----------------------------------------------------------------------------------


def test_every_is_aligned_to_the_epoch_whenever_it_starts() -> None:
    ten_minutes = Schedule("s", SPEC, every=600)
    assert due(ten_minutes, utc(2026, 12, 2, 15, 13, 32), 3) == [
        utc(2026, 12, 2, 15, 20),
        utc(2026, 12, 2, 15, 30),
        utc(2026, 12, 2, 15, 40),
    ]
    # The same instant in another zone, and a later start, give the same grid.
    warsaw = datetime(2026, 12, 2, 16, 13, 32, tzinfo=WARSAW)
    assert due(ten_minutes, warsaw, 3) == due(ten_minutes, utc(2026, 12, 2, 15, 13, 32), 3)
    assert due(ten_minutes, utc(2026, 12, 2, 15, 25), 2) == [
        utc(2026, 12, 2, 15, 30),
        utc(2026, 12, 2, 15, 40),
    ]


def test_every_is_strictly_after() -> None:
    minute = Schedule("s", SPEC, every=60)
    assert due(minute, utc(2026, 12, 2, 15, 20), 1) == [utc(2026, 12, 2, 15, 21)]
    just_before = utc(2026, 12, 2, 15, 20) - timedelta(microseconds=1)
    assert due(minute, just_before, 1) == [utc(2026, 12, 2, 15, 20)]


@pytest.mark.parametrize("every", [7, 0.25, 0.001, 86400, 3 * 3600 + 0.5])
def test_every_gives_multiples_of_the_interval(every: float) -> None:
    after = utc(2026, 12, 2, 15, 13, 32) + timedelta(microseconds=123_457)
    times = due(Schedule("s", SPEC, every=every), after, 5)
    step = timedelta(seconds=every)
    assert times[0] > after
    assert times[0] - step <= after
    assert [b - a for a, b in pairwise(times)] == [step] * 4
    assert all((t - EPOCH) % step == timedelta(0) for t in times)


def test_every_ignores_dst() -> None:
    # A whole-hour interval over the Warsaw spring change: one real hour apart each time.
    hourly = Schedule("s", SPEC, every=3600)
    assert due(hourly, utc(2026, 3, 29, 0, 30), 3) == [
        utc(2026, 3, 29, 1),
        utc(2026, 3, 29, 2),
        utc(2026, 3, 29, 3),
    ]


def test_after_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next(Schedule("s", SPEC, every=60).due_after(datetime(2026, 1, 1)))
    with pytest.raises(ValueError, match="timezone-aware"):
        next(cron("0 3 * * *", "UTC").due_after(datetime(2026, 1, 1)))


# --- cron ------------------------------------------------------------------------------------


def test_cron_in_utc() -> None:
    assert due(cron("0 3 * * *", "UTC"), utc(2026, 12, 2, 15, 13), 2) == [
        utc(2026, 12, 3, 3),
        utc(2026, 12, 4, 3),
    ]
    assert due(cron("*/15 * * * *", "UTC"), utc(2026, 12, 2, 15, 15), 2) == [
        utc(2026, 12, 2, 15, 30),
        utc(2026, 12, 2, 15, 45),
    ]


def test_cron_is_evaluated_in_its_timezone() -> None:
    # 03:00 in Warsaw is 02:00 UTC in winter and 01:00 UTC in summer.
    nightly = cron("0 3 * * *", "Europe/Warsaw")
    assert due(nightly, utc(2026, 1, 10, 12), 1) == [utc(2026, 1, 11, 2)]
    assert due(nightly, utc(2026, 7, 10, 12), 1) == [utc(2026, 7, 11, 1)]


# Europe/Warsaw: 2026-03-29 02:00 CET -> 03:00 CEST (at 01:00 UTC);
#                2026-10-25 03:00 CEST -> 02:00 CET (at 01:00 UTC).
# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (at 07:00 UTC);
#                   2026-11-01 02:00 EDT -> 01:00 EST (at 06:00 UTC).


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # 02:30 does not exist that night: it fires once, at 03:00, then at 02:30 the next day.
        ("Europe/Warsaw", utc(2026, 3, 28, 12), [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0, 30)]),
        ("America/New_York", utc(2026, 3, 7, 12), [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]),
    ],
)
def test_spring_gap_fires_once_at_its_end(zone: str, after: datetime, expected: list[datetime]) -> None:
    assert due(cron("30 2 * * *", zone), after, 2) == expected


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # Every local time of the gap (02:00 .. 02:45) is due at its end, 03:00, once.
        (
            "Europe/Warsaw",
            utc(2026, 3, 29, 0, 20),
            [utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 0, 45), utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 15)],
        ),
        (
            "America/New_York",
            utc(2026, 3, 8, 6, 20),
            [utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 6, 45), utc(2026, 3, 8, 7), utc(2026, 3, 8, 7, 15)],
        ),
    ],
)
def test_a_gap_full_of_due_times_fires_once(zone: str, after: datetime, expected: list[datetime]) -> None:
    assert due(cron("*/15 * * * *", zone), after, 4) == expected


def test_a_skipped_minute_of_an_hourly_cron_fires_at_the_end_of_the_gap() -> None:
    # 02:15 does not exist in New York that night; it fires at 03:00, and 03:15 as usual.
    assert due(cron("15 * * * *", "America/New_York"), utc(2026, 3, 8, 6), 3) == [
        utc(2026, 3, 8, 6, 15),
        utc(2026, 3, 8, 7),
        utc(2026, 3, 8, 7, 15),
    ]


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # 02:30 happens twice that night (CEST, then CET): it fires at the first only.
        ("Europe/Warsaw", utc(2026, 10, 24, 12), [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        # 01:30 happens twice (EDT, then EST).
        ("America/New_York", utc(2026, 10, 31, 12), [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
    ],
)
def test_autumn_overlap_fires_once(zone: str, after: datetime, expected: list[datetime]) -> None:
    expr = "30 2 * * *" if zone == "Europe/Warsaw" else "30 1 * * *"
    assert due(cron(expr, zone), after, 2) == expected


@pytest.mark.parametrize(
    ("zone", "after", "expected"),
    [
        # Hourly at :00: local 02:00 comes twice in Warsaw and fires once, then 03:00 CET.
        (
            "Europe/Warsaw",
            utc(2026, 10, 24, 22, 30),
            [utc(2026, 10, 24, 23), utc(2026, 10, 25, 0), utc(2026, 10, 25, 2)],
        ),
        # Local 01:00 comes twice in New York and fires once, then 02:00 EST.
        (
            "America/New_York",
            utc(2026, 11, 1, 4, 30),
            [utc(2026, 11, 1, 5), utc(2026, 11, 1, 7), utc(2026, 11, 1, 8)],
        ),
    ],
)
def test_an_hourly_cron_fires_a_repeated_hour_once(
    zone: str, after: datetime, expected: list[datetime]
) -> None:
    assert due(cron("0 * * * *", zone), after, 3) == expected


def test_after_inside_the_repeated_hour_fires_nothing_before_it() -> None:
    # 01:30 EST is the second 01:30 of the night: the 01:45 of the first (EDT) has passed, and
    # the repeated 01:45 does not fire again, so the next is 01:45 the day after.
    after = datetime(2026, 11, 1, 1, 30, tzinfo=NEW_YORK, fold=1)
    assert after.astimezone(UTC) == utc(2026, 11, 1, 6, 30)
    assert due(cron("45 1 * * *", "America/New_York"), after, 2) == [
        utc(2026, 11, 2, 6, 45),
        utc(2026, 11, 3, 6, 45),
    ]
    # Every 20 minutes: nothing more in the repeated hour; next is 02:00 EST.
    assert due(cron("*/20 * * * *", "America/New_York"), after, 2) == [
        utc(2026, 11, 1, 7),
        utc(2026, 11, 1, 7, 20),
    ]


def test_cron_is_strictly_after() -> None:
    nightly = cron("30 2 * * *", "Europe/Warsaw")
    assert due(nightly, utc(2026, 3, 29, 1), 1) == [utc(2026, 3, 30, 0, 30)]  # the gap's end itself
    assert due(nightly, utc(2026, 10, 25, 0, 30), 1) == [utc(2026, 10, 26, 1, 30)]
    just_before = utc(2026, 10, 25, 0, 30) - timedelta(microseconds=1)
    assert due(nightly, just_before, 1) == [utc(2026, 10, 25, 0, 30)]


# --- constructor -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron and every"),
        ({"cron": "0 3 * * *", "every": 60.0}, "exactly one of cron and every"),
        ({"every": 0.0}, "every must be at least 1ms"),
        ({"every": -60.0}, "every must be at least 1ms"),
        ({"every": 1e-7}, "every must be at least 1ms"),
        ({"every": math.nan}, "every must be at least 1ms"),
        ({"every": math.inf}, "every must be at least 1ms"),
        ({"cron": "0 3 * *"}, "cron must have five fields"),
        ({"cron": "0 0 3 * * *"}, "cron must have five fields"),
        ({"cron": "@daily"}, "cron must have five fields"),
        ({"cron": "61 3 * * *"}, "bad cron '61 3 \\* \\* \\*': Bad minute"),
        ({"cron": "0 3 31 2 *"}, "bad cron '0 3 31 2 \\*': Bad day-of-month"),
        ({"cron": "0 3 * * *", "timezone": "Europe/Warsow"}, "unknown timezone 'Europe/Warsow'"),
        ({"cron": "0 3 * * *", "timezone": "../etc/passwd"}, "unknown timezone '../etc/passwd'"),
        ({"cron": "0 3 * * *", "timezone": ""}, "unknown timezone ''"),
    ],
)
def test_constructor_refuses(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^schedule nightly: {message}"):
        Schedule("nightly", SPEC, **kwargs)


@pytest.mark.skipif(importlib.util.find_spec("tzdata") is not None, reason="the tzdata package is a database")
def test_without_a_timezone_database() -> None:
    # As on Windows without the tzdata package: UTC still works, other zones say why not.
    zoneinfo.reset_tzpath(to=[])
    zoneinfo.ZoneInfo.clear_cache()
    try:
        with pytest.raises(zoneinfo.ZoneInfoNotFoundError):
            zoneinfo.ZoneInfo("Europe/Warsaw")
        assert zoneinfo.available_timezones() == set()
        every = Schedule("tick", SPEC, every=60)
        assert due(every, utc(2026, 1, 1), 1) == [utc(2026, 1, 1, 0, 1)]
        nightly = cron("0 3 * * *", "UTC")
        assert due(nightly, utc(2026, 1, 1), 1) == [utc(2026, 1, 1, 3)]
        message = (
            "unknown timezone 'Europe/Warsaw': this machine has no timezone database (pip install tzdata)"
        )
        with pytest.raises(ValueError, match=re.escape(f"schedule s: {message}")):
            cron("0 3 * * *", "Europe/Warsaw")
    finally:
        zoneinfo.reset_tzpath()
        zoneinfo.ZoneInfo.clear_cache()


def test_constructor_keeps_its_values() -> None:
    s = Schedule("nightly", SPEC, {"x": 3}, cron="0 3 * * *", timezone="Europe/Warsaw")
    assert (s.name, s.task, dict(s.args), s.cron, s.every, s.timezone) == (
        "nightly",
        SPEC,
        {"x": 3},
        "0 3 * * *",
        None,
        "Europe/Warsaw",
    )
    assert Schedule("tick", SPEC, every=60).timezone == "UTC"
    assert dict(Schedule("tick", SPEC, every=60).args) == {}
