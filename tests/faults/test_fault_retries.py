"""Retries across a broker restart on the private node: 200 tasks whose first attempt failed
wait for their retry in the delay levels while the node stops and boots again: none lost, no
attempt run before its delay was over, every task's attempts counted (1 then 2)."""

from __future__ import annotations

import collections
import dataclasses
import statistics
import threading
import time
from typing import Any

import taskell
from generated.demo import SQUARE
from tests.faults._rabbit import RabbitNode
from tests.faults._support import Report, client_config, queue_depth
from tests.support import wait_until

TASKS = 200
DELAY = 20.0  # seconds before each retry: the node restarts while every task waits for it


def test_tasks_waiting_for_their_retry_survive_a_broker_restart(
    private_broker: RabbitNode, vhost: str
) -> None:
    spec = dataclasses.replace(SQUARE, retry=taskell.RetryPolicy(attempts=2, backoff="fixed", delay=DELAY))
    lock = threading.Lock()
    failed_at: dict[int, float] = {}
    runs: dict[int, list[int]] = collections.defaultdict(list)  # x -> ctx.attempt of each run
    started: dict[int, list[float]] = collections.defaultdict(list)

    def flaky(ctx: taskell.Context[None], args: Any) -> int:
        x: int = args.x
        with lock:
            runs[x].append(ctx.attempt)
            started[x].append(time.monotonic())
        if ctx.attempt == 1:
            with lock:
                failed_at.setdefault(x, time.monotonic())
            raise ValueError("first attempt fails")
        return x * x

    registry = taskell.Registry()
    registry.add(spec, flaky)
    config = client_config([vhost], connect_timeout=5)
    begun = time.monotonic()
    with taskell.Worker(registry, config, parallelism=8), taskell.connect(config=config) as conn:
        handles = [(x, conn.submit(spec, {"x": x})) for x in range(TASKS)]
        wait_until(
            lambda: all(h.retries for _, h in handles), 60, "every first attempt failed and is retried"
        )
        waiting = sum(1 for x in range(TASKS) if len(runs[x]) == 1)
        down = time.monotonic()
        private_broker.restart_node()
        back = time.monotonic()
        wrong, lost = [], []
        for x, handle in handles:
            try:
                if handle.result(timeout=max(1.0, DELAY + 120 - (time.monotonic() - begun))) != x * x:
                    wrong.append(x)
            except (taskell.TaskellError, TimeoutError) as exc:
                lost.append((x, repr(exc)))
    # The gap between a task's first failure and its second run; never below the delay.
    gaps = sorted(started[x][1] - failed_at[x] for x in range(TASKS) if len(started[x]) > 1)
    early = [x for x in range(TASKS) if len(started[x]) > 1 and started[x][1] - failed_at[x] < DELAY]
    miscounted = [x for x in range(TASKS) if runs[x][:2] != [1, 2] or set(runs[x][2:]) - {2}]
    report = Report(
        fault="broker node restarted while every task waits for its retry in the delay levels",
        load=f"{TASKS} tasks failing once, retried after {DELAY:.0f} s, one in-process worker x 8",
        submitted=TASKS,
        lost=len(lost),
        duplicated=sum(1 for x in range(TASKS) if runs[x].count(2) > 1),
        dead_lettered=queue_depth(vhost, "taskell.dead"),
        seconds=round(time.monotonic() - begun, 1),
        # Runs: every first attempt before the restart, every second one after it.
        done_before=sum(1 for x in range(TASKS) if started[x] and started[x][0] < down),
        done_after=sum(1 for x in range(TASKS) if any(t >= back for t in started[x][1:])),
        details={
            "outage_s": round(back - down, 1),
            "waiting_at_restart": waiting,
            "early": len(early),
            "gap_p50_s": round(statistics.median(gaps), 3) if gaps else None,
            "gap_max_s": round(gaps[-1], 3) if gaps else None,
        },
    )
    with report.checks():
        assert waiting == TASKS  # the restart came while every task waited for its retry
        assert lost == [] and wrong == []
        assert early == []
        assert miscounted == [], {x: runs[x] for x in miscounted[:5]}
        assert all(len(h.retries) == 1 and h.retries[0].attempt == 1 for _, h in handles)
