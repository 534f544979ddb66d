"""Issue 4: aborting tasks on a real RabbitMQ, with worker subprocesses.

Aborts cross processes: the task is submitted by one connection and aborted by the handle,
by another connection or by ``taskell abort`` in a shell; the abort is a fanout broadcast
that reaches whichever worker holds the task. The workers run
``tests.integration.abort_handlers`` (which leaves start / finally / square events with the
worker's PID in a markers directory), ``bench.spin_worker`` or the thread / process pools.

Measured abort latencies are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import taskell
from generated.demo import Client
from tests.integration.abort_handlers import MARKERS_ENV, example_handlers
from tests.support import ROOT, TASKELL, URL, cli_env, poll_until, wait_consuming, wait_until, worker_pids

MARKING_SPIN = "tests.integration.abort_handlers:handlers"  # pure-Python busy-loop sleep
MARKING_IMPL = "tests.integration.abort_handlers:example_handlers"  # 10 ms time.sleep steps
BENCH_SPIN = "bench.spin_worker:handlers"  # BENCH_SLEEP=csleep: one C-level time.sleep
PROCESS_CSLEEP = {"TASKELL_POOL": "process", "BENCH_SLEEP": "csleep"}  # process pool, C sleep
SLEEP_QUEUE = "taskell.default"  # the queue of demo.sleep
WAIT = 10.0  # bound of every wait for something that should happen at once
ABORT_BOUND = 2.0  # an interruptible handler must be gone within this many seconds


# Worker subprocesses


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass(frozen=True)
class Spec:
    """One ``taskell worker`` to start: target, parallelism, ``--queue``s, extra environment."""

    target: str = MARKING_IMPL
    parallelism: int = 1
    queues: Sequence[str] = ()
    env: Mapping[str, str] | None = None


Spawn = Callable[..., list[WorkerProc]]
Cli = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


def _stop(*workers: WorkerProc) -> None:
    """SIGTERM (graceful stop) by PID, then SIGKILL if one does not exit in time; then SIGKILL
    any of their task processes (process pool) that outlived them."""
    children = {pid for w in workers for pid in child_pids(w.pid)}
    running = [w for w in workers if w.proc.poll() is None]
    for worker in running:
        worker.proc.terminate()
    deadline = time.monotonic() + 15
    for worker in running:
        try:
            worker.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait(10)
    for pid in children:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def spawn(config: taskell.Config, tmp_path: Path, markers: Path) -> Iterator[Spawn]:
    """``spawn(*specs)``: start one ``taskell worker`` subprocess per ``Spec`` (all at once, like
    the ``spawn_worker`` fixture but with a target, ``--queue`` flags and extra environment),
    return once every one answers ``inspect`` and has logged that it consumes. Every worker
    gets ``ABORT_MARKERS`` and the test broker's ``TASKELL_URL`` (``TASKELL_TEST_URL``)."""
    started: list[WorkerProc] = []

    def start(*specs: Spec) -> list[WorkerProc]:
        batch = []
        for spec in specs or (Spec(),):
            log = tmp_path / f"worker-{len(started)}.log"
            command = [TASKELL, "worker", spec.target, "--parallelism", str(spec.parallelism)]
            for queue in spec.queues:
                command += ["--queue", queue]
            env = {**cli_env(URL), "ABORT_MARKERS": str(markers), **(spec.env or {})}
            with open(log, "wb") as out:
                proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            worker = WorkerProc(proc, log)
            started.append(worker)
            batch.append(worker)
        wait_consuming(config, [(w.proc, w.log) for w in batch])
        return batch

    try:
        yield start
    finally:
        _stop(*started)


# Evidence: marker events, queue state, inspect answers


def events(markers: Path, event: str | None = None, task_id: str | None = None) -> list[dict[str, Any]]:
    path = markers / "events.jsonl"
    if not path.exists():
        return []
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [
        e
        for e in found
        if (event is None or e["event"] == event) and (task_id is None or e["task_id"] == task_id)
    ]


