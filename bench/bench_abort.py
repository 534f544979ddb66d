"""Abort benchmark (issue 4), against RabbitMQ (TASKELL_URL, default 127.0.0.1).

1. Abort latency, from ``handle.abort()`` to the client seeing ``TaskAborted``, for a running
   pure-Python handler on another worker process (thread pool), over N aborts.
2. Process mode: a handler stuck in ``time.sleep(3600)``: time until ``TaskAborted``.
3. Worker RSS and thread count before and after 1,000 aborted tasks.
The baseline in the same run is a plain round trip (``square``) on the same worker.

    .venv/bin/python -m bench.bench_abort [--aborts 200] [--leak-aborts 1000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import taskell
from bench._common import URL, percentile, proc_status, run_info, save, start_worker, stop_worker
from generated.demo import Client


def abort_latencies(demo: Client, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        handle = demo.sleep(seconds=60)
        next(iter(handle.progress()))  # running on the worker
        started = time.perf_counter()
        handle.abort()
        try:
            handle.result(timeout=10)
            raise AssertionError("task was not aborted")
        except taskell.TaskAborted:
            latencies.append(time.perf_counter() - started)
    return latencies


def round_trips(demo: Client, count: int) -> list[float]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        assert demo.square(x=i).result(timeout=10) == i * i
        times.append(time.perf_counter() - started)
    return times


def ms(value: float) -> str:
    return f"{value * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aborts", type=int, default=200)
    parser.add_argument("--leak-aborts", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="write the figures and samples as JSON")
    args = parser.parse_args()
    result = {
        "benchmark": "bench_abort",
        **run_info(),
        "aborts": args.aborts,
        "leak_aborts": args.leak_aborts,
    }
    with taskell.connect(URL) as conn:
        demo = Client(conn)
        worker = start_worker(conn, "bench.spin_worker:handlers", parallelism=2)
        try:
            baseline = round_trips(demo, 200)
            latencies = abort_latencies(demo, args.aborts)
            print(f"thread pool, pure-Python handler, {args.aborts} aborts:")
            print(
                f"  abort latency median {ms(statistics.median(latencies))}, p99 {ms(percentile(latencies, 0.99))}"
            )
            print(
                f"  baseline round trip median {ms(statistics.median(baseline))} "
                f"(abort median = {statistics.median(latencies) / statistics.median(baseline):.2f}x a round trip)"
            )
            abort_latencies(demo, 20)  # warm-up before the leak check
            before = proc_status(worker.pid)
            abort_latencies(demo, args.leak_aborts)
            after = proc_status(worker.pid)
            result.update(
                abort_p50_ms=round(statistics.median(latencies) * 1000, 2),
                abort_p99_ms=round(percentile(latencies, 0.99) * 1000, 2),
                round_trip_p50_ms=round(statistics.median(baseline) * 1000, 2),
                rss_before_kib=before["VmRSS"],
                rss_after_kib=after["VmRSS"],
                threads_before=before["Threads"],
                threads_after=after["Threads"],
                abort_ms=[round(t * 1000, 3) for t in latencies],
            )
            print(
                f"  after {args.leak_aborts} more aborts: RSS {before['VmRSS']} -> {after['VmRSS']} KiB "
                f"({after['VmRSS'] / before['VmRSS']:.3f}x), threads {before['Threads']} -> {after['Threads']}"
            )
        finally:
            stop_worker(worker)

        worker = start_worker(
            conn,
            "bench.spin_worker:handlers",
            parallelism=2,
            env={"BENCH_SLEEP": "csleep", "TASKELL_POOL": "process"},
        )
        try:
            kills = abort_latencies(demo, 20)
            print("process pool, handler in time.sleep(60), 20 aborts:")
            print(f"  abort latency median {ms(statistics.median(kills))}, max {ms(max(kills))}")
            result.update(
                kills=len(kills),
                kill_p50_ms=round(statistics.median(kills) * 1000, 2),
                kill_max_ms=round(max(kills) * 1000, 2),
                kill_ms=[round(t * 1000, 3) for t in kills],
            )
        finally:
            stop_worker(worker)
    save(args.out, result)


if __name__ == "__main__":
    main()
