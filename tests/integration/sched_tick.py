"""A package-like module for ``taskell scheduler tests.integration.sched_tick``: one schedule
submitting ``square(x=3)`` every second (until the schema's ``SCHEDULES`` exist)."""

import taskell
from generated.demo import SQUARE

SCHEDULES = (taskell.Schedule("tick", SQUARE, {"x": 3}, every=1.0),)