def _vhost() -> str:
    path = urllib.parse.urlparse(URL).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def queue_counts(amqp: Any, queue: str) -> tuple[int, int | None]:
    """(messages ready, messages unacknowledged) of ``queue``: ready from a passive declare,
    unacked from ``rabbitmqctl list_queues`` (None when rabbitmqctl is not available)."""
    ready = int(amqp.queue_declare(queue, passive=True).method.message_count)
    if shutil.which("rabbitmqctl") is None:
        return ready, None
    proc = subprocess.run(
        [
            "rabbitmqctl",
            "list_queues",
            "-q",
            "-p",
            _vhost(),
            "name",
            "messages_ready",
            "messages_unacknowledged",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == queue:
            return ready, int(fields[2])
    raise AssertionError(f"queue {queue} not listed by rabbitmqctl:\n{proc.stdout}")


def assert_settled(amqp: Any, queue: str = SLEEP_QUEUE) -> None:
    """The queue holds nothing: no message ready, none delivered and unacknowledged."""
    counts = queue_counts(amqp, queue)

    def settled() -> bool:
        nonlocal counts
        counts = queue_counts(amqp, queue)
        return counts in ((0, 0), (0, None))

    settled_in_time = poll_until(settled, WAIT, interval=0.2)
    assert settled_in_time, f"{queue}: {counts[0]} ready, {counts[1]} unacknowledged after {WAIT} s"


def states(answers: list[dict[str, Any]]) -> dict[int, str]:
    """An abort's answers as {worker PID: state}."""
    result = {}
    for answer in answers:
        (pid,) = worker_pids([answer])
        result[pid] = str(answer["state"])
    return result


def running_on(conn: taskell.Connection, task_id: str) -> int:
    """The PID of the worker whose ``inspect`` lists ``task_id`` as running."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for answer in conn.inspect(wait=0.3):
            if any(r["task_id"] == task_id for r in answer["running"]):
                (pid,) = worker_pids([answer])
                return pid
    raise AssertionError(f"task {task_id} not running on any worker within {WAIT} s")


def started_on(markers: Path, task_id: str) -> int:
    """The PID of the worker whose marking handler started ``task_id`` (its ``start`` event)."""
    wait_until(lambda: bool(events(markers, "start", task_id)), WAIT, f"task {task_id} started on a worker")
    (event,) = events(markers, "start", task_id)
    return int(event["pid"])


def running_tasks(conn: taskell.Connection) -> dict[int, list[str]]:
    return {
        pid: [r["task_id"] for r in answer["running"]]
        for answer in conn.inspect(wait=0.5)
        for pid in worker_pids([answer])
    }


def wait_progress(handle: taskell.TaskHandle[float, float]) -> None:
    wait_until(lambda: handle.latest_progress is not None or handle.done(), WAIT, f"progress from {handle}")
    assert handle.latest_progress is not None, f"task ended before any progress: {handle}"


class ProgressReader:
    """Follows ``handle.progress()`` in a thread, to prove the iterator ends."""

    def __init__(self, handle: taskell.TaskHandle[float, float]) -> None:
        self.values: list[float] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, args=(handle,), daemon=True)
        self.thread.start()

    def _read(self, handle: taskell.TaskHandle[float, float]) -> None:
        try:
            for value in handle.progress():
                self.values.append(value)
        except BaseException as exc:
            self.error = exc

    def ended(self) -> bool:
        self.thread.join(WAIT)
        assert self.error is None, f"progress() raised {self.error!r}"
        return not self.thread.is_alive()


def child_pids(pid: int) -> set[int]:
    """PIDs of the live (non-zombie) child processes of ``pid``, from /proc."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            children.add(int(entry.name))
    return children


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def report(what: str, seconds: float) -> None:
    print(f"\n[abort timing] {what}: {seconds * 1000:.0f} ms")


def squares_succeed(conn: taskell.Connection, markers: Path, count: int = 8) -> set[int]:
    """Run ``count`` squares; all succeed; returns the PIDs of the workers that ran them."""
    client = Client(conn)
    handles = [(x, client.square(x=x)) for x in range(100, 100 + count)]
    for x, handle in handles:
        assert handle.result(timeout=WAIT) == x * x
    ids = {handle.id for _, handle in handles}
    return {e["pid"] for e in events(markers, "square") if e["task_id"] in ids}


# 1. A running task, aborted three ways, with two workers


@pytest.mark.parametrize("how", ["handle", "cli", "second_connection"])
def test_abort_stops_a_running_task(
    how: str,
    conn: taskell.Connection,
    config: taskell.Config,
    spawn: Spawn,
    markers: Path,
    amqp: Any,
    taskell_cli: Cli,
) -> None:
    workers = spawn(Spec(), Spec())
    pids = {w.pid for w in workers}
    handle = Client(conn).sleep(seconds=60.0)
    reader = ProgressReader(handle)
    runner = started_on(markers, handle.id)
    assert runner in pids
    wait_progress(handle)

    started = time.monotonic()
    if how == "handle":
        assert handle.abort() is True
    elif how == "cli":
        proc = taskell_cli("abort", handle.id)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"aborting {handle.id}", proc.stdout + proc.stderr
    else:
        with taskell.connect(config=config) as other:  # did not submit the task
            answers = other.abort(handle.id, wait=0.5)
        (idle,) = pids - {runner}
        assert states(answers) == {runner: "aborting", idle: "not running here"}, answers
    with pytest.raises(taskell.TaskAborted) as info:
        handle.result(timeout=WAIT)
    report(f"running example sleep, abort by {how} -> TaskAborted", time.monotonic() - started)
    assert info.value.task_id == handle.id
    assert "aborted while running" in str(info.value)
    assert reader.ended(), "progress() did not end after the abort"
    assert reader.values, "progress() yielded nothing before the abort"

    # The handler stopped (its finally ran, seeing the abort) on the worker that ran it.
    (final,) = events(markers, "finally", handle.id)
    assert final["pid"] == runner and final["aborted"] is True
    # Acknowledged: the queue holds no ready or unacknowledged message.
    assert_settled(amqp)
    # The worker keeps serving and its only slot is free.
    assert running_tasks(conn).get(runner) == []
    assert runner in squares_succeed(conn, markers), "the worker that ran the aborted task serves no more"
    assert all(w.proc.poll() is None for w in workers)
    # Never redelivered: stopping the workers (which would requeue anything unacked) leaves
    # the queue empty, and the task started exactly once.
    _stop(*workers)
    for worker in workers:
        assert worker.proc.returncode == 0, worker.output()
    assert queue_counts(amqp, SLEEP_QUEUE)[0] == 0
    assert len(events(markers, "start", handle.id)) == 1


# 2. Pure-Python code is interrupted; finally blocks run and see ctx.aborted


@pytest.mark.parametrize("target", [BENCH_SPIN, MARKING_SPIN])
def test_abort_interrupts_pure_python(
    target: str, conn: taskell.Connection, config: taskell.Config, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    (worker,) = spawn(Spec(target=target))
    handle = Client(conn).sleep(seconds=60.0)  # a busy loop that never returns to C code
    wait_progress(handle)
    started = time.monotonic()
    with taskell.connect(config=config) as other:
        other.abort(handle.id)
    with pytest.raises(taskell.TaskAborted):
        handle.result(timeout=WAIT)
    elapsed = time.monotonic() - started
    report(f"{target} busy loop, abort from another connection -> TaskAborted", elapsed)
    assert elapsed < ABORT_BOUND, f"a pure-Python handler took {elapsed:.2f} s to stop"
    if target == MARKING_SPIN:
        marker = json.loads((markers / f"{handle.id}.finally").read_text())
        assert marker == {"aborted": True, "pid": worker.pid}
        (start,) = events(markers, "start", handle.id)
        (final,) = events(markers, "finally", handle.id)
        assert final["aborted"] is True
        assert final["time"] - start["time"] < 30, "the loop ran to its end instead of being interrupted"
    assert_settled(amqp)
    assert Client(conn).square(x=9).result(timeout=WAIT) == 81
    assert worker.proc.poll() is None


# 3. Process mode kills a handler stuck in C code; thread mode cannot


def test_process_mode_kills_a_handler_stuck_in_c_sleep(
    conn: taskell.Connection, spawn: Spawn, amqp: Any
) -> None:
    (worker,) = spawn(Spec(target=BENCH_SPIN, env=PROCESS_CSLEEP))
    handle = Client(conn).sleep(seconds=3600.0)  # CSleep: time.sleep(3600) in one C call
    wait_progress(handle)
    children = child_pids(worker.pid)
    assert children, "process mode runs the handler in a child process"
    started = time.monotonic()
    handle.abort()
    with pytest.raises(taskell.TaskAborted) as info:
        handle.result(timeout=ABORT_BOUND)
    elapsed = time.monotonic() - started
    report("process mode, time.sleep(3600), handle.abort() -> TaskAborted", elapsed)
    assert elapsed < ABORT_BOUND
    assert "process killed" in str(info.value)
    wait_until(lambda: not any(alive(pid) for pid in children), WAIT, "the child stuck in time.sleep gone")
    assert_settled(amqp)
    # A fresh child serves the next task.
    assert Client(conn).square(x=12).result(timeout=WAIT) == 144
    again = Client(conn).sleep(seconds=0.1)
    assert again.result(timeout=WAIT) == 0.1
    assert worker.proc.poll() is None


def test_thread_mode_cannot_interrupt_c_sleep(conn: taskell.Connection, spawn: Spawn, amqp: Any) -> None:
    """The contrast (no timing asserted): the abort lands only once time.sleep returns."""
    (worker,) = spawn(Spec(target=BENCH_SPIN, env={"BENCH_SLEEP": "csleep"}))
    seconds = 1.0
    handle = Client(conn).sleep(seconds=seconds)
    wait_progress(handle)
    started = time.monotonic()
    handle.abort()
    with pytest.raises(taskell.TaskAborted):
        handle.result(timeout=WAIT)
    report(f"thread mode, time.sleep({seconds}), handle.abort() -> TaskAborted", time.monotonic() - started)
    assert_settled(amqp)
    assert Client(conn).square(x=3).result(timeout=WAIT) == 9
    assert worker.proc.poll() is None


# 4. Queued and prefetched tasks never start once aborted


def test_aborted_queued_task_never_starts(
    conn: taskell.Connection, config: taskell.Config, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    # prefetch 1: the third task stays in the broker's queue instead of waiting on a worker
    workers = spawn(Spec(env={"TASKELL_PREFETCH": "1"}), Spec(env={"TASKELL_PREFETCH": "1"}))
    client = Client(conn)
    busy = [client.sleep(seconds=60.0) for _ in workers]
    running = {started_on(markers, h.id) for h in busy}
    assert running == {w.pid for w in workers}, "each worker (parallelism 1) runs one busy task"
    queued = client.sleep(seconds=0.5)
    conn.flush(WAIT)
    ready, unacked = queue_counts(amqp, SLEEP_QUEUE)
    assert ready == 1 and unacked in (2, None), "queued in the broker, not delivered"
    with taskell.connect(config=config) as other:
        answers = other.abort(queued.id, wait=0.5)
    assert states(answers) == {w.pid: "not running here" for w in workers}, answers
    assert not queued.done()
    assert not any(h.done() for h in busy), "aborting a queued task stopped running ones"
    for handle in busy:  # free the workers: they reach the queued task
        handle.abort()
    for handle in busy:
        with pytest.raises(taskell.TaskAborted):
            handle.result(timeout=WAIT)
    with pytest.raises(taskell.TaskAborted) as info:
        queued.result(timeout=WAIT)
    assert "before it started" in str(info.value)
    assert events(markers, "start", queued.id) == [], "the aborted queued task started"
    assert all(events(markers, "start", h.id) for h in busy)
    assert_settled(amqp)
    assert squares_succeed(conn, markers, 4)


def test_aborted_prefetched_task_never_starts(
    conn: taskell.Connection, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    (worker,) = spawn(Spec(env={"TASKELL_PREFETCH": "3"}))
    client = Client(conn)
    first = client.sleep(seconds=60.0)
    started_on(markers, first.id)
    prefetched = client.sleep(seconds=0.2)
    after = client.sleep(seconds=0.2)
    conn.flush(WAIT)
    delivered = poll_until(lambda: queue_counts(amqp, SLEEP_QUEUE) in ((0, 3), (0, None)), WAIT, 0.1)
    assert delivered, f"not all three delivered to the worker: {queue_counts(amqp, SLEEP_QUEUE)}"
    assert running_tasks(conn)[worker.pid] == [first.id]
    answers = conn.abort(prefetched.id, wait=0.5)
    assert states(answers) == {worker.pid: "not running here"}, answers
    assert not first.done() and not prefetched.done()
    first.abort()
    with pytest.raises(taskell.TaskAborted) as info:
        first.result(timeout=WAIT)
    assert "while running" in str(info.value)
    with pytest.raises(taskell.TaskAborted) as info:
        prefetched.result(timeout=WAIT)
    assert "before it started" in str(info.value)
    assert after.result(timeout=WAIT) == 0.2  # the next prefetched one still runs
    assert events(markers, "start", prefetched.id) == [], "the aborted prefetched task started"
    assert events(markers, "start", first.id) and events(markers, "start", after.id)
    assert_settled(amqp)


# 5. No-ops and idempotence


def test_abort_of_a_finished_or_unknown_task_is_a_harmless_noop(
    conn: taskell.Connection, spawn: Spawn, markers: Path, taskell_cli: Cli
) -> None:
    workers = spawn(Spec(), Spec())
    pids = {w.pid for w in workers}
    handle = Client(conn).square(x=5)
    assert handle.result(timeout=WAIT) == 25
    (ran,) = events(markers, "square", handle.id)
    assert handle.abort() is False

    finished = states(conn.abort(handle.id, wait=0.5))
    (other,) = pids - {ran["pid"]}
    assert finished == {ran["pid"]: "finished", other: "not running here"}
    unknown_id = str(uuid.uuid4())
    assert states(conn.abort(unknown_id, wait=0.5)) == dict.fromkeys(pids, "not running here")

    proc = taskell_cli("abort", handle.id, "--wait", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{handle.id} already finished: nothing to abort", proc.stdout
    proc = taskell_cli("abort", unknown_id, "--wait", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{unknown_id} is not running on any of 2 live worker(s)"), proc.stdout
    assert "Traceback" not in proc.stderr

    assert all(w.proc.poll() is None for w in workers)
    assert squares_succeed(conn, markers, 4)


def test_abort_is_idempotent(
    conn: taskell.Connection, config: taskell.Config, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    workers = spawn(Spec(), Spec())
    handle = Client(conn).sleep(seconds=60.0)
    runner = started_on(markers, handle.id)
    wait_progress(handle)
    with taskell.connect(config=config) as other:
        first = other.abort(handle.id, wait=0.0)
        second = other.abort(handle.id, wait=0.5)  # may meet the task running or just finished
    assert first == []
    assert states(second)[runner] in ("aborting", "finished"), second
    handle.abort()  # a third, from the handle: no error either
    with pytest.raises(taskell.TaskAborted):
        handle.result(timeout=WAIT)
    assert states(conn.abort(handle.id, wait=0.5))[runner] == "finished"
    assert len(events(markers, "start", handle.id)) == 1
    assert len(events(markers, "finally", handle.id)) == 1
    assert_settled(amqp)
    assert running_tasks(conn).get(runner) == []
    assert runner in squares_succeed(conn, markers)
    assert all(w.proc.poll() is None for w in workers)


# 6. Several workers on several queues


def test_abort_reaches_the_worker_consuming_the_tasks_queue(
    conn: taskell.Connection, config: taskell.Config, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    q1_only, sleeper = spawn(Spec(queues=["taskell.q1"]), Spec(queues=[SLEEP_QUEUE]))
    queues = {pid: a["queues"] for a in conn.inspect(wait=0.5) for pid in worker_pids([a])}
    assert queues == {q1_only.pid: ["taskell.q1"], sleeper.pid: [SLEEP_QUEUE]}
    handle = Client(conn).sleep(seconds=60.0)
    assert started_on(markers, handle.id) == sleeper.pid
    assert running_on(conn, handle.id) == sleeper.pid
    with taskell.connect(config=config) as other:
        answers = other.abort(handle.id, wait=0.5)
    assert states(answers) == {sleeper.pid: "aborting", q1_only.pid: "not running here"}, answers
    with pytest.raises(taskell.TaskAborted):
        handle.result(timeout=WAIT)
    assert_settled(amqp)
    # Both keep serving their own queues.
    assert squares_succeed(conn, markers, 2) == {q1_only.pid}
    assert Client(conn).sleep(seconds=0.1).result(timeout=WAIT) == 0.1
    assert all(w.proc.poll() is None for w in (q1_only, sleeper))


def test_abort_stops_only_its_own_task(
    conn: taskell.Connection, config: taskell.Config, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    workers = spawn(Spec(), Spec())
    client = Client(conn)
    doomed = client.sleep(seconds=60.0)
    survivor = client.sleep(seconds=2.5)
    doomed_on, survivor_on = started_on(markers, doomed.id), started_on(markers, survivor.id)
    assert {doomed_on, survivor_on} == {w.pid for w in workers}
    with taskell.connect(config=config) as other:
        answers = other.abort(doomed.id, wait=0.5)
    assert states(answers) == {doomed_on: "aborting", survivor_on: "not running here"}, answers
    with pytest.raises(taskell.TaskAborted):
        doomed.result(timeout=WAIT)
    assert not survivor.done(), "the survivor ended early (or the test was too slow to tell)"
    assert survivor.result(timeout=WAIT) == 2.5
    (final,) = events(markers, "finally", survivor.id)
    assert final["aborted"] is False and final["pid"] == survivor_on
    assert_settled(amqp)


# 7. Aborts sent while no worker is up: the abort records on the broker


def aborted_before_start(handle: taskell.TaskHandle[Any, Any], markers: Path) -> None:
    """``handle``'s task ended aborted without ever starting."""
    with pytest.raises(taskell.TaskAborted) as info:
        handle.result(timeout=WAIT)
    assert info.value.task_id == handle.id
    assert "before it started" in str(info.value)
    assert events(markers, "start", handle.id) == [], "an aborted queued task started"


def test_abort_while_no_worker_is_up_still_stops_the_queued_task(
    conn: taskell.Connection, spawn: Spawn, markers: Path, amqp: Any, taskell_cli: Cli
) -> None:
    """A queued task never starts once aborted, also when the abort is sent while no
    worker is live (as when a worker is started later to scale out, or restarts): the abort is
    recorded on the broker and a worker that starts later reads it before taking tasks."""
    handle = Client(conn).sleep(seconds=0.2)
    conn.flush(WAIT)
    assert queue_counts(amqp, SLEEP_QUEUE)[0] == 1
    assert conn.abort(handle.id, wait=0.5) == []  # no worker to answer
    proc = taskell_cli("abort", handle.id, "--wait", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("no live worker answered; the abort is kept on the broker for 86400 s"), (
        proc.stdout
    )
    spawn(Spec())
    aborted_before_start(handle, markers)
    assert_settled(amqp)
    assert squares_succeed(conn, markers, 2)


def test_aborts_sent_before_two_workers_start_stop_only_their_tasks(
    conn: taskell.Connection, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    client = Client(conn)
    handles = [client.sleep(seconds=0.1) for _ in range(6)]
    doomed, kept = handles[::2], handles[1::2]
    conn.flush(WAIT)
    for handle in doomed:
        assert handle.abort() is True
    workers = spawn(Spec(), Spec())
    for handle in doomed:
        aborted_before_start(handle, markers)
    assert [h.result(timeout=WAIT) for h in kept] == [0.1] * len(kept)
    ran_on = {e["pid"] for h in kept for e in events(markers, "start", h.id)}
    assert ran_on <= {w.pid for w in workers}
    assert_settled(amqp)


def test_a_worker_started_after_another_read_the_record_knows_it_too(
    conn: taskell.Connection, spawn: Spawn, markers: Path, amqp: Any
) -> None:
    """Reading a record does not consume it: the first worker (on another queue) has read it,
    the second, started afterwards on the task's queue, still refuses the task."""
    handle = Client(conn).sleep(seconds=0.1)
    conn.flush(WAIT)
    conn.abort(handle.id)
    spawn(Spec(queues=["taskell.q1"]))
    assert not handle.done()
    spawn(Spec(queues=[SLEEP_QUEUE]))
    aborted_before_start(handle, markers)
    assert_settled(amqp)


def test_a_record_older_than_the_retention_is_not_applied(
    broker: str, markers: Path, amqp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``abort_retention`` 3 s (on an abort exchange of its own, whose record stream has that
    retention): an abort older than that is forgotten, a recent one still applies. The workers
    run in this process, so starting one takes well under the retention."""
    monkeypatch.setenv(MARKERS_ENV, str(markers))
    exchange = f"taskell.abort.brief-{uuid.uuid4().hex[:8]}"
    config = taskell.Config.from_url(broker).model_copy(
        update={"abort_exchange": exchange, "abort_retention": 3.0}
    )
    try:
        with taskell.connect(config=config) as conn:
            client = Client(conn)
            stale = client.sleep(seconds=0.1)
            conn.flush(WAIT)
            stale.abort()
            time.sleep(3.5)
            recent = client.sleep(seconds=0.1)
            conn.flush(WAIT)
            recent.abort()
            with taskell.Worker(example_handlers, config):
                aborted_before_start(recent, markers)
                assert stale.result(timeout=WAIT) == 0.1
    finally:
        amqp.queue_delete(f"{exchange}.log")
        amqp.exchange_delete(exchange)


@pytest.fixture
def fresh_vhost(broker: str) -> Iterator[str]:
    """The URL of a vhost of its own (a quorum config redeclares the shared join queues),
    deleted afterwards."""
    name = f"taskell-aborts-{uuid.uuid4().hex[:8]}"
    for command in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", "-q", *command], check=True, capture_output=True, timeout=60)
    parts = urllib.parse.urlsplit(broker)
    try:
        yield parts._replace(path="/" + urllib.parse.quote(name, safe="")).geturl()
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60, check=False
        )


def test_aborts_before_any_worker_with_quorum_queues(
    fresh_vhost: str, markers: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MARKERS_ENV, str(markers))
    config = taskell.Config.load(None, env={}, url=fresh_vhost, queue_type="quorum")
    with taskell.connect(config=config) as conn:
        client = Client(conn)
        doomed, kept = client.sleep(seconds=0.1), client.sleep(seconds=0.1)
        conn.flush(WAIT)
        conn.abort(doomed.id)
        with taskell.Worker(example_handlers, config), taskell.Worker(example_handlers, config):
            aborted_before_start(doomed, markers)
            assert kept.result(timeout=WAIT) == 0.1


# 8. Two process-mode bugs these tests found (fixed since)


def test_process_mode_aborts_do_not_leak_file_descriptors(conn: taskell.Connection, spawn: Spawn) -> None:
    """Each abort in process mode kills the task's child and forks a new one; the dead child's
    pipe (and its multiprocessing sentinel) must not stay open in the worker."""
    (worker,) = spawn(Spec(target=BENCH_SPIN, env=PROCESS_CSLEEP))
    client = Client(conn)
    assert client.square(x=2).result(timeout=WAIT) == 4  # the pool thread's first child exists

    def open_fds() -> int:
        return len(os.listdir(f"/proc/{worker.pid}/fd"))

    before = open_fds()
    for _ in range(5):
        handle = client.sleep(seconds=3600.0)
        wait_progress(handle)
        handle.abort()
        with pytest.raises(taskell.TaskAborted):
            handle.result(timeout=WAIT)
    assert client.square(x=3).result(timeout=WAIT) == 9
    after = open_fds()
    assert after - before <= 2, f"worker fds {before} -> {after} after 5 aborts in process mode"


def test_process_mode_worker_killed_mid_task_releases_the_task(
    conn: taskell.Connection, spawn: Spawn, amqp: Any
) -> None:
    """A worker that dies mid-task leaves the task to be redelivered. In process mode the
    handler's child is forked after the worker connected: it must neither keep the inherited
    broker sockets open nor outlive its SIGKILLed parent (it is stuck in a C sleep), else it
    keeps the dead worker's connection, consumers and unacknowledged task alive."""
    (worker,) = spawn(Spec(target=BENCH_SPIN, env=PROCESS_CSLEEP))
    handle = Client(conn).sleep(seconds=3600.0)
    wait_progress(handle)
    children = child_pids(worker.pid)
    assert children
    try:
        worker.proc.kill()  # by PID: the worker dies as on an OOM kill or a crash
        worker.proc.wait(WAIT)
        poll_until(lambda: queue_counts(amqp, SLEEP_QUEUE) == (1, 0), 5, interval=0.2)
        counts = queue_counts(amqp, SLEEP_QUEUE)
        orphans = {pid for pid in children if alive(pid)}
        assert counts[0] == 1 and not orphans, (
            f"{SLEEP_QUEUE}: (ready, unacked) = {counts} 5 s after the worker was killed; "
            f"its task process(es) {sorted(orphans)} still alive"
        )
    finally:
        for pid in children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        # The task comes back once the last fd closes.
        poll_until(lambda: not queue_counts(amqp, SLEEP_QUEUE)[1], 5, interval=0.2)
        amqp.queue_purge(SLEEP_QUEUE)
