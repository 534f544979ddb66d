"""Schedules benchmark (issue 14), against RabbitMQ (TASKELL_URL, default 127.0.0.1): how late
``taskell scheduler`` fires, and how long a failover takes. Prints one JSON object.

Two schedulers run ``tests.integration.sched_tick`` (``every: 1s``); a raw consumer of the task
queue records when each submission arrives. Lateness = arrival - due time, over N fires (100;
``--quick``: 20): p50 / p99 / max. Baseline, at the same time: a plain pika publisher that
sleeps until each half second between the scheduler's due times and publishes one persistent,
confirmed message to the same queue (the machine's own timer and publish latency); the
ratios are the scheduler's lateness over the baseline's. Then the leader is SIGKILLed half-way between two due times,
K times (3; ``--quick``: 1), a fresh standby started after each: the takeover time (kill to
the survivor's "is leading" log line: the broker made it the active consumer and handed it the
state), the time until it is ready to fire (kill to its "took over" line: it stored the state
again and read every copy of a submission behind it) and the lateness of the first due time
after the kill.
Every wait is bounded. ``--out FILE`` also writes the result as a reference file: with the
commit, date, machine and load average, and every sample (each fire's and each baseline
message's lateness).

    .venv/bin/python -m bench.bench_schedules [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import pika  # type: ignore[import-untyped]

from bench._common import ROOT, URL, percentile, run_info, save
from taskell import _wire
from taskell.scheduler import DUE_HEADER, SCHEDULE_HEADER, STATE_QUEUE

TASK_QUEUE = "taskell.q1"


class Arrivals:
    """A consumer thread of the task queue: (due time, arrival time) of every submission, and
    of every baseline message apart."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []
        self.baseline: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        channel = connection.channel()
        channel.queue_declare(TASK_QUEUE, durable=True, arguments={"x-queue-type": "classic"})
        channel.queue_purge(TASK_QUEUE)
        for method, props, _body in channel.consume(TASK_QUEUE, auto_ack=True, inactivity_timeout=0.1):
            if self._stop.is_set():
                break
            if method is not None:
                headers = props.headers or {}
                due = datetime.fromisoformat(headers[DUE_HEADER]).timestamp()
                seen = self.baseline if headers.get(SCHEDULE_HEADER) == "baseline" else self.seen
                seen.append((due, time.time()))
        connection.close()

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(self.seen)} of {count} fires within {timeout} s")
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def baseline(count: int, stop: threading.Event) -> None:
    """Publish ``count`` messages, each at a half second (due), the plain way."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.confirm_delivery()
    for _ in range(count):
        due = int(time.time()) + 1.5
        if stop.wait(due - time.time()):
            break
        iso = _wire.utc_iso(datetime.fromtimestamp(due).astimezone())
        props = pika.BasicProperties(delivery_mode=2, headers={SCHEDULE_HEADER: "baseline", DUE_HEADER: iso})
        channel.basic_publish("", TASK_QUEUE, b"{}", props, mandatory=True)
    connection.close()


def spawn(log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "taskell", "scheduler", "tests.integration.sched_tick"],
            cwd=ROOT,
            env={**os.environ, "TASKELL_URL": URL, "PYTHONPATH": str(ROOT)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def leading_since(log: Path, words: str = " is leading ") -> float | None:
    """When the scheduler logging to ``log`` took the lead (its latest "is leading" line, or
    the latest line with ``words``)."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if words in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5) * 1000, 1),
        "p99_ms": round(percentile(values, 0.99) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20 fires, 1 failover (a smoke test)")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the result, with its samples, here"
    )
    args = parser.parse_args()
    fires, kills = (20, 1) if args.quick else (100, 3)
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    connection.channel().queue_delete(STATE_QUEUE)
    connection.close()
    result: dict[str, Any] = {"benchmark": "schedules", **run_info(), "fires": fires}
    with TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"scheduler-{i}.log" for i in range(2 + kills)]
        procs = {logs[0]: spawn(logs[0]), logs[1]: spawn(logs[1])}
        arrivals = Arrivals()
        try:
            arrivals.wait_for(3, 60)  # warm up: the first fires set the state up
            start = len(arrivals.seen)
            stop = threading.Event()
            plain = threading.Thread(target=baseline, args=(fires, stop), daemon=True)
            plain.start()
            arrivals.wait_for(start + fires, fires + 30)
            stop.set()
            plain.join(10)
            lateness = [arrived - due for due, arrived in arrivals.seen[start : start + fires]]
            base = [arrived - due for due, arrived in arrivals.baseline]
            result["lateness"] = summary(lateness)
            result["baseline_lateness"] = summary(base)
            result["samples"] = {
                "lateness_ms": [round(t * 1000, 2) for t in lateness],
                "baseline_lateness_ms": [round(t * 1000, 2) for t in base],
            }
            result["ratio"] = {
                k: round(result["lateness"][k] / result["baseline_lateness"][k], 2)
                for k in ("p50_ms", "p99_ms")
            }
            takeovers, ready, after_kill = [], [], []
            for k in range(kills):
                leader = max(procs, key=lambda log: leading_since(log) or 0.0)
                now = time.time()
                time.sleep((int(now) + 1.5) - now)  # half-way between two due times
                os.kill(procs[leader].pid, signal.SIGKILL)
                killed = time.time()
                procs.pop(leader).wait(10)
                before = len(arrivals.seen)
                arrivals.wait_for(before + 3, 30)
                first = min((d, a) for d, a in arrivals.seen[before:] if d > killed)
                after_kill.append(first[1] - first[0])
                survivor = next(iter(procs))
                deadline = time.monotonic() + 10
                while (leading_since(survivor, " took over") or 0.0) < killed and time.monotonic() < deadline:
                    time.sleep(0.1)
                takeovers.append((leading_since(survivor) or float("nan")) - killed)
                ready.append((leading_since(survivor, " took over") or float("nan")) - killed)
                fresh = logs[2 + k]
                procs[fresh] = spawn(fresh)
                time.sleep(2)
            result["failover"] = {
                "kills": kills,
                "takeover_s": [round(t, 3) for t in takeovers],
                "ready_s": [round(t, 3) for t in ready],
                "first_fire_lateness_ms": [round(t * 1000, 1) for t in after_kill],
            }
            dues = [d for d, _ in arrivals.seen]
            result["duplicates"] = len(dues) - len(set(dues))
        finally:
            arrivals.stop()
            for proc in procs.values():
                proc.terminate()
                proc.wait(15)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}))
    save(args.out, result)


if __name__ == "__main__":
    main()
