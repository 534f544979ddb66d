"""Async worker benchmark (issue 15), against RabbitMQ (TASKELL_URL, default 127.0.0.1).

1. Sleepers: 1,000 tasks each awaiting ``asyncio.sleep(0.1)`` are queued, then ONE async worker
   of parallelism 1,000 is started (``bench.aio_worker:handlers``). Figures: the worker's wall
   time from the first task's start to the last one's end, beyond the 0.1 s (worker clock), and
   to the last result the client received. A ticker task on the same loop meanwhile gives the
   longest it waited for its turn. Baseline in the same run: a sync worker of 1,000 pool
   threads doing ``time.sleep(0.1)`` (``bench.aio_worker:sync_handlers``).
2. Memory: each worker's RSS idle, then with 1,000 tasks sleeping at once (3 s each).
3. Throughput of no-op handlers (``square``): N tasks are queued, then the worker started;
   tasks/s from the first result to the last, async vs sync worker at the same parallelism.

Rounds alternate async and sync; medians are reported, raw values kept in the JSON.

    .venv/bin/python -m bench.bench_aio_worker [--rounds 3] [--tasks 5000] [--parallelism 8] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import taskell
from bench._common import URL, proc_status, start_worker, stop_worker
from generated.demo import Client

ASYNC, SYNC = "bench.aio_worker:handlers", "bench.aio_worker:sync_handlers"
SLEEPERS, NAP = 1000, 0.1
TICKER_MS = 1500  # how long the ticker ticks: past the sleepers' end


def sleepers(conn: taskell.Connection, target: str) -> dict[str, Any]:
    """Queue the ticker (async only) and 1,000 sleepers, start the worker, time them."""
    demo = Client(conn)
    ticker = demo.sum(numbers=[TICKER_MS]) if target == ASYNC else None
    handles = [demo.sleep(seconds=NAP) for _ in range(SLEEPERS)]
    conn.flush(60)
    worker = start_worker(conn, target, parallelism=SLEEPERS + 1)
    try:
        ends = [h.result(timeout=120) for h in handles]
        received = time.time()
        starts = [h.latest_progress for h in handles]
        assert all(isinstance(s, float) for s in starts)
        first = min(s for s in starts if s is not None)
        row = {
            "worker_s": round(max(ends) - first, 4),
            "beyond_sleep_s": round(max(ends) - first - NAP, 4),
            "to_last_result_s": round(received - first, 4),
            "starts_spread_s": round(max(s for s in starts if s is not None) - first, 4),
        }
        if ticker is not None:
            row["loop_longest_wait_ms"] = round(ticker.result(timeout=60) / 1000, 2)
        return row
    finally:
        stop_worker(worker)


def memory(conn: taskell.Connection, target: str) -> dict[str, Any]:
    """RSS (KiB) and threads of an idle worker, then with 1,000 tasks sleeping at once."""
    demo = Client(conn)
    worker = start_worker(conn, target, parallelism=SLEEPERS)
    try:
        time.sleep(1.0)
        idle = proc_status(worker.pid)
        handles = [demo.sleep(seconds=3.0) for _ in range(SLEEPERS)]
        deadline = time.monotonic() + 30
        while any(h.latest_progress is None for h in handles) and time.monotonic() < deadline:
            time.sleep(0.05)
        running = sum(h.latest_progress is not None for h in handles)
        loaded = proc_status(worker.pid)
        for h in handles:
            h.result(timeout=60)
        return {
            "running_at_once": running,
            "idle_rss_kib": idle["VmRSS"],
            "loaded_rss_kib": loaded["VmRSS"],
            "idle_threads": idle["Threads"],
            "loaded_threads": loaded["Threads"],
        }
    finally:
        stop_worker(worker)


def throughput(conn: taskell.Connection, target: str, tasks: int, parallelism: int) -> float:
    """No-op tasks per second of one worker, over a queue filled before it starts."""
    demo = Client(conn)
    handles = [demo.square(x=i) for i in range(tasks)]
    conn.flush(60)
    worker = start_worker(conn, target, parallelism=parallelism)
    try:
        handles[0].result(timeout=60)
        first = time.perf_counter()
        for i, h in enumerate(handles):
            assert h.result(timeout=120) == i * i
        return (tasks - 1) / (time.perf_counter() - first)
    finally:
        stop_worker(worker)


def median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(row[key] for row in rows))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--parallelism", type=int, default=8)
    parser.add_argument("--out", help="write the raw data as JSON here too")
    args = parser.parse_args()
    raw: dict[str, Any] = {
        "args": vars(args),
        "python": sys.version.split()[0],
        "sleepers": {"async": [], "sync": []},
        "memory": {},
        "throughput": {"async": [], "sync": []},
    }
    kinds = {"async": ASYNC, "sync": SYNC}
    with taskell.connect(URL) as conn:
        for _ in range(args.rounds):
            for kind, target in kinds.items():
                raw["sleepers"][kind].append(sleepers(conn, target))
                raw["throughput"][kind].append(
                    round(throughput(conn, target, args.tasks, args.parallelism), 1)
                )
        for kind, target in kinds.items():
            raw["memory"][kind] = memory(conn, target)

    a, s = raw["sleepers"]["async"], raw["sleepers"]["sync"]
    print(
        f"{SLEEPERS} tasks sleeping {NAP} s, one worker of parallelism {SLEEPERS} (median of {args.rounds}):"
    )
    print(
        f"  async: {median(a, 'beyond_sleep_s'):.3f} s beyond the sleep on the worker, "
        f"{median(a, 'to_last_result_s') - NAP:.3f} s to the client's last result; "
        f"loop's longest wait {median(a, 'loop_longest_wait_ms'):.1f} ms"
    )
    print(
        f"  sync (1,000 threads): {median(s, 'beyond_sleep_s'):.3f} s beyond the sleep, "
        f"{median(s, 'to_last_result_s') - NAP:.3f} s to the last result "
        f"(async/sync: {median(a, 'beyond_sleep_s') / median(s, 'beyond_sleep_s'):.2f}x)"
    )
    for kind, m in raw["memory"].items():
        print(
            f"  {kind} worker RSS: idle {m['idle_rss_kib'] / 1024:.1f} MiB ({m['idle_threads']} threads), "
            f"{m['running_at_once']} tasks at once {m['loaded_rss_kib'] / 1024:.1f} MiB "
            f"({m['loaded_threads']} threads): +{(m['loaded_rss_kib'] - m['idle_rss_kib']) / SLEEPERS:.1f} KiB a task"
        )
    ta, ts = statistics.median(raw["throughput"]["async"]), statistics.median(raw["throughput"]["sync"])
    print(
        f"no-op square, {args.tasks} queued tasks, parallelism {args.parallelism} (median of {args.rounds}):"
    )
    print(f"  async {ta:.0f} tasks/s, sync {ts:.0f} tasks/s: async/sync {ta / ts:.2f}x")
    if args.out:
        with open(args.out, "w") as out:
            json.dump(raw, out, indent=2)
            out.write("\n")


if __name__ == "__main__":
    main()
