"""Round trip of a no-op task with ``time_limit`` and ``retry`` declared vs the same task
without them (issue goal: at least 0.95x), measured in one run against one worker.

Both specs run the same handler on the same queue and worker (``bench/policy_worker.py``).
Each repetition runs both, in a random order, as (a) a batch of ``--count`` tasks submitted at
once then awaited (throughput) and (b) ``--sequential`` calls one after another (p50/p99);
the ratio is computed per repetition, and the median ratio is reported with every raw sample.

    .venv/bin/python -m bench.bench_policies [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import taskell
from bench._common import URL, latencies, run_info, save, start_worker, stop_worker
from bench.policy_worker import PLAIN, POLICIES

TIMEOUT = 120.0


def batch(conn: taskell.Connection, spec: taskell.TaskSpec[Any, None, int], count: int) -> float:
    """Tasks per second for ``count`` tasks submitted at once, then awaited."""
    deadline = time.monotonic() + TIMEOUT
    started = time.perf_counter()
    handles = [conn.submit(spec, {"x": i}) for i in range(count)]
    for i, handle in enumerate(handles):
        if handle.result(timeout=max(0.001, deadline - time.monotonic())) != i * i:
            raise AssertionError("wrong result")
    return count / (time.perf_counter() - started)


def sequential(
    conn: taskell.Connection, spec: taskell.TaskSpec[Any, None, int], count: int
) -> dict[str, Any]:
    def call(i: int) -> None:
        if conn.submit(spec, {"x": i}).result(timeout=10) != i * i:
            raise AssertionError("wrong result")

    return latencies(call, count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, smaller counts")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--count", type=int, default=None, help="tasks per batch (default 3000)")
    parser.add_argument("--sequential", type=int, default=None, help="sequential calls (default 500)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    a = parser.parse_args()
    run = run_info()  # at the start: the load average then
    repeat = a.repeat or (2 if a.quick else 5)
    count = a.count or (500 if a.quick else 3000)
    calls = a.sequential or (100 if a.quick else 500)
    samples: list[dict[str, Any]] = []
    with taskell.connect(URL) as conn:
        worker: subprocess.Popen[bytes] = start_worker(conn, "bench.policy_worker:handlers")
        try:
            for spec in (PLAIN, POLICIES):  # warm up both
                batch(conn, spec, min(300, count))
            for _ in range(repeat):
                order = [PLAIN, POLICIES]
                random.shuffle(order)
                sample: dict[str, Any] = {"order": [s.name for s in order]}
                for spec in order:
                    key = "policies" if spec is POLICIES else "plain"
                    sample[key] = {
                        "rate": round(batch(conn, spec, count), 1),
                        **sequential(conn, spec, calls),
                    }
                sample["rate_ratio"] = round(sample["policies"]["rate"] / sample["plain"]["rate"], 3)
                sample["p50_ratio"] = round(sample["policies"]["p50_ms"] / sample["plain"]["p50_ms"], 3)
                samples.append(sample)
                print(json.dumps(sample), flush=True)
        finally:
            stop_worker(worker)
    result = {
        "benchmark": "bench_policies",
        **run,
        "taskell": taskell.__version__,
        "count": count,
        "sequential": calls,
        "samples": samples,
        "median_rate_ratio": statistics.median(s["rate_ratio"] for s in samples),
        "median_p50_ratio": statistics.median(s["p50_ratio"] for s in samples),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    save(Path(a.out) if a.out else None, result)


if __name__ == "__main__":
    main()
