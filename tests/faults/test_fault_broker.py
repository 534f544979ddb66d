"""Broker faults on the private node: a restart mid-run, and a stall longer than the heartbeat."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

import taskell
import taskell.aio
from generated.demo import AsyncClient, Client
from tests.faults._rabbit import RabbitNode
from tests.faults._support import (
    AsyncHandle,
    Handle,
    MakeWorkers,
    Outcome,
    Report,
    client_config,
    collect,
    collect_async,
    done_count,
    duplicates,
    queue_depth,
    submit_paced,
    task_count,
    wait_progress,
    worker_env,
)

HEARTBEAT = 2  # seconds; pika declares a connection dead after heartbeat + 5 s of silence
STALL = 15.0  # seconds the broker is frozen: over two of pika's checks (7 s each)


def _client_reconnects(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for r in caplog.records if "reconnected to the broker" in r.getMessage())


@pytest.mark.parametrize("how", ["stop_app", "node"])
def test_broker_restart_mid_run(
    how: str,
    private_broker: RabbitNode,
    vhost: str,
    workers: MakeWorkers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Restart the broker (the rabbit app, or the whole node) while tasks are being submitted
    and run: clients and workers reconnect by themselves; every task completes."""
    n = task_count()
    group = workers(worker_env([vhost], parallelism=4, connect_timeout=5), sleep=0.002)
    procs = [group.spawn("a"), group.spawn("b")]
    for proc in procs:
        proc.wait_ready()
    started = time.monotonic()
    handles: list[tuple[int, Handle]] = []
    with taskell.connect(config=client_config([vhost], connect_timeout=5)) as conn:
        # Submissions go on through the outage (they wait in the outbox, then are published).
        submitter = threading.Thread(target=submit_paced, args=(Client(conn), n, 6.0, handles), daemon=True)
        submitter.start()
        done_before = wait_progress(handles, n // 4, timeout=60)
        down = time.monotonic()
        start_attempts = 1
        if how == "stop_app":
            private_broker.stop_app()
            time.sleep(2)  # the outage: clients and workers retry meanwhile
            start_attempts = private_broker.start_app()
        else:
            private_broker.restart_node()
        outage = time.monotonic() - down
        done_at_back = done_count(list(handles))
        submitter.join(60)
        assert not submitter.is_alive(), "submitting hung"
        outcome = collect(handles, timeout=30 + n * 0.01)
        seconds = time.monotonic() - started
        client_reconnects = _client_reconnects(caplog)
    counts = group.executions()
    report = Report(
        fault=f"broker restarted mid-run ({'stop_app/start_app' if how == 'stop_app' else 'node stop/start'})",
        load=f"{n} tasks submitted over ~6 s, 2 workers x parallelism 4",
        submitted=len(handles),
        lost=outcome.not_ok + n - len(handles),
        duplicated=duplicates(counts),
        dead_lettered=queue_depth(vhost, "taskell.dead"),
        seconds=round(seconds, 1),
        done_before=done_before,
        done_after=done_count(handles) - done_at_back,
        details={
            "outage_s": round(outage, 1),
            "start_app_attempts": start_attempts,
            "done_before_restart": done_before,
            "client_reconnects": client_reconnects,
            "worker_reconnects": group.reconnects(),
            "worker_connection_losses": group.connection_losses(),
            "executions": sum(counts.values()),
            "outcome": outcome.describe(),
        },
    )
    with report.checks():
        assert len(handles) == n, f"only {len(handles)} of {n} tasks submitted"
        assert outcome.not_ok == 0, outcome.describe()
        assert all(p.popen.poll() is None for p in procs), "a worker exited instead of reconnecting"
        # Each worker reconnects on its own backoff; one may finish the run before the other is back.
        assert client_reconnects >= 1 and group.reconnects() >= 1


def test_broker_restart_mid_run_async(
    private_broker: RabbitNode,
    vhost: str,
    workers: MakeWorkers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The node restart with an asyncio client (``taskell.aio``) and workers of async handlers:
    the client reconnects and republishes without blocking its loop; every task completes."""
    n = task_count()
    env = worker_env([vhost], parallelism=4, connect_timeout=5) | {"FAULT_ASYNC": "1"}
    group = workers(env, sleep=0.002)
    procs = [group.spawn("a"), group.spawn("b")]
    for proc in procs:
        proc.wait_ready()
    started = time.monotonic()
    handles: list[tuple[int, AsyncHandle]] = []
    stalls: list[float] = []  # how late each 10 ms tick of a ticker coroutine woke up

    def done() -> int:
        return sum(1 for _, h in handles if h.done())

    async def until(count: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while done() < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return done()

    async def run() -> tuple[int, int, Outcome]:
        async with taskell.aio.connect(config=client_config([vhost], connect_timeout=5)) as conn:
            client = AsyncClient(conn)
            loop = asyncio.get_running_loop()

            async def submit() -> None:  # n squares over ~6 s, as the sync case
                for start in range(0, n, max(1, n // 50)):
                    handles.extend((x, client.square(x=x)) for x in range(start, min(n, start + n // 50)))
                    await asyncio.sleep(6.0 / 50)

            async def tick() -> None:
                while True:
                    before = loop.time()
                    await asyncio.sleep(0.01)
                    stalls.append(loop.time() - before - 0.01)

            submitter, ticker = asyncio.create_task(submit()), asyncio.create_task(tick())
            done_before = await until(n // 4, timeout=60)
            await asyncio.to_thread(private_broker.restart_node)  # blocks a thread, not the loop
            done_at_back = done()
            await asyncio.wait_for(submitter, 60)
            outcome = await collect_async(handles, timeout=30 + n * 0.01)
            ticker.cancel()
            return done_before, done_at_back, outcome

    done_before, done_at_back, outcome = asyncio.run(run())
    seconds = time.monotonic() - started
    client_reconnects = _client_reconnects(caplog)
    counts = group.executions()
    report = Report(
        fault="broker restarted mid-run (node stop/start), asyncio client and async handlers",
        load=f"{n} tasks submitted over ~6 s, 2 async workers x parallelism 4",
        submitted=len(handles),
        lost=outcome.not_ok + n - len(handles),
        duplicated=duplicates(counts),
        dead_lettered=queue_depth(vhost, "taskell.dead"),
        seconds=round(seconds, 1),
        done_before=done_before,
        done_after=done() - done_at_back,
        details={
            "client_reconnects": client_reconnects,
            "worker_reconnects": group.reconnects(),
            "longest_loop_stall_ms": round(max(stalls, default=0.0) * 1000, 1),
            "executions": sum(counts.values()),
            "outcome": outcome.describe(),
        },
    )
    with report.checks():
        assert len(handles) == n, f"only {len(handles)} of {n} tasks submitted"
        assert outcome.not_ok == 0, outcome.describe()
        assert all(p.popen.poll() is None for p in procs), "a worker exited instead of reconnecting"
        assert client_reconnects >= 1 and group.reconnects() >= 1
        # The restart takes seconds; the loop went on ticking through it (a blocking
        # reconnect would show as one long stall). Generous: the machine is shared.
        assert max(stalls) < 1.0, f"the client's loop stalled {max(stalls):.2f} s"


def test_broker_stall_over_heartbeat(
    private_broker: RabbitNode,
    vhost: str,
    workers: MakeWorkers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGSTOP the broker for longer than the heartbeat timeout (heartbeat=2), then SIGCONT:
    the run recovers and completes. The freeze must show: every task submitted, the client and
    every worker lost a connection to it, and tasks completed before and after it."""
    n = task_count()
    settings = {"heartbeat": HEARTBEAT, "connect_timeout": 3}
    group = workers(worker_env([vhost], parallelism=4, **settings), sleep=0.002)
    procs = [group.spawn("a"), group.spawn("b")]
    for proc in procs:
        proc.wait_ready()
    started = time.monotonic()
    handles: list[tuple[int, Handle]] = []
    with taskell.connect(config=client_config([vhost], heartbeat=HEARTBEAT, connect_timeout=3)) as conn:
        submitter = threading.Thread(target=submit_paced, args=(Client(conn), n, 4.0, handles), daemon=True)
        submitter.start()
        done_before = wait_progress(handles, n // 4, timeout=60)
        private_broker.pause()
        try:
            time.sleep(STALL)
        finally:
            private_broker.resume()
        done_at_resume = done_count(list(handles))
        submitter.join(60)
        assert not submitter.is_alive(), "submitting hung"
        outcome = collect(handles, timeout=45 + n * 0.01)
        seconds = time.monotonic() - started
        client_reconnects = _client_reconnects(caplog)
        client_losses = sum(1 for r in caplog.records if "connection lost" in r.getMessage())
    counts = group.executions()
    losses = group.connection_losses()
    report = Report(
        fault=f"broker frozen (SIGSTOP) {STALL:.0f} s, heartbeat {HEARTBEAT} s",
        load=f"{n} tasks submitted over ~4 s, 2 workers x parallelism 4",
        submitted=len(handles),
        lost=outcome.not_ok + n - len(handles),
        duplicated=duplicates(counts),
        dead_lettered=queue_depth(vhost, "taskell.dead"),
        seconds=round(seconds, 1),
        done_before=done_before,
        done_after=done_count(handles) - done_at_resume,
        details={
            "client_connection_losses": client_losses,
            "client_reconnects": client_reconnects,
            "worker_connection_losses": losses,
            "worker_reconnects": group.reconnects(),
            "executions": sum(counts.values()),
            "outcome": outcome.describe(),
        },
    )
    with report.checks():
        # A submitter that died early leaves tasks unsent, and nothing else would notice.
        assert len(handles) == n, f"only {len(handles)} of {n} tasks submitted"
        assert outcome.not_ok == 0, outcome.describe()
        assert all(p.popen.poll() is None for p in procs), "a worker exited instead of reconnecting"
        # The freeze outlasted the heartbeat: every connection was declared dead and reopened.
        assert client_losses >= 1 and client_reconnects >= 1, (
            f"the client lost {client_losses} connections, reconnected {client_reconnects} times"
        )
        assert all(lost >= 1 for lost in losses), f"connections lost per worker: {losses}"
        assert group.reconnects() >= 1, "no worker reconnected"
