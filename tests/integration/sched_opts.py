"""A package-like module for ``taskell scheduler tests.integration.sched_opts``: one schedule
of a task with options of its own (queue, priority, expiry), every second.

``generated.demo``'s scheduled tasks declare no priority or expiry; this spec is the demo's
``SQUARE`` on a queue of its own (priorities need ``x-max-priority``, which ``taskell.q1``
does not have), so what the scheduler submits can be compared with the task's options."""

import dataclasses

import taskell
from generated.demo import SQUARE

QUEUE = "taskell.test.sched-options"
OPTIONED = dataclasses.replace(SQUARE, queue=QUEUE, priority=7, expires=90.0, queue_priorities=True)

SCHEDULES = (taskell.Schedule("tick_options", OPTIONED, {"x": 3}, every=1.0),)
