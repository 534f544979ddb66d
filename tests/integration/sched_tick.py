"""A package-like module for ``taskell scheduler tests.integration.sched_tick``: one schedule
submitting ``square(x=3)`` every second.

Not ``generated.demo.SCHEDULES``: the example schema's schedules fire every minute and nightly,
too rarely for a test that counts 30 submissions in 30 s, and a schedule firing every second
does not belong in an example. The schedule is built from the generated ``SQUARE`` like the
generated ones are; ``generated.demo`` itself is run on the broker by the cron catch-up test."""

import taskell
from generated.demo import SQUARE

SCHEDULES = (taskell.Schedule("tick", SQUARE, {"x": 3}, every=1.0),)
