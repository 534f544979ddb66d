"""Retries under faults: a tenth of the tasks fail twice then succeed (``faults.flaky``, 3
attempts 0.2 s apart) while a worker is SIGKILLed every second and the broker restarts mid-run.

Every task must end with its correct result, each failing one on its third attempt, none past
its third; the client must have seen the retries; and the faults must have happened (kills
before and after the restart, reconnects of the client and the workers).
"""

from __future__ import annotations

import collections
import threading
import time

import pytest

import taskell
from tests.faults._rabbit import RabbitNode
from tests.faults._support import (
    Handle,
    MakeWorkers,
    Report,
    WorkerProc,
    Workers,
    client_config,
    collect,
    done_count,
    duplicates,
    queue_depth,
    task_count,
    worker_env,
)
from tests.faults.fault_worker import FLAKY

KILL_PERIOD = 1.0
SLEEP = 0.01  # seconds per attempt: kills land mid-attempt


def _attempts(group: Workers) -> dict[str, list[tuple[int, str]]]:
    """Per task id, its attempts as (attempt number, ok|failed), in log order."""
    attempts: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    path = group.exec_log.with_name(group.exec_log.name + ".attempts")
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = line.split()
        if len(parts) == 4:
            attempts[parts[0]].append((int(parts[1]), parts[3]))
    return attempts


def _kill_until(
    group: Workers,
    victim: WorkerProc,
    handles: list[tuple[int, Handle]],
    n: int,
    stop: float,
    label: str,
    at_least: int = 1,
    at_once: bool = False,
) -> tuple[WorkerProc, int]:
    """SIGKILL and restart ``victim`` every second until ``stop`` (monotonic), and at least
    ``at_least`` times, while not all ``n`` are done; the first kill at once if ``at_once``.
    (A restarted worker can take seconds to consume again on a loaded machine: a fixed window
    may see a single kill, and the few seconds left after the restart none.)"""
    kills = 0
    while done_count(list(handles)) < n and (kills < at_least or time.monotonic() < stop):
        if kills or not at_once:
            time.sleep(KILL_PERIOD)
        victim.kill()
        assert victim.popen.returncode == -9, f"{victim} was not killed"
        kills += 1
        victim = group.spawn(f"{label}{kills}")
        victim.wait_ready()
    return victim, kills


def _submit(conn: taskell.Connection, xs: range, seconds: float, out: list[tuple[int, Handle]]) -> None:
    batches = 20
    per_batch = max(1, len(xs) // batches)
    for i in range(0, len(xs), per_batch):
        out.extend((x, conn.submit(FLAKY, {"x": x})) for x in xs[i : i + per_batch])
        time.sleep(seconds / batches)


def test_retries_with_worker_kills_and_broker_restart(
    private_broker: RabbitNode, vhost: str, workers: MakeWorkers, caplog: pytest.LogCaptureFixture
) -> None:
    n = task_count()
    group = workers(worker_env([vhost], parallelism=4, connect_timeout=5), sleep=SLEEP)
    steady, victim = group.spawn("steady"), group.spawn("victim")
    steady.wait_ready()
    victim.wait_ready()
    started = time.monotonic()
    handles: list[tuple[int, Handle]] = []
    with taskell.connect(config=client_config([vhost], connect_timeout=5)) as conn:
        # Half the tasks before the restart; the other half submitted through the outage and
        # after it, so that the kills after the restart find work however long it took.
        submitters = [
            threading.Thread(target=_submit, args=(conn, range(n // 2), 4.0, handles), daemon=True),
            threading.Thread(target=_submit, args=(conn, range(n // 2, n), 8.0, handles), daemon=True),
        ]
        submitters[0].start()
        victim, kills_before = _kill_until(
            group, victim, handles, n, time.monotonic() + 4.0, "before", at_least=2
        )
        submitters[1].start()
        done_before_restart = done_count(list(handles))
        private_broker.stop_app()
        time.sleep(2)
        start_attempts = private_broker.start_app()
        victim.wait_ready()
        victim, kills_after = _kill_until(
            group, victim, handles, n, time.monotonic() + 60 + n * 0.01, "after", at_once=True
        )
        for submitter in submitters:
            submitter.join(60)
        assert not any(s.is_alive() for s in submitters), "submitting hung"
        outcome = collect(handles, timeout=60 + n * 0.01)
        seconds = time.monotonic() - started
        client_reconnects = sum(1 for r in caplog.records if "reconnected to the broker" in r.getMessage())
    attempts = _attempts(group)
    flaky = {h.id for x, h in handles if x % 10 == 0}
    # A failing task succeeds on attempt 3 (and only then); the others on attempt 1. A kill can
    # repeat an attempt (redelivery), never add one past the policy's 3.
    wrong_attempts = [
        task_id
        for task_id in (h.id for _, h in handles)
        if {a for a, result in attempts[task_id] if result == "ok"} != ({3} if task_id in flaky else {1})
        or max((a for a, _ in attempts[task_id]), default=0) > 3
    ]
    unseen_retries = [
        h.id for x, h in handles if {r.attempt for r in h.retries} != ({1, 2} if x % 10 == 0 else set())
    ]
    counts = group.executions()
    report = Report(
        fault="10% of tasks fail twice then succeed; worker SIGKILLed every second; broker restarted",
        load=f"{n} tasks (retry: 3 attempts, 0.2 s apart), 2 workers x parallelism 4",
        submitted=len(handles),
        lost=outcome.not_ok,
        duplicated=duplicates(counts),
        dead_lettered=queue_depth(vhost, "taskell.dead"),
        seconds=round(seconds, 1),
        done_before=done_before_restart,
        done_after=outcome.completed - done_before_restart,
        details={
            "kills_before_restart": kills_before,
            "kills_after_restart": kills_after,
            "done_before_restart": done_before_restart,
            "start_app_attempts": start_attempts,
            "client_reconnects": client_reconnects,
            "worker_reconnects": group.reconnects(),
            "attempts_run": sum(len(a) for a in attempts.values()),
            "retried_tasks": len(flaky),
            "wrong_attempt_counts": len(wrong_attempts),
            "retries_not_seen_by_client": len(unseen_retries),
            "outcome": outcome.describe(),
        },
    )
    with report.checks():
        assert len(handles) == n, "the submitter did not submit every task"
        assert kills_before >= 2 and kills_after >= 1, (
            f"the faults did not land: {kills_before}, {kills_after}"
        )
        assert client_reconnects >= 1 and group.reconnects() >= 1, "nobody reconnected: no restart happened"
        assert outcome.not_ok == 0, outcome.describe()
        assert not wrong_attempts, (
            f"{len(wrong_attempts)} tasks with wrong attempts, e.g. {attempts[wrong_attempts[0]]}"
        )
        assert not unseen_retries, f"{len(unseen_retries)} handles missed retry notices"
        assert steady.popen.poll() is None, "the steady worker died"
