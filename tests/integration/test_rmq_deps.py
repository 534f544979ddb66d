"""Issue 5: task dependencies on a real RabbitMQ.

Handlers come from ``tests.integration.dep_handlers``: every handler records when it starts
and ends (``time.time_ns()``, one clock for all processes of the host) and its value, so the
tests check from the workers' side that a task started only after each of its dependencies
ended, that the right values flowed in, and that tasks downstream of a failure never ran.

* chain, fan-out, fan-in (several arguments, list items, the same handle twice), ``after=``;
* a random 200-node DAG on two workers, every edge checked;
* failure and abort propagation (``DependencyFailed`` naming the root, 3 levels down), and an
  aborted downstream task leaving its upstream alone;
* a client subprocess that exits right after submitting a DAG (``dep_client.py``);
* a worker SIGKILLed mid-DAG while it is the active joiner of every join partition;
* two bugs found here (and fixed): a dependency on a handle of another connection
  that closes meanwhile (its local ``BrokerUnavailable`` is forwarded as the dependency's
  outcome, and closing the dependent's connection then raises), and a release by the joiner
  unbinding a partition another client has just bound for a record still on its way.

mypy rejecting ``demo.square(x=h)`` for a handle ``h`` whose result is ``str`` is checked by
``tests/typing/test_typing_generated.py`` (snippet ``client_ref_mismatch``).

The join partitions (``taskell.join.0..3``) and the ``taskell.outcomes`` exchange are deleted
before and after each test here, so no held join record outlives its test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from generated.demo import Client, Image
from generated.demo import models as demo_models
from tests.integration.dep_dag import check_events, describe, edges, random_dag, submit_dag
from tests.integration.dep_handlers import UNLUCKY, DepImpl, read_events
from tests.support import (
    ROOT,
    TASKELL,
    URL,
    StartWorker,
    blocking_connection,
    cli_env,
    python_env,
    stop_process,
    wait_consuming,
    wait_until,
)

JOIN_QUEUES = tuple(f"taskell.join.{n}" for n in range(4))
OUTCOMES = "taskell.outcomes"
WAIT = 30.0  # bound of every wait in this module
DEP_HANDLERS = "tests.integration.dep_handlers:handlers"

SpawnDeps = Callable[..., "subprocess.Popen[bytes]"]


def _delete_join_state() -> None:
    connection = blocking_connection()
    try:
        channel = connection.channel()
        for queue in JOIN_QUEUES:
            channel.queue_delete(queue)
        channel.exchange_delete(OUTCOMES)
    finally:
        connection.close()


@pytest.fixture(autouse=True)
def clean_join_state(clean_queues: None) -> Iterator[None]:
    """Delete the join partitions and the outcomes exchange before and after each test."""
    _delete_join_state()
    yield
    _delete_join_state()


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    path = tmp_path / "markers"
    path.mkdir()
    return path


@pytest.fixture
def demo(conn: taskell.Connection) -> Client:
    return Client(conn)


@pytest.fixture
def dep_worker(start_worker: StartWorker, markers: Path) -> taskell.Worker:
    """An in-process worker (parallelism 4) over the recording handlers."""
    return start_worker(parallelism=4, impl=DepImpl(markers))


@pytest.fixture
def spawn_deps(config: taskell.Config, tmp_path: Path, markers: Path) -> Iterator[SpawnDeps]:
    """``spawn_deps(parallelism=2, delay=0.0)``: ``taskell worker
    tests.integration.dep_handlers:handlers`` in a subprocess recording to ``markers``;
    returns once it answers ``inspect`` and consumes. Stopped by PID at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(parallelism: int = 2, delay: float = 0.0) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"dep-worker-{len(procs)}.log"
        env = {**cli_env(URL), "DEP_MARKERS": str(markers), "DEP_DELAY": str(delay)}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [TASKELL, "worker", DEP_HANDLERS, "--parallelism", str(parallelism)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        wait_consuming(config, [(proc, log_path)], WAIT)
        return proc

    try:
        yield spawn
    finally:
        for proc in procs:
            stop_process(proc)


# Evidence from the handlers' events


def starts(markers: Path, task_id: str) -> list[int]:
    return [e["t"] for e in read_events(markers) if e["task_id"] == task_id and e["event"] == "start"]


def ends(markers: Path, task_id: str) -> list[int]:
    return [e["t"] for e in read_events(markers) if e["task_id"] == task_id and e["event"] == "end"]


def assert_after(markers: Path, task: taskell.Ref[object], *deps: taskell.Ref[object]) -> None:
    """``task`` started exactly once, after every one of ``deps`` ended."""
    (started,) = starts(markers, task.id)
    for dep in deps:
        ended = ends(markers, dep.id)
        assert ended, f"dependency {dep.id} never ended"
        assert started >= min(ended), (
            f"{task.id} started {(min(ended) - started) / 1e6:.1f} ms before {dep.id} ended"
        )


def dependency_failure(handle: taskell.TaskHandle[Any, Any]) -> taskell.DependencyFailed:
    with pytest.raises(taskell.DependencyFailed) as info:
        handle.result(timeout=WAIT)
    assert info.value.task_id == handle.id
    return info.value


# 1-3: chains, fan-out, fan-in, after=


def test_chain_passes_results_in_order(demo: Client, dep_worker: taskell.Worker, markers: Path) -> None:
    gate = demo.sleep(seconds=0.3)
    a = demo.square(x=3, after=[gate])
    b = demo.square(x=a)
    c = demo.square(x=b)
    assert not a.done()  # b and c go through joins, not resolved on the spot
    assert (a.result(timeout=WAIT), b.result(timeout=WAIT), c.result(timeout=WAIT)) == (9, 81, 6561)
    assert_after(markers, b, a)
    assert_after(markers, c, b)
    # A dependency that already succeeded is resolved by the client on the spot.
    d = demo.total(parts=[a, c, 1])
    assert d.result(timeout=WAIT) == 9 + 6561 + 1
    assert_after(markers, d, a, c)


def test_fan_out_many_tasks_on_one_handle(demo: Client, dep_worker: taskell.Worker, markers: Path) -> None:
    gate = demo.sleep(seconds=0.3)
    root = demo.square(x=7, after=[gate])
    squares = [demo.square(x=root) for _ in range(15)]
    totals = [demo.total(parts=[root, i]) for i in range(15)]
    assert root.result(timeout=WAIT) == 49
    assert [h.result(timeout=WAIT) for h in squares] == [49 * 49] * 15
    assert [h.result(timeout=WAIT) for h in totals] == [49 + i for i in range(15)]
    assert_after(markers, root, gate)
    for handle in [*squares, *totals]:
        assert_after(markers, handle, root)


def test_fan_in_several_args_and_list_items(demo: Client, dep_worker: taskell.Worker, markers: Path) -> None:
    gate = demo.sleep(seconds=0.2)
    h1 = demo.square(x=2, after=[gate])
    h2 = demo.square(x=3, after=[gate])
    total = demo.total(parts=[h1, 5, h2])
    twice = demo.total(parts=[h1, h1, h2, 100])  # the same handle in two places
    summed = demo.sum(numbers=[h2, total, 1])  # a dependent of a dependent, with progress
    assert total.result(timeout=WAIT) == 4 + 5 + 9
    assert twice.result(timeout=WAIT) == 4 + 4 + 9 + 100
    assert summed.result(timeout=WAIT) == 9 + 18 + 1
    assert list(summed.progress())[-1] == 100
    assert_after(markers, total, h1, h2)
    assert_after(markers, twice, h1, h2)
    # Several arguments of one task, each a handle: image and size of thumbnail.
    image = Image(width=4, height=4, pixels=bytes(range(16)), label="x")
    small = demo.thumbnail(image=image, size=2, after=[gate])
    smaller = demo.thumbnail(image=small, size=demo.square(x=1, after=[gate]))
    out = smaller.result(timeout=WAIT)
    assert (out.width, out.height, out.label) == (1, 1, "x")


def test_after_is_order_only(demo: Client, dep_worker: taskell.Worker, markers: Path) -> None:
    slow = demo.sleep(seconds=0.5)
    fast = demo.sleep(seconds=0.1)
    last = demo.square(x=5, after=[slow, fast])
    both = demo.total(parts=[last, 1], after=[fast])  # data and order dependencies together
    plain = demo.square(x=6)  # no dependency: runs at once, in parallel with slow
    assert last.result(timeout=WAIT) == 25
    assert both.result(timeout=WAIT) == 26
    assert plain.result(timeout=WAIT) == 36
    assert_after(markers, last, slow, fast)
    assert_after(markers, both, last, fast)
    (plain_start,) = starts(markers, plain.id)
    assert plain_start < min(ends(markers, slow.id))  # the worker had free slots: order came from after=
    # after= on an already finished task is satisfied on the spot
    again = demo.square(x=2, after=[slow, last])
    assert again.result(timeout=WAIT) == 4


def test_random_dag_of_200_nodes(
    demo: Client, start_worker: StartWorker, markers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        start_worker(parallelism=4, impl=DepImpl(markers))
    nodes = random_dag(200, seed=5)
    started = time.monotonic()
    handles = submit_dag(demo, nodes)
    results = [h.result(timeout=WAIT) for h in handles]
    elapsed = time.monotonic() - started
    assert results == [node.expected for node in nodes]
    problems, duplicates = check_events(describe(nodes, handles), read_events(markers))
    assert problems == []
    assert duplicates == 0
    with capsys.disabled():
        print(f"\n200-node DAG ({edges(nodes)} edges) on 2 in-process workers: {elapsed:.2f} s")


# 4: failure and abort propagation


def test_failure_propagates_to_every_downstream_task(
    demo: Client, dep_worker: taskell.Worker, markers: Path
) -> None:
    root = demo.square(x=UNLUCKY)  # raises ValueError after 0.5 s
    ok = demo.square(x=2)
    level1 = demo.square(x=root)
    level1_order = demo.total(parts=[1, 2], after=[root])
    level2 = demo.total(parts=[ok, level1, 3])
    level2_order = demo.square(x=4, after=[level1_order])
    level3 = demo.square(x=level2, after=[ok])
    level3_mixed = demo.total(parts=[level2, ok], after=[level2_order])
    downstream = [level1, level1_order, level2, level2_order, level3, level3_mixed]
    assert not root.done()
    with pytest.raises(taskell.TaskFailed) as root_failure:
        root.result(timeout=WAIT)
    assert root_failure.value.error_type == "ValueError"
    for handle in downstream:
        failure = dependency_failure(handle)
        assert failure.dependency_id == root.id
        assert isinstance(failure.cause, taskell.TaskFailed)
        assert failure.cause.error_type == "ValueError"
        assert "unlucky" in failure.cause.message
    # Submitted after the failure is known: fails at once, same root cause.
    late = demo.square(x=level3)
    late_failure = dependency_failure(late)
    assert late_failure.dependency_id == root.id
    assert isinstance(late_failure.cause, taskell.TaskFailed)
    assert late_failure.cause.error_type == "ValueError"
    # The dependency that succeeded is unaffected; no downstream handler ever ran.
    assert ok.result(timeout=WAIT) == 4
    time.sleep(0.3)  # a window for a downstream handler that wrongly started to show up
    ran = {e["task_id"] for e in read_events(markers) if e["event"] == "start"}
    assert ran == {root.id, ok.id}


def test_fail_task_with_after(demo: Client, dep_worker: taskell.Worker, markers: Path) -> None:
    failing = demo.fail(message="nope")
    after = demo.square(x=2, after=[failing])
    failure = dependency_failure(after)
    assert failure.dependency_id == failing.id
    assert isinstance(failure.cause, taskell.TaskFailed)
    assert (failure.cause.error_type, failure.cause.message) == ("ValueError", "nope")
    assert starts(markers, after.id) == []


def test_abort_upstream_propagates(demo: Client, dep_worker: taskell.Worker, markers: Path) -> None:
    upstream = demo.sleep(seconds=20)
    level1 = demo.square(x=2, after=[upstream])
    level2 = demo.total(parts=[level1, 1])
    level3 = demo.square(x=level2)
    wait_until(lambda: bool(starts(markers, upstream.id)), WAIT, "upstream running")
    assert upstream.abort()
    with pytest.raises(taskell.TaskAborted):
        upstream.result(timeout=WAIT)
    for handle in (level1, level2, level3):
        failure = dependency_failure(handle)
        assert failure.dependency_id == upstream.id
        assert isinstance(failure.cause, taskell.TaskAborted)
    for handle in (level1, level2, level3):
        assert starts(markers, handle.id) == []


def test_abort_of_a_waiting_task_propagates_down_not_up(
    demo: Client, dep_worker: taskell.Worker, markers: Path
) -> None:
    upstream = demo.sleep(seconds=1.0)
    middle = demo.square(x=3, after=[upstream])  # held in a join when aborted
    down = demo.square(x=middle)
    down2 = demo.total(parts=[down, 1])
    wait_until(lambda: bool(starts(markers, upstream.id)), WAIT, "upstream running")
    assert middle.abort()
    with pytest.raises(taskell.TaskAborted):
        middle.result(timeout=WAIT)
    for handle in (down, down2):
        failure = dependency_failure(handle)
        assert failure.dependency_id == middle.id
        assert isinstance(failure.cause, taskell.TaskAborted)
    # The upstream task is not aborted: it completes normally.
    assert upstream.result(timeout=WAIT) == 1.0
    assert [
        e.get("value") for e in read_events(markers) if e["task_id"] == upstream.id and e["event"] == "end"
    ] == [1.0]
    for handle in (middle, down, down2):
        assert starts(markers, handle.id) == []
    # ... and a new dependent of the upstream runs.
    assert demo.square(x=4, after=[upstream]).result(timeout=WAIT) == 16


# 5: the client exits right after submitting; a worker is SIGKILLed mid-DAG


def test_dag_completes_after_the_client_exits(spawn_deps: SpawnDeps, markers: Path, tmp_path: Path) -> None:
    spawn_deps(parallelism=4)
    spawn_deps(parallelism=4)
    spec_path = tmp_path / "dag.json"
    gate_seconds = 2.5  # longer than the submission takes, even on a busy broker
    env = python_env(URL)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.integration.dep_client",
            str(spec_path),
            "120",
            "11",
            str(gate_seconds),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    exited = json.loads(proc.stdout.strip().splitlines()[-1])
    spec = json.loads(spec_path.read_text())
    tasks: dict[str, dict[str, Any]] = spec["tasks"]
    # The client was gone before any task of the DAG ran (they all wait for the gate).
    print(
        f"client: submitted in {(exited['submitted_ns'] - exited['began_ns']) / 1e9:.2f} s, closed in "
        f"{(exited['closed_ns'] - exited['submitted_ns']) / 1e9:.3f} s"
    )
    assert not exited["gate_done"], exited
    events = read_events(markers)
    assert not any(e["event"] == "start" and e["task_id"] in tasks for e in events), exited

    def all_done() -> bool:
        done = {e["task_id"] for e in read_events(markers) if e["event"] == "end"}
        return set(tasks) <= done

    wait_until(all_done, WAIT, f"all {len(tasks)} tasks of the DAG completed")
    events = read_events(markers)
    first_task = min(e["t"] for e in events if e["event"] == "start" and e["task_id"] in tasks)
    assert first_task > exited["closed_ns"], exited
    problems, duplicates = check_events(tasks, events)
    assert problems == []
    assert duplicates == 0


def test_dag_survives_a_worker_sigkill(
    demo: Client, spawn_deps: SpawnDeps, markers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first worker consumes the join partitions first: single-active-consumer makes it the
    # active joiner of all four, so killing it kills the joiner holding every pending join.
    victim = spawn_deps(parallelism=3, delay=0.04)
    spawn_deps(parallelism=3, delay=0.04)
    nodes = random_dag(200, seed=7, window=25)
    started = time.monotonic()
    handles = submit_dag(demo, nodes)
    spec = describe(nodes, handles)

    def ended_count() -> int:
        return len({e["task_id"] for e in read_events(markers) if e["event"] == "end"})

    wait_until(lambda: ended_count() >= 50, WAIT, "50 tasks ended")
    victim_events = [e for e in read_events(markers) if e["pid"] == victim.pid]
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(10)
    killed_at = ended_count()
    in_flight = sum(1 for h in handles if not h.done())
    spawn_deps(parallelism=3, delay=0.04)  # a replacement
    results = [h.result(timeout=60) for h in handles]
    elapsed = time.monotonic() - started
    assert results == [node.expected for node in nodes]
    events = read_events(markers)
    problems, duplicates = check_events(spec, events)
    assert problems == []
    assert victim_events, "the killed worker had run tasks"
    runs: dict[str, list[str]] = {}
    for e in events:
        if e["event"] == "start":
            who = "victim" if e["pid"] == victim.pid else str(e["pid"])
            runs.setdefault(e["task_id"], []).append(f"{who}{'(redelivered)' if e['redelivered'] else ''}")
    twice = {task_id: who for task_id, who in runs.items() if len(who) > 1}
    victim_ids = {e["task_id"] for e in events if e["pid"] == victim.pid}
    cut = [
        i
        for i in victim_ids
        if not any(e["task_id"] == i and e["event"] == "end" for e in events if e["pid"] == victim.pid)
    ]
    with capsys.disabled():
        print(
            f"\nSIGKILL mid-DAG: killed after {killed_at}/200 tasks ended ({in_flight} not done at the "
            f"client); DAG done in {elapsed:.1f} s; duplicate runs: {duplicates}; "
            f"tasks cut short on the victim: {len(cut)}; ran twice: {sorted(twice.values())}"
        )


# Dependencies on handles of another connection


def test_dependency_on_a_handle_of_a_connection_closed_meanwhile(
    config: taskell.Config, dep_worker: taskell.Worker, markers: Path
) -> None:
    """``a`` is submitted on connection 1, ``b`` on connection 2 depends on it, then connection
    1 closes while ``a`` runs (allowed: it was live when ``b`` was submitted). ``a`` still
    succeeds on the worker, and its outcome event reaches ``b``'s join through the binding, so
    ``b`` must run, not fail with ``DependencyFailed`` caused by connection 1's local
    ``BrokerUnavailable``."""
    with taskell.connect(config=config) as client2:
        with taskell.connect(config=config) as client1:
            a = Client(client1).sleep(seconds=0.5)
            b = Client(client2).square(x=2, after=[a])
        wait_until(lambda: bool(ends(markers, a.id)), WAIT, "a ended on the worker")
        assert [
            e.get("value") for e in read_events(markers) if e["task_id"] == a.id and e["event"] == "end"
        ] == [0.5]
        try:
            assert b.result(timeout=WAIT) == 4
        finally:
            client2.close(flush=False)


def test_closing_a_connection_after_the_one_owning_its_dependencies(
    config: taskell.Config, dep_worker: taskell.Worker, markers: Path
) -> None:
    """Connection 2 has a task depending on a handle of connection 1, which closed first.
    Closing connection 2 must work (and flush its own submissions), not raise because it
    tries to sync connection 1's (closed) reply queue."""
    client2 = taskell.connect(config=config)
    try:
        with taskell.connect(config=config) as client1:
            a = Client(client1).sleep(seconds=0.2)
            Client(client2).square(x=2, after=[a])
    except BaseException:
        client2.close(flush=False)
        raise
    last = Client(client2).square(x=3)
    client2.close()  # does not sync client1's reply queue: it is closed
    wait_until(lambda: bool(ends(markers, last.id)), WAIT, "the last submission ran")


def test_a_release_does_not_remove_a_binding_a_concurrent_submitter_relies_on(
    config: taskell.Config, conn: taskell.Connection, dep_worker: taskell.Worker, markers: Path, amqp: Any
) -> None:
    """Replays one interleaving of two clients, step by step, with the wire format of
    ``taskell._deps.DependencyTracker.submit``. Client 1 submits ``upstream`` and ``r1`` (waiting on it) and
    exits. Client 2 submits ``r2`` (also waiting on ``upstream``) to the same partition: its
    bind-ok comes back, then ``r1`` is aborted and the joiner releases ``upstream`` (unbinding
    it from the partition), then client 2's record arrives, and client 2 exits (no forward).
    ``r2`` must still run once ``upstream`` ends: nothing else will deliver that outcome."""
    from taskell import _wire

    with taskell.connect(config=config) as client1:
        upstream = Client(client1).sleep(seconds=1.5)
        r1 = Client(client1).square(x=1, after=[upstream])
    partition = _wire.join_queue(r1.id)
    r2 = next(i for i in (str(uuid.uuid4()) for _ in range(1000)) if _wire.join_queue(i) == partition)
    amqp.queue_bind(partition, OUTCOMES, upstream.id)  # client 2: bind, bind-ok
    answers = conn.abort(r1.id, wait=0.5)  # the joiner releases upstream
    assert [a["state"] for a in answers] == ["aborting"]
    spec = demo_models.SQUARE
    amqp.basic_publish(  # client 2's record arrives, client 2 exits
        "",
        partition,
        b'{"x":2}',
        pika.BasicProperties(
            type=_wire.JOIN,
            message_id=r2,
            content_type=_wire.JSON,
            delivery_mode=2,
            headers={
                _wire.TASK_HEADER: spec.name,
                _wire.QUEUE_HEADER: spec.queue,
                _wire.FINGERPRINT_HEADER: spec.fingerprint,
                _wire.DEPS_HEADER: [upstream.id],
                _wire.REFS_HEADER: "[]",
            },
        ),
    )
    wait_until(lambda: bool(ends(markers, upstream.id)), WAIT, "upstream ended")
    wait_until(lambda: bool(ends(markers, r2)), 5, "r2 ran after upstream ended")
    assert starts(markers, r1.id) == []
