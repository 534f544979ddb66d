"""Issue 3, points 4 and 5: bounded parallelism, and many handles on one connection."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import taskell
from generated.demo import Client
from tests.support import RESULT_TIMEOUT, StartWorker


def _run_sleeps(conn: taskell.Connection, count: int, seconds: float) -> float:
    client = Client(conn)
    started = time.monotonic()
    handles = [client.sleep(seconds=seconds) for _ in range(count)]
    for handle in handles:
        assert handle.result(timeout=RESULT_TIMEOUT) == seconds
    return time.monotonic() - started


def test_parallelism_4_runs_four_tasks_at_once(conn: taskell.Connection, start_worker: StartWorker) -> None:
    start_worker(parallelism=4)
    elapsed = _run_sleeps(conn, 4, 1.0)
    assert 1.0 <= elapsed < 2.5, f"4 x sleep(1) with parallelism 4 took {elapsed:.2f} s"


def test_parallelism_1_runs_one_task_at_a_time(conn: taskell.Connection, start_worker: StartWorker) -> None:
    start_worker(parallelism=1)
    elapsed = _run_sleeps(conn, 2, 1.0)
    assert elapsed >= 2.0, f"2 x sleep(1) with parallelism 1 took only {elapsed:.2f} s"
    assert elapsed < 10.0


def test_many_threads_share_one_connection(conn: taskell.Connection, start_worker: StartWorker) -> None:
    start_worker(parallelism=8)

    def submit_and_check(thread: int) -> int:
        client = Client(conn)
        numbers = [thread * 1000 + i for i in range(100)]
        handles = [client.square(x=n) for n in numbers]
        assert len({h.id for h in handles}) == 100
        for n, handle in zip(numbers, handles, strict=True):
            assert handle.result(timeout=RESULT_TIMEOUT) == n * n, (thread, n)
        return len(handles)

    with ThreadPoolExecutor(8) as pool:
        counts = list(pool.map(submit_and_check, range(8)))
    assert counts == [100] * 8
