"""Worker faults: SIGKILL every second under load, and SIGTERM (graceful stop) under load; each
with workers of sync handlers (thread pool) and of async handlers (event loop)."""

from __future__ import annotations

import signal
import time

import pytest

import taskell
from generated.demo import Client
from tests.faults._support import (
    MakeWorkers,
    Report,
    collect,
    done_count,
    duplicates,
    queue_depth,
    submit_squares,
    task_count,
    wait_progress,
    worker_env,
)

KILL_PERIOD = 1.0  # seconds between SIGKILLs
SLEEP = 0.03  # seconds per task: kills land mid-task, and the run outlasts a few kills
KINDS = {"sync": {}, "async": {"FAULT_ASYNC": "1"}}  # the handlers fault_worker.py serves


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_every_second(vhost: str, workers: MakeWorkers, kind: str) -> None:
    """Two workers; one is SIGKILLed and restarted every second until the run is done:
    every task gets its correct result (killed tasks are redelivered)."""
    n = task_count()
    group = workers(worker_env([vhost], parallelism=4) | KINDS[kind], sleep=SLEEP)
    steady, victim = group.spawn("steady"), group.spawn("victim")
    steady.wait_ready()
    victim.wait_ready()
    started = time.monotonic()
    kills = 0
    done_at_first_kill = done_at_last_kill = 0
    with taskell.connect(config=taskell.Config.from_url(vhost)) as conn:
        handles = submit_squares(Client(conn), n)
        deadline = started + 60 + n * 0.01  # bounded: at most this long, whatever happens
        while done_count(handles) < n and time.monotonic() < deadline:
            time.sleep(KILL_PERIOD)
            if done_count(handles) >= n:
                break
            victim.kill()
            assert victim.popen.returncode == -signal.SIGKILL, f"{victim} was not killed"
            done_at_last_kill = done_count(handles)
            done_at_first_kill = done_at_first_kill or done_at_last_kill
            kills += 1
            victim = group.spawn(f"victim{kills}")
            # The next kill comes a period after this one consumes (else it never would).
            victim.wait_ready()
        outcome = collect(handles, timeout=max(30.0, deadline - time.monotonic()))
        seconds = time.monotonic() - started
    counts = group.executions()
    report = Report(
        fault=f"worker SIGKILLed + restarted every second ({kind} handlers)",
        load=f"{n} tasks, 2 workers x parallelism 4",
        submitted=n,
        lost=outcome.not_ok,
        duplicated=duplicates(counts),
        dead_lettered=queue_depth(vhost, "taskell.dead"),
        seconds=round(seconds, 1),
        done_before=done_at_first_kill,
        done_after=outcome.completed - done_at_last_kill,
        details={
            "kills": kills,
            "executions": sum(counts.values()),
            "redelivered_executions": group.redelivered_executions(),
            "outcome": outcome.describe(),
        },
    )
    with report.checks():
        assert kills >= 2, f"the run ended before the fault: {kills} kills"
        assert outcome.not_ok == 0, outcome.describe()
        assert steady.popen.poll() is None, "the steady worker died"


@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_under_load(vhost: str, workers: MakeWorkers, kind: str) -> None:
    """SIGTERM a worker mid-run: it finishes its running tasks and exits 0; the others (and
    its restarted self) do the rest; nothing is lost."""
    n = task_count()
    group = workers(worker_env([vhost], parallelism=4) | KINDS[kind], sleep=0.005)
    first, other = group.spawn("first"), group.spawn("other")
    first.wait_ready()
    other.wait_ready()
    started = time.monotonic()
    with taskell.connect(config=taskell.Config.from_url(vhost)) as conn:
        handles = submit_squares(Client(conn), n)
        done_at_signal = wait_progress(handles, 0.3, timeout=60)
        first.signal(signal.SIGTERM)
        stop_started = time.monotonic()
        status = first.wait(30)
        stop_seconds = time.monotonic() - stop_started
        done_at_exit = done_count(handles)
        restarted = group.spawn("restarted")
        outcome = collect(handles, timeout=30 + n * 0.01)
        seconds = time.monotonic() - started
    counts = group.executions()
    by_first = sum(1 for line in group.exec_log.read_text().splitlines() if line.endswith(f" {first.pid}"))
    report = Report(
        fault=f"SIGTERM (graceful stop) of a worker under load ({kind} handlers)",
        load=f"{n} tasks, 2 workers x parallelism 4, then a restarted one",
        submitted=n,
        lost=outcome.not_ok,
        duplicated=duplicates(counts),
        dead_lettered=queue_depth(vhost, "taskell.dead"),
        seconds=round(seconds, 1),
        done_before=done_at_signal,
        done_after=outcome.completed - done_at_exit,
        details={
            "exit_status": status,
            "stop_seconds": round(stop_seconds, 2),
            "done_at_signal": done_at_signal,
            "run_by_stopped_worker": by_first,
            "executions": sum(counts.values()),
            "outcome": outcome.describe(),
        },
    )
    with report.checks():
        assert status == 0, f"graceful stop exited {status}:\n{first.log()[-3000:]}"
        assert outcome.not_ok == 0, outcome.describe()
        # A graceful stop acknowledges what it finished: nothing it ran is run again.
        assert duplicates(counts) == 0, f"{duplicates(counts)} tasks ran twice after a graceful stop"
        assert restarted.popen.poll() is None and other.popen.poll() is None
