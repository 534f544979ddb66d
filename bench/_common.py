"""Helpers shared by the benchmarks: worker subprocesses and process statistics."""

from __future__ import annotations

import json
import os
import platform
import select
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import taskell

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("TASKELL_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def start_worker(
    conn: taskell.Connection, target: str, *, parallelism: int = 1, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``taskell worker TARGET`` and wait until it answers ``inspect``."""
    before = {a["worker"] for a in conn.inspect(wait=0.3)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskell",
            "worker",
            target,
            "--parallelism",
            str(parallelism),
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        env={**os.environ, "TASKELL_URL": URL, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if {a["worker"] for a in conn.inspect(wait=0.3)} - before:
            return process
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}")
    process.kill()
    raise RuntimeError("worker did not come up within 30 s")


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker or raw server (graceful) and reap it; SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def broker_pid() -> int | None:
    """PID of the local RabbitMQ node (``beam.smp``) when the broker runs on this machine, to
    count its CPU time too: it shares the cores with the client and the workers."""
    pidfile = Path("/tmp/taskell-rabbitmq.pid")
    if pidfile.exists():
        text = pidfile.read_text().strip()
        if text.isdigit() and Path(f"/proc/{text}").exists():
            return int(text)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "beam.smp":
                    return int(entry.name)
            except OSError:
                continue
    return None


def proc_status(pid: int) -> dict[str, int]:
    """RSS (KiB) and thread count of process ``pid`` from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "Threads"):
            fields[key] = int(value.split()[0])
    return fields


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values`` (inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


def latencies(call: Callable[[int], None], count: int) -> dict[str, Any]:
    """p50 / p99 in ms of ``count`` sequential ``call(i)``."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - started)
    return {
        "count": count,
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p99_ms": round(percentile(times, 0.99) * 1000, 3),
    }


def start_raw_server(queue: str, prefetch: int, *, confirmed: bool = False) -> subprocess.Popen[bytes]:
    """Start a pika baseline ``bench.raw_pika serve`` on ``queue`` (in a session of its own;
    ``confirmed``: "pika, same guarantees", else naive pika) and wait for its ``ready`` line
    (30 s at most)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.raw_pika",
            "serve",
            "--url",
            URL,
            "--queue",
            queue,
            "--prefetch",
            str(prefetch),
            *(["--confirmed"] if confirmed else []),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    if not ready or process.stdout.readline().strip() != b"ready":
        process.kill()
        process.wait()
        raise RuntimeError("raw pika server did not come up within 30 s")
    return process


def git_commit() -> dict[str, Any]:
    """The commit the benchmark runs (full hash) and whether the tree had uncommitted changes."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model and count, memory, kernel, load average."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?"
    )
    meminfo = Path("/proc/meminfo").read_text().split() if Path("/proc/meminfo").exists() else []
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "mem_total_kib": int(meminfo[1]) if len(meminfo) > 1 else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


def run_info() -> dict[str, Any]:
    """Date (UTC), commit and machine: what a reference file records about its run."""
    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **git_commit(), "machine": machine()}


def save(path: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` (plus the load average now) as JSON to ``path``, when given."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**result, "loadavg_end": os.getloadavg()}, indent=1) + "\n")
        print(f"saved {path}")
