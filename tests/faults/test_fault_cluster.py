"""A 3-node RabbitMQ cluster on loopback with quorum task queues; one node is SIGKILLed
mid-run. Clients and workers are given all three nodes (``rabbitmq.hosts``) and fail over."""

from __future__ import annotations

import threading
import time

import pytest

import taskell
from generated.demo import Client
from tests.faults._rabbit import RabbitNode
from tests.faults._support import (
    Handle,
    MakeWorkers,
    Report,
    client_config,
    collect,
    duplicates,
    submit_paced,
    task_count,
    wait_progress,
    worker_env,
)

SETTINGS: dict[str, object] = {"queue_type": "quorum", "connect_timeout": 5}


@pytest.mark.parametrize("victim", ["workers-node", "client-node"])
def test_cluster_node_killed(
    victim: str,
    cluster: list[RabbitNode],
    workers: MakeWorkers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Workers connect to node 0 first, the client to node 1 first (each lists all three).
    Node 0 (``workers-node``: the workers' node, where they declared the quorum task queue,
    so its leader, and the dead-letter queue) or node 1 (``client-node``: the client's node,
    home of its reply queue) is SIGKILLed once a quarter of the tasks are done: the two
    remaining nodes keep a quorum, everyone reconnects to them, every task completes."""
    n = task_count()
    a, b, c = cluster
    worker_urls = [a.url(), b.url(), c.url()]
    client_urls = [b.url(), c.url(), a.url()]
    killed = a if victim == "workers-node" else b
    group = workers(worker_env(worker_urls, parallelism=4, **SETTINGS), sleep=0.002)
    # One after the other: two workers declaring and consuming the same new quorum queues at
    # once on a fresh cluster can fail at startup (541 INTERNAL_ERROR; see the suite's report).
    procs = []
    for label in ("a", "b"):
        procs.append(group.spawn(label))
        procs[-1].wait_ready()
    started = time.monotonic()
    handles: list[tuple[int, Handle]] = []
    with taskell.connect(config=client_config(client_urls, **SETTINGS)) as conn:
        submitter = threading.Thread(target=submit_paced, args=(Client(conn), n, 5.0, handles), daemon=True)
        submitter.start()
        done_before = wait_progress(handles, n // 4, timeout=60)
        killed.kill()
        submitter.join(60)
        assert not submitter.is_alive(), "submitting hung"
        outcome = collect(handles, timeout=30 + n * 0.01)
        seconds = time.monotonic() - started
        client_reconnects = sum(1 for r in caplog.records if "reconnected to the broker" in r.getMessage())
        client_errors = sorted(
            {r.getMessage()[:160] for r in caplog.records if "channel closed" in r.getMessage()}
        )
    counts = group.executions()
    worker_errors = sorted(
        {
            line.split(": ", 1)[-1][:160]
            for p in group.started
            for line in p.log().splitlines()
            if "channel closed" in line
        }
    )
    Report(
        fault=f"3-node cluster, quorum queues, {victim} SIGKILLed",
        load=f"{n} tasks submitted over ~5 s, 2 workers x parallelism 4",
        submitted=n,
        lost=outcome.not_ok,
        duplicated=duplicates(counts),
        dead_lettered=-1,  # the dead-letter queue may live on the killed node
        seconds=round(seconds, 1),
        details={
            "killed": killed.node,
            "done_before_kill": done_before,
            "client_reconnects": client_reconnects,
            "worker_reconnects": group.reconnects(),
            "client_channel_errors": client_errors[:3],
            "worker_channel_errors": worker_errors[:3],
            "executions": sum(counts.values()),
            "outcome": outcome.describe(),
        },
    ).emit()
    assert len(handles) == n
    assert outcome.not_ok == 0, outcome.describe()
    assert all(p.popen.poll() is None for p in procs), "a worker exited instead of failing over"
