"""Issue 5, point 7: re-attaching to tasks by id through a named results queue, after the
connection that submitted them has closed: one still running, one already finished."""

from __future__ import annotations

import time

import pytest

import taskell
from generated.demo import SLEEP, SUM, Client
from tests.support import RESULT_TIMEOUT, wait_until


def test_attach_to_running_and_finished_tasks_after_the_submitter_left(
    config: taskell.Config, worker: taskell.Worker
) -> None:
    results = f"taskell.reply.test-attach-{time.time_ns()}"
    with taskell.connect(config=config, results=results) as first:
        finished = Client(first).sleep(seconds=0.3).id
        running = Client(first).sleep(seconds=2.0).id
    # The first ends while no connection listens; the second still runs.
    wait_until(
        lambda: [r["task_id"] for r in worker.status()["running"]] == [running],
        RESULT_TIMEOUT,
        "the first task ended, the second running",
    )
    with taskell.connect(config=config, results=results) as second:
        done = taskell.attach(second, SLEEP, finished)
        assert done.result(timeout=RESULT_TIMEOUT) == 0.3
        assert list(done.progress())  # its progress was kept too
        live = taskell.attach(second, SLEEP, running)
        values = list(live.progress())
        assert live.result(timeout=RESULT_TIMEOUT) == 2.0
        assert values == sorted(values) and values
        # A reply that arrives after its submitter left stays in the queue for the next one.
        leftover = Client(second).sleep(seconds=0.5).id
    with taskell.connect(config=config, results=results) as third:
        assert taskell.attach(third, SLEEP, leftover).result(timeout=RESULT_TIMEOUT) == 0.5


def test_attach_needs_a_named_results_queue(conn: taskell.Connection) -> None:
    with pytest.raises(ValueError, match="results"):
        taskell.attach(conn, SUM, "any")
