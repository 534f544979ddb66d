"""The worker side of ``bench/bench_policies.py``: one no-op task declared twice on one queue,
plainly and with a ``time_limit`` and a ``retry`` policy, so their round trips compare the cost
of the policies alone (same handler, same payload, same worker).

Run by the benchmark as ``taskell worker bench.policy_worker:handlers``.
"""

from __future__ import annotations

import dataclasses

import taskell
from generated.demo.models import SQUARE, SquareArgs

QUEUE = "taskell.bench.policies"
PLAIN = dataclasses.replace(SQUARE, name="bench.square_plain", queue=QUEUE)
POLICIES = dataclasses.replace(
    SQUARE,
    name="bench.square_policies",
    queue=QUEUE,
    time_limit=30.0,
    retry=taskell.RetryPolicy(attempts=3, backoff="exponential", delay=1.0, max_delay=10.0),
)


def _square(ctx: taskell.Context[None], args: SquareArgs) -> int:
    return args.x * args.x


handlers = taskell.Registry()
handlers.add(PLAIN, _square)
handlers.add(POLICIES, _square)
