"""``Schedule``: a periodic task declared under ``schedules:`` in the schema; generated once per
schedule (``SCHEDULES`` in the generated package) and fired by ``taskell scheduler``.

Due times are computed the same way by every scheduler, so they can agree on them:

- ``every``: the multiples of the interval since the Unix epoch (UTC), e.g. ``every: 10m`` is
  due at :00, :10, :20 ... whatever the timezone and whenever a scheduler started;
- ``cron``: five fields, evaluated in ``timezone`` by cronsim. Across a DST change a due time
  fires once: a local time skipped by the gap fires at the end of the gap (02:30 on a
  02:00 -> 03:00 night fires at 03:00), and a local time repeated by the overlap fires at its
  first occurrence only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cronsim import CronSim

from .spec import TaskSpec

__all__ = ["Schedule"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, eq=False)
class Schedule:
    """One schedule of a schema.

    Attributes:
        name: the schedule's name in the schema.
        task: the spec of the task it submits.
        args: the task's arguments (JSON form, validated by ``taskell gen``).
        cron: a five-field cron expression, or None when ``every`` is set.
        every: the interval in seconds, or None when ``cron`` is set.
        timezone: the IANA zone ``cron`` is evaluated in (default UTC).
    """

    name: str
    task: TaskSpec[Any, Any, Any]
    args: Mapping[str, Any] = field(default_factory=dict)
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ValueError(f"schedule {self.name}: give exactly one of cron and every")
        if self.every is not None and not (math.isfinite(self.every) and self.every > 0):
            raise ValueError(f"schedule {self.name}: every must be a positive duration")
        ZoneInfo(self.timezone)  # raises for an unknown zone
        if self.cron is not None:
            CronSim(self.cron, datetime.now(UTC))  # raises CronSimError for a bad expression

    def due_after(self, after: datetime) -> Iterator[datetime]:
        """The due times strictly after ``after`` (an aware datetime), in order, as aware UTC
        datetimes. Endless: take what you need."""
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        if self.every is not None:
            step = timedelta(seconds=self.every)
            count = math.floor((after - _EPOCH) / step) + 1
            while True:
                yield _EPOCH + count * step
                count += 1
        assert self.cron is not None
        local = after.astimezone(ZoneInfo(self.timezone))
        for due in CronSim(self.cron, local):
            yield due.astimezone(UTC)
