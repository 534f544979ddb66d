"""Issue 16, coverage gaps: claims of the README and docs/ that no test checked, each on the
real broker. Where a claim already had a test elsewhere, that test is named in the issue's
note instead of repeated here."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import SLEEP, SQUARE, SUM, Client, registry
from taskell import _running, connection
from tests.support import (
    RESULT_TIMEOUT,
    ROOT,
    TASKELL,
    SpawnWorker,
    StartWorker,
    blocking_connection,
    cli_env,
    poll_until,
    stop_process,
    wait_consuming,
    wait_until,
)


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def queue_exists(name: str) -> bool:
    connection = blocking_connection()
    try:
        connection.channel().queue_declare(name, passive=True)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        assert exc.reply_code == 404, exc
        return False
    finally:
        if connection.is_open:
            connection.close()


# Stopping a worker: "A second signal exits at once (status 1); tasks not yet acknowledged are
# delivered again." (docs/operations.md, Stopping a worker)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_exits_the_draining_worker_at_once(
    conn: taskell.Connection, spawn_worker: SpawnWorker, amqp: Any, second: signal.Signals
) -> None:
    proc = spawn_worker(parallelism=1)
    handle = Client(conn).sleep(seconds=60.0)  # outlives the test; shutdown_grace is 60 s
    wait_until(lambda: handle.latest_progress is not None, 20, "the worker started the task")

    os.kill(proc.pid, signal.SIGTERM)
    # The first signal was taken (the worker stopped consuming) and did not end the process:
    # it drains, waiting for the running task.
    wait_until(
        lambda: amqp.queue_declare(SLEEP.queue, passive=True).method.consumer_count == 0,
        10,
        "the worker cancelled its consumer after the first signal",
    )
    time.sleep(1.0)
    assert proc.poll() is None, f"the first signal ended the worker (status {proc.returncode})"

    sent = time.monotonic()
    os.kill(proc.pid, second)
    proc.wait(10)
    took = time.monotonic() - sent
    assert proc.returncode == 1 and took < 2.0, (proc.returncode, took)
    # The task was never acknowledged: it is back in its queue, marked redelivered.
    wait_until(
        lambda: amqp.queue_declare(SLEEP.queue, passive=True).method.message_count == 1,
        10,
        "the unacknowledged task went back to its queue",
    )
    method, props, _ = amqp.basic_get(SLEEP.queue, auto_ack=True)
    assert method.redelivered and props.message_id == handle.id
