"""Issue 3, point 7: a task is acknowledged only after its result, so a killed worker's task
is redelivered to another worker and still completes; and a gracefully stopped worker
acknowledges the tasks it finished (else they would run twice)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import taskell
from examples.worker import Impl
from generated.demo import SLEEP, Client, registry
from tests.support import RESULT_TIMEOUT, SpawnWorker, wait_until, worker_pids


def test_task_of_a_killed_worker_completes_on_another(
    conn: taskell.Connection, spawn_worker: SpawnWorker
) -> None:
    first = spawn_worker(parallelism=1)
    handle = Client(conn).sleep(seconds=3.0)

    wait_until(lambda: handle.latest_progress is not None, 20, "the first worker started the task")
    running = [
        task["task_id"]
        for answer in conn.inspect(wait=0.5)
        if worker_pids([answer]) == {first.pid}
        for task in answer["running"]
    ]
    assert running == [handle.id], "the task should be running on the first worker"

    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    assert first.returncode == -signal.SIGKILL
    assert not handle.done()

    spawn_worker(parallelism=1)
    assert handle.result(timeout=RESULT_TIMEOUT) == 3.0


def test_graceful_stop_lets_running_tasks_finish_and_acknowledges_them(
    conn: taskell.Connection, config: taskell.Config, amqp: Any
) -> None:
    worker = taskell.Worker(registry(Impl()), config, parallelism=4)
    with worker:
        client = Client(conn)
        handles = [client.sleep(seconds=1.0) for _ in range(4)]
        wait_until(
            lambda: all(h.latest_progress is not None for h in handles), 20, "the worker started the tasks"
        )
        worker.stop(timeout=20)  # graceful: running tasks finish first
    for handle in handles:
        assert handle.result(timeout=5) == 1.0
    # Finished means acknowledged: nothing is left to be redelivered (run twice) elsewhere.
    time.sleep(0.5)  # a window for the broker to requeue what the closed connection left unacked
    left = amqp.queue_declare(SLEEP.queue, passive=True).method.message_count
    assert left == 0, f"{left} finished task(s) not acknowledged before the worker closed, so requeued"
