"""Round trip of a no-op task through a worker with Prometheus metrics on (``metrics_port``)
vs one with them off (issue goal: at least 0.95x), measured in one run.

Two workers run side by side (``bench/metrics_worker.py``), each consuming its own queue; only
the one under test gets tasks at any time. Each repetition runs both, in a random order, as
(a) a batch of ``--count`` tasks submitted at once then awaited (throughput) and (b)
``--sequential`` calls one after another (p50/p99); the ratio is computed per repetition and
the median ratio reported with every raw sample. At the end the metrics worker's
``/metrics`` is scraped, to show it counted every task it ran.

On a shared machine the round trips are noisy, so the script also reads each worker's CPU time
per task over its batches (from /proc: what the worker itself spends, whatever else runs), and
times the hooks alone, in
this process: a task's ``started`` and outcome calls on the worker's metrics observer vs on the
observer that does nothing (what a worker without metrics calls), and sets that cost against
the measured round trip (``hook_ratio``: the throughput left if the hooks were all the
difference).

    .venv/bin/python -m bench.bench_metrics [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

import taskell
from bench._common import URL, latencies, start_worker, stop_worker
from bench.metrics_worker import OFF, ON
from taskell._metrics import Metrics
from taskell._observe import RESULT, Observer
from taskell.transport import Delivery, Message

TIMEOUT = 120.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch(
    conn: taskell.Connection, spec: taskell.TaskSpec[Any, None, int], count: int, pid: int
) -> dict[str, float]:
    """Tasks per second for ``count`` tasks submitted at once, then awaited, and the CPU time
    per task (µs) of worker ``pid`` meanwhile."""
    deadline = time.monotonic() + TIMEOUT
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    handles = [conn.submit(spec, {"x": i}) for i in range(count)]
    for i, handle in enumerate(handles):
        if handle.result(timeout=max(0.001, deadline - time.monotonic())) != i * i:
            raise AssertionError("wrong result")
    rate = count / (time.perf_counter() - started)
    return {"rate": round(rate, 1), "cpu_us": round((cpu_seconds(pid) - cpu) / count * 1e6, 1)}


def sequential(
    conn: taskell.Connection, spec: taskell.TaskSpec[Any, None, int], count: int
) -> dict[str, Any]:
    def call(i: int) -> None:
        if conn.submit(spec, {"x": i}).result(timeout=10) != i * i:
            raise AssertionError("wrong result")

    return latencies(call, count)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def counted(port: int) -> dict[str, float]:
    """``taskell_tasks_finished_total`` of task ``ON`` per outcome, scraped from the worker."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "taskell_tasks_finished_total" and sample.labels["task"] == ON.name and sample.value
    }


def hook_seconds(observer: Observer, count: int) -> float:
    """Seconds per task of ``observer``'s hooks (``started`` and its outcome), best of 5."""
    message = ON.args.model_validate({"x": 1}).model_dump_json().encode()
    delivery = Delivery(
        Message(message, type=ON.name, headers={"taskell-submitted-ms": 0}), 1, False, ON.queue
    )
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(count):
            observer.started(delivery, ON.name)(RESULT)
        best = min(best, (time.perf_counter() - started) / count)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, smaller counts")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--count", type=int, default=None, help="tasks per batch (default 3000)")
    parser.add_argument("--sequential", type=int, default=None, help="sequential calls (default 500)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    a = parser.parse_args()
    repeat = a.repeat or (2 if a.quick else 5)
    count = a.count or (500 if a.quick else 3000)
    calls = a.sequential or (100 if a.quick else 500)
    port = free_port()
    samples: list[dict[str, Any]] = []
    with taskell.connect(URL) as conn:
        on = start_worker(
            conn,
            "bench.metrics_worker:handlers",
            env={"TASKELL_QUEUES": ON.queue, "TASKELL_METRICS_PORT": str(port)},
        )
        off = start_worker(conn, "bench.metrics_worker:handlers", env={"TASKELL_QUEUES": OFF.queue})
        try:
            ran = 0
            pids = {ON.name: on.pid, OFF.name: off.pid}
            for spec in (OFF, ON):  # warm up both
                batch(conn, spec, min(300, count), pids[spec.name])
            ran += min(300, count)
            for _ in range(repeat):
                order = [OFF, ON]
                random.shuffle(order)
                sample: dict[str, Any] = {"order": [s.name for s in order]}
                for spec in order:
                    key = "on" if spec is ON else "off"
                    sample[key] = {
                        **batch(conn, spec, count, pids[spec.name]),
                        **sequential(conn, spec, calls),
                    }
                ran += count + calls
                sample["rate_ratio"] = round(sample["on"]["rate"] / sample["off"]["rate"], 3)
                sample["p50_ratio"] = round(sample["on"]["p50_ms"] / sample["off"]["p50_ms"], 3)
                sample["cpu_ratio"] = round(sample["off"]["cpu_us"] / sample["on"]["cpu_us"], 3)
                samples.append(sample)
                print(json.dumps(sample), flush=True)
            scraped = counted(port)
            if scraped != {"result": ran}:
                raise AssertionError(f"the metrics worker counted {scraped}, ran {ran}")
        finally:
            stop_worker(on)
            stop_worker(off)
    hook_on = hook_seconds(Metrics([ON.name]), 100_000)
    hook_off = hook_seconds(Observer(), 100_000)
    round_trip = 1 / statistics.median(s["off"]["rate"] for s in samples)  # seconds per task, off
    result = {
        "benchmark": "bench_metrics",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "taskell": taskell.__version__,
        "count": count,
        "sequential": calls,
        "scraped_results": scraped["result"],
        "samples": samples,
        "median_rate_ratio": statistics.median(s["rate_ratio"] for s in samples),
        "median_p50_ratio": statistics.median(s["p50_ratio"] for s in samples),
        "median_cpu_ratio": statistics.median(s["cpu_ratio"] for s in samples),
        "worker_cpu_us_per_task": {
            key: statistics.median(s[key]["cpu_us"] for s in samples) for key in ("off", "on")
        },
        "hook_us_on": round(hook_on * 1e6, 3),
        "hook_us_off": round(hook_off * 1e6, 3),
        "hook_ratio": round(round_trip / (round_trip + hook_on - hook_off), 4),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if a.out:
        with open(a.out, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
