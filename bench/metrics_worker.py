"""The worker side of ``bench/bench_metrics.py``: one no-op task declared twice, on two queues,
so one worker with metrics on and one with metrics off each serve their own (same handler,
same payload).

Run by the benchmark as ``taskell worker bench.metrics_worker:handlers`` with
``TASKELL_QUEUES`` naming the one queue each worker consumes.
"""

from __future__ import annotations

import dataclasses

import taskell
from generated.demo.models import SQUARE, SquareArgs

ON = dataclasses.replace(SQUARE, name="bench.square_metrics_on", queue="taskell.bench.metrics.on")
OFF = dataclasses.replace(SQUARE, name="bench.square_metrics_off", queue="taskell.bench.metrics.off")


def _square(ctx: taskell.Context[None], args: SquareArgs) -> int:
    return args.x * args.x


handlers = taskell.Registry()
handlers.add(ON, _square)
handlers.add(OFF, _square)
