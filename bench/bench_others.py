"""Celery and Dramatiq on the same broker, against the raw-pika baseline of bench_throughput
(issue 7). Optional: a framework that is not installed is skipped (``pip install -e
'.[bench-others]'``, or ``scripts/bench-others`` which also starts a Redis).

    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench \\
        .venv/bin/python -m bench.bench_others [--quick]

Each framework runs a no-op ``add(a, b) -> a + b`` in a worker subprocess
(``bench/others_celery_app.py``: threads pool, ``rpc://`` results;
``bench/others_dramatiq_app.py``: RabbitmqBroker, Results middleware on Redis at ``REDIS_URL``,
default ``redis://127.0.0.1:6379/0``); the baseline is ``bench.raw_pika serve`` (one thread) with
``RawClient``. Every worker gets taskell's default prefetch per thread
(``taskell.config.PREFETCH_PER_SLOT``), like bench_throughput's raw servers; the single-threaded
raw server's "4 threads" is just its prefetch of 4 x that. Figures, each the median of 3 runs
(``--quick``: 1 run), one framework at a time:

1. round trip: submit N tasks, then collect every result (N = 5,000, ``--quick``: 1,000),
   1 thread and 4 threads;
2. drain: N fire-and-forget tasks, from the first publish until the worker ran the last: N-1
   without a result, then one whose result (Celery, raw) or marker file (Dramatiq: the ``mark``
   actor, so no results backend is needed) ends the clock; 1 and 4 threads;
3. sequential latency p50/p99 over 1,000 calls (``--quick``: 300), 1 thread.

Without a Redis answering at ``REDIS_URL`` Dramatiq has no results backend: only its drain is
measured. Ratios are to raw pika in the same run: tasks/s framework / raw (below 1 is slower),
latency p50 framework / raw (above 1 is slower). Results go to ``bench/results/others-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]

from bench._common import ROOT, URL, latencies, start_raw_server
from bench.raw_pika import RawClient
from taskell.config import PREFETCH_PER_SLOT

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RAW_QUEUE = "bench.raw.others"
CELERY_QUEUE = "bench.others.celery"  # as in bench/others_celery_app.py
DRAMATIQ_QUEUE = "bench.others.dramatiq"  # as in bench/others_dramatiq_app.py
QUEUES = (RAW_QUEUE, CELERY_QUEUE, DRAMATIQ_QUEUE, DRAMATIQ_QUEUE + ".DQ", DRAMATIQ_QUEUE + ".XQ")
INSTALL = "install the extra: .venv/bin/pip install -e '.[bench-others]' (or run scripts/bench-others)"
TIMEOUT = 120.0  # upper bound of any single measurement
START_TIMEOUT = 60.0  # a worker must answer within this
WARM_UP = 200


# Processes


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a worker in its own session (so a SIGKILL reaches its children too), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TASKELL_URL": URL, "PYTHONPATH": str(ROOT), **(env or {})},
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM by PID; after 10 s SIGKILL to its process group (before reaping, so the group is
    still ours); always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
            return
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join("    " + line for line in text[-lines:])


# The three sides: start(threads) / stop(), and the operations that are timed.


class Side:
    name = ""
    results = True  # round trip and latency need results
    process: subprocess.Popen[bytes] | None = None

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = tmp / f"{self.name.replace(' ', '-')}.log"

    def start(self, threads: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} worker exited with {self.process.returncode}")

    def round_trip(self, count: int) -> None:
        raise NotImplementedError

    def drain(self, count: int) -> None:
        raise NotImplementedError

    def call(self, i: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Raw(Side):
    name = "raw pika"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.client = RawClient(URL, RAW_QUEUE)

    def start(self, threads: int) -> None:
        self.process = start_raw_server(RAW_QUEUE, PREFETCH_PER_SLOT * threads)

    def round_trip(self, count: int) -> None:
        self.client.replies.clear()
        ids = [self.client.publish(json.dumps({"x": i}).encode()) for i in range(count)]
        self.client.wait(count, TIMEOUT)
        if any(json.loads(self.client.replies[cid]) != i * i for i, cid in enumerate(ids)):
            raise AssertionError("wrong raw result")
        self.client.replies.clear()

    def drain(self, count: int) -> None:
        self.client.replies.clear()
        for i in range(count - 1):
            self.client.publish(json.dumps({"x": i}).encode(), reply=False)
        self.client.publish(json.dumps({"x": count}).encode())
        self.client.wait(1, TIMEOUT)
        self.client.replies.clear()

    def call(self, i: int) -> None:
        if json.loads(self.client.call(json.dumps({"x": i}).encode())) != i * i:
            raise AssertionError("wrong raw result")

    def close(self) -> None:
        self.client.close()


class CelerySide(Side):
    name = "celery"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        from celery.exceptions import TimeoutError as CeleryTimeout

        from bench import others_celery_app

        self.app = others_celery_app.app
        self.task = others_celery_app.add_task
        self.timeout_error: type[BaseException] = CeleryTimeout

    def start(self, threads: int) -> None:
        self.process = spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.others_celery_app",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                str(threads),
                "--prefetch-multiplier",
                str(PREFETCH_PER_SLOT),
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
                "-n",
                f"bench-others-{os.getpid()}@%h",
            ],
            self.log,
        )
        result = self.task.delay(1, 2)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            self.alive()
            try:
                if result.get(timeout=1) == 3:
                    return
            except self.timeout_error:
                continue
        raise RuntimeError(f"celery worker did not answer within {START_TIMEOUT:.0f} s")

    def round_trip(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        results = [self.task.delay(i, i) for i in range(count)]
        for i, result in enumerate(results):
            if result.get(timeout=max(0.01, deadline - time.monotonic())) != i + i:
                raise AssertionError("wrong celery result")

    def drain(self, count: int) -> None:
        for i in range(count - 1):
            self.task.apply_async((i, i), ignore_result=True)
        self.task.delay(count, count).get(timeout=TIMEOUT)

    def call(self, i: int) -> None:
        if self.task.delay(i, i).get(timeout=10) != i + i:
            raise AssertionError("wrong celery result")

    def close(self) -> None:
        self.app.close()


class DramatiqSide(Side):
    name = "dramatiq"

    def __init__(self, tmp: Path, results: bool) -> None:
        super().__init__(tmp)
        self.results = results
        self.env = {"BENCH_OTHERS_DRAMATIQ_RESULTS": "1" if results else "0", "REDIS_URL": REDIS_URL}
        os.environ.update(self.env)  # read when the app module is imported, here and in the worker
        from bench import others_dramatiq_app

        self.app = others_dramatiq_app
        self.marks = 0

    def start(self, threads: int) -> None:
        self.process = spawn(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "bench.others_dramatiq_app",
                "--processes",
                "1",
                "--threads",
                str(threads),
            ],
            self.log,
            {**self.env, "dramatiq_queue_prefetch": str(PREFETCH_PER_SLOT * threads)},
        )
        self.wait_mark(START_TIMEOUT)

    def wait_mark(self, timeout: float) -> None:
        """Send ``mark`` and wait until the worker has created its file."""
        self.marks += 1
        path = self.tmp / f"mark-{self.marks}"
        self.app.mark_actor.send(str(path))
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"dramatiq marker not seen within {timeout:.0f} s")
            self.alive()
            time.sleep(0.0005)

    def round_trip(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        messages = [self.app.add_actor.send(i, i) for i in range(count)]
        for i, message in enumerate(messages):
            # ms; the Redis backend rounds down to whole seconds, and 0 would not block at all
            left = max(1000, int((deadline - time.monotonic()) * 1000))
            if message.get_result(block=True, timeout=left) != i + i:
                raise AssertionError("wrong dramatiq result")

    def drain(self, count: int) -> None:
        for i in range(count - 1):
            self.app.discard_actor.send(i, i)
        self.wait_mark(TIMEOUT)

    def call(self, i: int) -> None:
        if self.app.add_actor.send(i, i).get_result(block=True, timeout=10_000) != i + i:
            raise AssertionError("wrong dramatiq result")

    def close(self) -> None:
        self.app.broker.close()


# Measurements


class Admin:
    """A plain pika connection to empty this benchmark's queues between runs."""

    def __init__(self) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(URL))
        version = (self.conn._impl.server_properties or {}).get("version", "?")
        self.version = version.decode() if isinstance(version, bytes) else str(version)

    def purge(self) -> None:
        for queue in QUEUES:
            channel = self.conn.channel()
            try:
                channel.queue_declare(queue, passive=True)
                channel.queue_purge(queue)
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:  # no such queue (yet)
                pass

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


