"""Delay benchmark (issue 13), against RabbitMQ (TASKELL_URL, default 127.0.0.1): how late
delayed tasks start. Prints one JSON object.

N tasks (1,000; ``--quick``: 100) are submitted at once with random delays of 1 to 10 s
(``--quick``: 1 to 3 s) to a worker subprocess (parallelism 8) whose ``square`` answers the
wall-clock time it started. Lateness = start - (submission + delay); the figures are its
p50 / p99 / max, and how many started early (must be 0). Every wait is bounded.

    .venv/bin/python -m bench.bench_delays [--quick] [--tasks N] [--longest S] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import taskell
from bench._common import URL, percentile, run_info, save, start_worker, stop_worker
from generated.demo import Client


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100 tasks delayed 1-3 s (a smoke test)")
    parser.add_argument("--tasks", type=int, help="tasks to delay (default 1,000; --quick: 100)")
    parser.add_argument("--longest", type=float, help="longest delay in s (default 10; --quick: 3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    run = run_info()  # at the start: the load average then
    count = args.tasks or (100 if args.quick else 1000)
    longest = args.longest or (3.0 if args.quick else 10.0)
    rng = random.Random(args.seed)
    delays = [rng.uniform(1.0, longest) for _ in range(count)]
    with taskell.connect(URL) as conn:
        worker = start_worker(conn, "bench.clock_worker:handlers", parallelism=8)
        try:
            # The first delayed task declares the delay levels: not part of the figures.
            Client(conn.options(delay=0.01)).square(x=0).result(timeout=60)
            sent: list[tuple[float, float, taskell.TaskHandle[None, int]]] = []
            for n, delay in enumerate(delays):
                at = time.time()
                sent.append((at, delay, Client(conn.options(delay=delay)).square(x=n)))
            conn.flush(60)
            deadline = time.monotonic() + longest + 60
            late = []
            for at, delay, handle in sent:
                started_us = handle.result(timeout=max(0.1, deadline - time.monotonic()))
                late.append(started_us / 1e6 - (at + delay))
        finally:
            stop_worker(worker)
    result = {
        "bench": "delays",
        **run,
        "tasks": count,
        "delays_s": [1.0, longest],
        "late_p50_ms": round(statistics.median(late) * 1000, 1),
        "late_p99_ms": round(percentile(late, 0.99) * 1000, 1),
        "late_max_ms": round(max(late) * 1000, 1),
        "early": sum(1 for value in late if value < 0),
        "samples": [  # per task: its delay and how late it started, in ms
            {"delay_ms": round(delay * 1000, 1), "late_ms": round(value * 1000, 2)}
            for (_, delay, _), value in zip(sent, late, strict=True)
        ],
    }
    print(json.dumps(result))
    save(Path(args.out) if args.out else None, result)


if __name__ == "__main__":
    main()
