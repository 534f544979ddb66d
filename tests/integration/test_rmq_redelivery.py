"""Issue 3, point 7: a task is acknowledged only after its result, so a killed worker's task
is redelivered to another worker and still completes; and a gracefully stopped worker
acknowledges the tasks it finished (else they would run twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import taskell
from examples.worker import Impl
from generated.demo import SLEEP, Client, registry

RESULT_TIMEOUT = 30.0


def test_task_of_a_killed_worker_completes_on_another(
    conn: taskell.Connection, spawn_worker: Callable[..., subprocess.Popen[bytes]]
) -> None:
    first = spawn_worker(parallelism=1)
    handle = Client(conn).sleep(seconds=3.0)

    deadline = time.monotonic() + 20
    while handle.latest_progress is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert handle.latest_progress is not None, "the first worker never started the task"
    running = [
        task["task_id"]
        for answer in conn.inspect(wait=0.5)
        if str(answer.get("worker", "")).split(":")[-2:-1] == [str(first.pid)]
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
        deadline = time.monotonic() + 20
        while any(h.latest_progress is None for h in handles) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert all(h.latest_progress is not None for h in handles), "the worker never started the tasks"
        worker.stop(timeout=20)  # graceful: running tasks finish first
    for handle in handles:
        assert handle.result(timeout=5) == 1.0
    # Finished means acknowledged: nothing is left to be redelivered (run twice) elsewhere.
    time.sleep(0.5)
    left = amqp.queue_declare(SLEEP.queue, passive=True).method.message_count
    assert left == 0, f"{left} finished task(s) not acknowledged before the worker closed, so requeued"