def timed(run: Callable[[int], None], count: int) -> dict[str, Any]:
    started = time.perf_counter()
    run(count)
    seconds = time.perf_counter() - started
    return {"count": count, "seconds": round(seconds, 4), "rate": round(count / seconds, 1)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rate", "seconds") if "rate" in runs[0] else ("p50_ms", "p99_ms")
    return {
        "count": runs[0]["count"],
        **{k: round(statistics.median(r[k] for r in runs), 3) for k in keys},
        "runs": runs,
    }


def measure_side(side: Side, admin: Admin, a: argparse.Namespace, figures: dict[str, dict[str, Any]]) -> None:
    """Every figure of one side: per thread count one worker, a warm-up, then ``a.runs`` runs each."""
    for threads in (1, 4):
        unit = "thread" if threads == 1 else "threads"
        plan: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if side.results:
            plan.append((f"round trip, {threads} {unit}", lambda: timed(side.round_trip, a.tasks)))
        plan.append((f"drain, {threads} {unit}", lambda: timed(side.drain, a.tasks)))
        if side.results and threads == 1:
            plan.append(("latency, 1 thread", lambda: latencies(side.call, a.calls)))
        admin.purge()
        side.start(threads)
        try:
            side.drain(WARM_UP)
            for label, run in plan:
                runs = []
                for _ in range(a.runs):
                    admin.purge()
                    runs.append(run())
                figures.setdefault(label, {})[side.name] = summary(runs)
                print(f"  {side.name:<9} {label:<24} {value(figures[label][side.name])}", flush=True)
        finally:
            side.stop()


def value(entry: dict[str, Any]) -> str:
    if "rate" in entry:
        return f"{entry['rate']:>8.0f} tasks/s"
    return f"p50 {entry['p50_ms']:.3f} ms, p99 {entry['p99_ms']:.3f} ms"


def table(figures: dict[str, dict[str, Any]]) -> None:
    print("\nsummary (medians; vs raw pika in this run: tasks/s ratio, or latency p50 ratio):")
    print(f"  {'framework':<10} {'figure':<24} {'value':<34} {'vs raw pika':>11}")
    for label, sides in figures.items():
        raw = sides.get(Raw.name)
        for name, entry in sides.items():
            ratio = ""
            if raw is not None:
                r = entry["rate"] / raw["rate"] if "rate" in entry else entry["p50_ms"] / raw["p50_ms"]
                entry["ratio_to_raw"] = round(r, 3)
                ratio = f"{r:.2f}x"
            print(f"  {name:<10} {label:<24} {value(entry):<34} {ratio:>11}")


def redis_answers() -> str | None:
    """None when a Redis answers at REDIS_URL, else why not."""
    if importlib.util.find_spec("redis") is None:
        return "the redis package is not installed"
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:
        return f"no Redis answers at {REDIS_URL} ({exc})"
    return None


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("pika", "celery", "kombu", "dramatiq", "redis"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="Celery and Dramatiq against raw pika on the same broker")
    parser.add_argument("--quick", action="store_true", help="1 run each, 1,000 tasks, 300 calls")
    a = parser.parse_args()
    a.runs = 1 if a.quick else 3
    a.tasks = 1000 if a.quick else 5000
    a.calls = 300 if a.quick else 1000
    parsed = urllib.parse.urlsplit(URL)
    shown_url = URL.replace(f":{parsed.password}@", ":***@") if parsed.password else URL
    print(f"broker {shown_url}; {a.tasks} tasks, {a.calls} calls, {a.runs} run(s) each", flush=True)

    skipped: dict[str, str] = {}
    errors: dict[str, str] = {}
    figures: dict[str, dict[str, Any]] = {}
    admin = Admin()
    with tempfile.TemporaryDirectory(prefix="bench-others-") as tmpdir:
        tmp = Path(tmpdir)
        makers: list[tuple[str, Callable[[], Side]]] = [("raw pika", lambda: Raw(tmp))]
        if importlib.util.find_spec("celery") is None:
            skipped["celery"] = f"not installed; {INSTALL}"
        else:
            makers.append(("celery", lambda: CelerySide(tmp)))
        if importlib.util.find_spec("dramatiq") is None:
            skipped["dramatiq"] = f"not installed; {INSTALL}"
        else:
            why = redis_answers()
            if why is not None:
                skipped["dramatiq round trip and latency"] = f"{why}: no results backend, drain only"
            makers.append(("dramatiq", lambda: DramatiqSide(tmp, results=why is None)))
        for name, reason in skipped.items():
            print(f"{name}: skipped, {reason}", flush=True)
        for name, make in makers:
            side: Side | None = None
            try:
                side = make()
                measure_side(side, admin, a, figures)
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                print(f"{name}: FAILED: {errors[name]}", flush=True)
                if side is not None and side.log.exists():
                    print(tail(side.log), flush=True)
            finally:
                if side is not None:
                    side.stop()
                    side.close()
        admin.purge()
    table(figures)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = ROOT / "bench" / "results" / f"others-{stamp}{'-quick' if a.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "when": stamp,
                "quick": a.quick,
                "broker_url": shown_url,
                "rabbitmq": admin.version,
                "redis_url": REDIS_URL,
                "versions": versions(),
                "tasks": a.tasks,
                "calls": a.calls,
                "runs": a.runs,
                "prefetch_per_thread": PREFETCH_PER_SLOT,
                "skipped": skipped,
                "errors": errors,
                "figures": figures,
            },
            indent=2,
        )
    )
    admin.close()
    print(f"\nsaved {out.relative_to(ROOT)}")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
