"""``Schedule``: a periodic task declared under ``schedules:`` in the schema; generated once per
schedule (``SCHEDULES`` in the generated package) and fired by ``taskell scheduler``.

Due times are computed the same way by every scheduler, so they can agree on them:

- ``every``: the multiples of the interval since the Unix epoch (UTC), e.g. ``every: 10m`` is
  due at :00, :10, :20 ... whatever the timezone and whenever a scheduler started;
- ``cron``: five fields, matched by cronsim against the wall clock of ``timezone``. Across a
  DST change each matching local time fires once: a local time skipped by the gap fires at the
  end of the gap (02:30 on a 02:00 -> 03:00 night fires at 03:00; several skipped times fire
  there once), and a local time repeated by the overlap fires at its first occurrence only
  (an hourly cron does not fire again in the repeated hour).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from cronsim import CronSim, CronSimError

from .spec import TaskSpec

__all__ = ["Schedule"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SHORTEST = 0.001  # every: below a millisecond is no schedule, and rounds to nothing in timedelta


@dataclass(frozen=True, eq=False)
class Schedule:
    """One schedule of a schema.

    Attributes:
        name: the schedule's name in the schema.
        task: the spec of the task it submits.
        args: the task's arguments (JSON form, validated by ``taskell gen``).
        cron: a five-field cron expression, or None when ``every`` is set.
        every: the interval in seconds (at least 0.001), or None when ``cron`` is set.
        timezone: the IANA zone ``cron`` is evaluated in (default UTC).

    Raises:
        ValueError: not exactly one of ``cron`` and ``every``, a bad cron expression, an
            interval under 1ms, or an unknown timezone.
    """

    name: str
    task: TaskSpec[Any, Any, Any]
    args: Mapping[str, Any] = field(default_factory=dict)
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name}: exactly one of cron and every must be given")
        problem = every_problem(self.every) if self.every is not None else None
        if problem:
            raise ValueError(f"schedule {self.name}: {problem}, not {self.every!r}")
        problem = timezone_problem(self.timezone)
        if problem:
            raise ValueError(f"schedule {self.name}: {problem}")
        problem = cron_problem(self.cron) if self.cron is not None else None
        if problem:
            raise ValueError(f"schedule {self.name}: {problem}")

    def due_after(self, after: datetime) -> Iterator[datetime]:
        """The due times strictly after ``after`` (an aware datetime), in order, as aware UTC
        datetimes. Endless: take what you need."""
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        after = after.astimezone(UTC)  # a repeated local time (fold=1) compares unequal to all
        if self.every is not None:
            step = timedelta(seconds=self.every)
            count = (after - _EPOCH) // step + 1
            while True:
                yield _EPOCH + count * step
                count += 1
        assert self.cron is not None
        zone = _zone(self.timezone)
        # cronsim walks the naive wall clock; each local time is then put on the timeline.
        # Mapping a repeated time to its first occurrence can land before ``after`` (when
        # ``after`` is in the second one), and a gap maps several times to one instant.
        last = after
        for local in CronSim(self.cron, after.astimezone(zone).replace(tzinfo=None)):
            due = _first_instant(local, zone)
            if due > last:
                yield due
                last = due


def _first_instant(local: datetime, zone: tzinfo) -> datetime:
    """The first instant (UTC) the wall clock of ``zone`` shows ``local``, or the end of the
    DST gap that skips it."""
    while True:
        aware = local.replace(tzinfo=zone, fold=0)
        instant = aware.astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == local:
            return instant
        local += timedelta(minutes=1)  # in a gap; gaps end on a whole minute


def every_problem(seconds: float) -> str | None:
    """Why ``seconds`` is not a usable ``every`` interval, or None if it is."""
    if math.isfinite(seconds) and seconds >= _SHORTEST:
        return None
    return "every must be at least 1ms"


def _zone(name: str) -> tzinfo:
    # UTC needs no timezone database, which Windows and some slim images do not have.
    return UTC if name == "UTC" else ZoneInfo(name)


def timezone_problem(name: str) -> str | None:
    """Why ``name`` is not a usable IANA timezone, or None if it is."""
    try:
        _zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        if not available_timezones():
            return f"unknown timezone {name!r}: this machine has no timezone database (pip install tzdata)"
        return f"unknown timezone {name!r} (an IANA name such as Europe/Warsaw or UTC)"
    return None


def cron_problem(expr: str) -> str | None:
    """Why ``expr`` is not a five-field cron expression cronsim accepts, or None if it is."""
    fields = len(expr.split())
    if fields != 5:
        return f"cron must have five fields (minute hour day-of-month month day-of-week), not {fields}"
    try:
        CronSim(expr, datetime(2000, 1, 1))
    except CronSimError as exc:
        return f"bad cron {expr!r}: {exc}"
    return None
