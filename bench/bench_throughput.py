"""Throughput, latency, progress, payload and memory benchmark (issue 7): taskell against a
minimal raw-pika RPC (``bench/raw_pika.py``), side by side in one run on one broker.

    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench \\
        .venv/bin/python -m bench.bench_throughput [--quick] [--profile] [--skip-memory]

Figures (each the median of 3 runs, ``--quick``: 1 run and smaller counts); the taskell worker
runs ``examples.worker:handlers`` (``square`` is the no-op task), the baseline server
``bench.raw_pika serve``, naive pika (json.loads, reply, ack; no confirms, no validation; taskell
against pika with the same guarantees, Dramatiq and Celery: ``bench/bench_others.py``):

1. round trip: submit N ``square`` tasks, then collect every result; 1 worker process at
   parallelism 1 and at parallelism 4, 2 worker processes at parallelism 4 (2 raw servers);
   each raw server uses the taskell worker's default prefetch (32 x parallelism);
2. drain: N fire-and-forget tasks, from the first publish until the worker processed the last:
   N-1 ``taskell.fire(demo.square, x=i)`` (no ``reply_to``: the worker acks once the task ran),
   then one ordinary ``square`` whose result marks the end. The raw baseline does the same
   (N-1 requests without ``reply_to``, then one with);
3. sequential latency p50/p99 over 1,000 calls (parallelism 1);
4. progress: ``bench/progress_worker.py``: a loop of 1,000,000 ``ctx.progress()`` calls against
   the same loop without them, bare and with some work per iteration; the client must see the
   final value;
5. payload: round trip of ``demo.total(parts=[...])`` with ~1 KB, 100 KB and 1 MB of JSON args
   (parallelism 4), the same JSON through raw pika;
6. memory: worker RSS idle, after a warm-up, and along 100,000 tasks (``--quick``: 20,000);
7. codegen has its own benchmark: ``bench/bench_codegen.py``.

``--profile`` adds a cProfile of an in-process run (client and worker in this process, every
thread profiled) with the top functions per side. CPU time per task of the worker / server
process and of the client process is recorded for every throughput figure. Results are saved
to ``bench/results/throughput-<time>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pika  # type: ignore[import-untyped]
import pydantic

import taskell
from bench._common import (
    ROOT,
    URL,
    broker_pid,
    git_commit,
    latencies,
    machine,
    proc_status,
    start_raw_server,
    start_worker,
    stop_worker,
)
from bench.raw_pika import RawClient
from generated.demo import Client
from taskell.config import PREFETCH_PER_SLOT

RAW_QUEUE = "bench.raw"
TASKELL_QUEUES = ("taskell.q1", "taskell.q2", "taskell.default")
WORKER_TARGET = "examples.worker:handlers"
PROGRESS_TARGET = "bench.progress_worker:handlers"
TIMEOUT = 120.0  # upper bound of any single measurement
CLK_TCK = os.sysconf("SC_CLK_TCK")
BROKER_PID = broker_pid()  # None when the broker is not on this machine


# Processes


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes ``pids`` so far (all their threads)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


@contextlib.contextmanager
def processes(
    conn: taskell.Connection,
    *,
    workers: int,
    parallelism: int,
    raw_servers: int,
    target: str = WORKER_TARGET,
    env: dict[str, str] | None = None,
    raw_prefetch: int | None = None,
) -> Iterator[tuple[list[subprocess.Popen[bytes]], list[subprocess.Popen[bytes]]]]:
    """``workers`` taskell workers and ``raw_servers`` raw servers, stopped (by PID) on exit."""
    started_workers: list[subprocess.Popen[bytes]] = []
    started_raw: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(workers):
            started_workers.append(start_worker(conn, target, parallelism=parallelism, env=env))
        for _ in range(raw_servers):
            # The same window as the taskell worker's default prefetch: a like-for-like baseline.
            started_raw.append(start_raw_server(RAW_QUEUE, raw_prefetch or PREFETCH_PER_SLOT * parallelism))
        yield started_workers, started_raw
    finally:
        for process in started_workers:
            stop_worker(process)
        for process in started_raw:
            stop_worker(process)


class Admin:
    """A plain pika connection to empty the benchmark's queues between measurements."""

    def __init__(self) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(URL))
        version = (self.conn._impl.server_properties or {}).get("version", "?")
        self.version = version.decode() if isinstance(version, bytes) else str(version)

    def purge(self) -> int:
        """Purge the task queues that exist; returns the number of messages removed."""
        removed = 0
        for queue in (*TASKELL_QUEUES, RAW_QUEUE):
            channel = self.conn.channel()
            try:
                channel.queue_declare(queue, passive=True)
                removed += channel.queue_purge(queue).method.message_count
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:  # no such queue yet
                pass
        return removed

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


# One measurement each: returns a dict with at least "rate" (tasks/s) or latencies.


class Measure:
    """Wall time plus CPU time of the server-side processes and of this (client) process."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def __enter__(self) -> Measure:
        self.cpu_broker = cpu_seconds([BROKER_PID]) if BROKER_PID else 0.0
        self.cpu_server = cpu_seconds(self.pids)
        self.cpu_client = time.process_time()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.started
        self.cpu_server = cpu_seconds(self.pids) - self.cpu_server
        self.cpu_client = time.process_time() - self.cpu_client
        self.cpu_broker = (cpu_seconds([BROKER_PID]) if BROKER_PID else 0.0) - self.cpu_broker

    def result(self, count: int, **extra: Any) -> dict[str, Any]:
        return {
            "count": count,
            "seconds": round(self.wall, 4),
            "rate": round(count / self.wall, 1),
            "server_cpu_us_per_task": round(self.cpu_server / count * 1e6, 1),
            "client_cpu_us_per_task": round(self.cpu_client / count * 1e6, 1),
            **({"broker_cpu_us_per_task": round(self.cpu_broker / count * 1e6, 1)} if BROKER_PID else {}),
            # Share of all the machine's cores used by the processes measured (workers, client,
            # broker): near 100%, the machine is the bottleneck, not any one process.
            "cpu_use_pct": round(
                100
                * (self.cpu_server + self.cpu_client + self.cpu_broker)
                / self.wall
                / (os.cpu_count() or 1),
                1,
            ),
            **extra,
        }


def taskell_round_trip(demo: Client, count: int, pids: list[int]) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    with Measure(pids) as m:
        handles = [demo.square(x=i) for i in range(count)]
        submitted = time.perf_counter() - m.started
        for i, handle in enumerate(handles):
            if handle.result(timeout=max(0.001, deadline - time.monotonic())) != i * i:
                raise AssertionError("wrong result")
    return m.result(count, submit_rate=round(count / submitted, 1))


def raw_round_trip(
    raw: RawClient,
    count: int,
    pids: list[int],
    body: Callable[[int], bytes] | None = None,
    check: Callable[[int, Any], bool] | None = None,
) -> dict[str, Any]:
    encode = body or (lambda i: json.dumps({"x": i}).encode())
    verify = check or (lambda i, value: bool(value == i * i))
    raw.replies.clear()
    with Measure(pids) as m:
        ids = [raw.publish(encode(i)) for i in range(count)]
        submitted = time.perf_counter() - m.started
        raw.wait(count, TIMEOUT)
        for i, cid in enumerate(ids):
            if not verify(i, json.loads(raw.replies[cid])):
                raise AssertionError("wrong raw result")
    raw.replies.clear()
    return m.result(count, submit_rate=round(count / submitted, 1))


def taskell_drain_no_reply(
    conn: taskell.Connection, demo: Client, count: int, pids: list[int]
) -> dict[str, Any]:
    # taskell.fire: no reply_to, the worker acks once it ran; one ordinary call marks the end.
    with Measure(pids) as m:
        for i in range(count - 1):
            taskell.fire(demo.square, x=i)
        last = demo.square(x=count)
        last.result(timeout=TIMEOUT)
    conn.flush(10)  # every one was confirmed
    return m.result(count)


def raw_drain(raw: RawClient, count: int, pids: list[int]) -> dict[str, Any]:
    raw.replies.clear()
    with Measure(pids) as m:
        for i in range(count - 1):
            raw.publish(json.dumps({"x": i}).encode(), reply=False)
        raw.publish(json.dumps({"x": count}).encode())
        raw.wait(1, TIMEOUT)
    raw.replies.clear()
    return m.result(count)


def taskell_call(demo: Client) -> Callable[[int], None]:
    def call(i: int) -> None:
        if demo.square(x=i).result(timeout=10) != i * i:
            raise AssertionError("wrong result")

    return call


def raw_call(raw: RawClient) -> Callable[[int], None]:
    def call(i: int) -> None:
        if json.loads(raw.call(json.dumps({"x": i}).encode())) != i * i:
            raise AssertionError("wrong raw result")

    return call


# Payload


def parts_for(size: int) -> list[int]:
    """A list of ints whose JSON (``{"parts":[...]}``) is about ``size`` bytes."""
    return [123456] * max(1, size // 7)


def taskell_payload(demo: Client, parts: list[int], count: int, pids: list[int]) -> dict[str, Any]:
    expected = sum(parts)
    deadline = time.monotonic() + TIMEOUT
    with Measure(pids) as m:
        handles = [demo.total(parts=parts) for _ in range(count)]
        for handle in handles:
            if handle.result(timeout=max(0.001, deadline - time.monotonic())) != expected:
                raise AssertionError("wrong total")
    return m.result(count)


def raw_payload(raw: RawClient, parts: list[int], count: int, pids: list[int]) -> dict[str, Any]:
    expected = sum(parts)
    return raw_round_trip(
        raw,
        count,
        pids,
        body=lambda i: json.dumps({"parts": parts}).encode(),
        check=lambda i, value: bool(value == expected),
    )


# Running and reporting


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(run[key] for run in runs))


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and k != "count"]
    return {"runs": runs, **{k: round(median_of(runs, k), 3) for k in keys}}


def pairwise(
    label: str,
    results: dict[str, Any],
    taskell_run: Callable[[], dict[str, Any]],
    raw_run: Callable[[], dict[str, Any]] | None,
    runs: int,
    admin: Admin,
) -> None:
    """Alternate taskell and raw runs ``runs`` times; store the medians under ``label``."""
    taskell_runs: list[dict[str, Any]] = []
    raw_runs: list[dict[str, Any]] = []
    for _ in range(runs):
        admin.purge()
        taskell_runs.append(taskell_run())
        if raw_run is not None:
            admin.purge()
            raw_runs.append(raw_run())
    results[label] = {"taskell": summary(taskell_runs)}
    if raw_runs:
        results[label]["raw"] = summary(raw_runs)
    show(label, results[label])


def cpu(side: dict[str, Any]) -> str:
    keys = ("server_cpu_us_per_task", "client_cpu_us_per_task", "broker_cpu_us_per_task")
    return (
        "/".join(f"{side[k]:.0f}" for k in keys if k in side) + f" ({side['cpu_use_pct']:.0f}% of all cores)"
    )


def show(label: str, entry: dict[str, Any]) -> None:
    t = entry["taskell"]
    if "rate" in t:
        text = f"  {label:<34} taskell {t['rate']:>8.0f}/s"
        if "raw" in entry:
            r = entry["raw"]
            text += f"   raw {r['rate']:>8.0f}/s   ratio {t['rate'] / r['rate']:.2f}x"
        each = ", ".join(f"{x['rate']:.0f}" for x in t["runs"])
        print(
            f"{text}   [{each}]   CPU us/task worker/client/broker: {cpu(t)}"
            + (f" (raw {cpu(entry['raw'])})" if "raw" in entry else ""),
            flush=True,
        )
    else:
        r = entry["raw"]
        print(
            f"  {label:<34} taskell p50 {t['p50_ms']:.3f} ms p99 {t['p99_ms']:.3f} ms   "
            f"raw p50 {r['p50_ms']:.3f} ms p99 {r['p99_ms']:.3f} ms   "
            f"p50 ratio {t['p50_ms'] / r['p50_ms']:.2f}x",
            flush=True,
        )


def warm_up(demo: Client, raw: RawClient | None, count: int = 300) -> None:
    for handle in [demo.square(x=i) for i in range(count)]:
        handle.result(timeout=30)
    if raw is not None:
        raw.replies.clear()
        for i in range(count):
            raw.publish(json.dumps({"x": i}).encode())
        raw.wait(count, 30)
        raw.replies.clear()


def pids_of(*groups: list[subprocess.Popen[bytes]]) -> list[int]:
    return [p.pid for group in groups for p in group]


def bench_throughput(
    conn: taskell.Connection, raw: RawClient, admin: Admin, a: argparse.Namespace, results: dict[str, Any]
) -> None:
    demo = Client(conn)
    n, runs = a.tasks, a.runs
    print(f"round trip / drain ({n} square tasks), latency ({a.calls} sequential calls):")
    with processes(conn, workers=1, parallelism=1, raw_servers=1) as (workers, servers):
        warm_up(demo, raw)
        tp, rp = pids_of(workers), pids_of(servers)
        pairwise(
            "round trip, 1 worker, parallelism 1",
            results,
            lambda: taskell_round_trip(demo, n, tp),
            lambda: raw_round_trip(raw, n, rp),
            runs,
            admin,
        )
        pairwise(
            "drain (fire and forget), parallelism 1",
            results,
            lambda: taskell_drain_no_reply(conn, demo, n, tp),
            lambda: raw_drain(raw, n, rp),
            runs,
            admin,
        )
        pairwise(
            "sequential latency, parallelism 1",
            results,
            lambda: latencies(taskell_call(demo), a.calls),
            lambda: latencies(raw_call(raw), a.calls),
            runs,
            admin,
        )
    with processes(conn, workers=1, parallelism=4, raw_servers=1) as (workers, servers):
        warm_up(demo, raw)
        tp, rp = pids_of(workers), pids_of(servers)
        pairwise(
            "round trip, 1 worker, parallelism 4",
            results,
            lambda: taskell_round_trip(demo, n, tp),
            lambda: raw_round_trip(raw, n, rp),
            runs,
            admin,
        )
        pairwise(
            "drain (fire and forget), parallelism 4",
            results,
            lambda: taskell_drain_no_reply(conn, demo, n, tp),
            lambda: raw_drain(raw, n, rp),
            runs,
            admin,
        )
        print("payload (demo.total(parts=[...]), parallelism 4):")
        for size, count in a.payloads:
            parts = parts_for(size)
            actual = len(json.dumps({"parts": parts}))
            pairwise(
                f"payload {actual / 1000:.0f} kB x {count}",
                results,
                functools.partial(taskell_payload, demo, parts, count, tp),
                functools.partial(raw_payload, raw, parts, count, rp),
                runs,
                admin,
            )
            entry = results[f"payload {actual / 1000:.0f} kB x {count}"]
            entry["bytes"] = actual
            for side in ("taskell", "raw"):
                entry[side]["MB_per_s"] = round(entry[side]["rate"] * actual / 1e6, 1)
    with processes(conn, workers=2, parallelism=4, raw_servers=2) as (workers, servers):
        warm_up(demo, raw)
        tp, rp = pids_of(workers), pids_of(servers)
        pairwise(
            "round trip, 2 workers, parallelism 4",
            results,
            lambda: taskell_round_trip(demo, n, tp),
            lambda: raw_round_trip(raw, n, rp),
            runs,
            admin,
        )
    one = results["round trip, 1 worker, parallelism 4"]["taskell"]["rate"]
    two = results["round trip, 2 workers, parallelism 4"]["taskell"]["rate"]
    results["scaling, 2 workers / 1 worker (p4)"] = round(two / one, 2)
    print(f"  2 worker processes / 1 (parallelism 4): {two / one:.2f}x")


def bench_progress(
    conn: taskell.Connection, admin: Admin, a: argparse.Namespace, results: dict[str, Any]
) -> None:
    demo = Client(conn)
    iterations = a.progress_calls
    print(f"progress ({iterations} ctx.progress() calls vs the same loop without):")
    out: dict[str, Any] = {}
    for work in (0, a.progress_work):
        with processes(
            conn,
            workers=1,
            parallelism=1,
            raw_servers=0,
            target=PROGRESS_TARGET,
            env={"BENCH_PROGRESS_WORK": str(work)},
        ):
            admin.purge()
            demo.sleep(seconds=-1000).result(timeout=30)  # warm-up
            rows = []
            for _ in range(a.runs):
                without = demo.sleep(seconds=-iterations).result(timeout=TIMEOUT)
                handle = demo.sleep(seconds=iterations)
                with_progress = handle.result(timeout=TIMEOUT)
                final = handle.latest_progress
                received = sum(1 for _ in handle.progress())
                rows.append(
                    {
                        "without_s": round(without, 4),
                        "with_s": round(with_progress, 4),
                        "ratio": round(without / with_progress, 3),
                        "overhead_ns_per_call": round((with_progress - without) / iterations * 1e9, 1),
                        "final_seen": final == float(iterations - 1),
                        "progress_messages_received": received,
                    }
                )
            entry = {
                "work_rounds_per_iteration": work,
                "calls": iterations,
                "runs": rows,
                "without_s": median_of(rows, "without_s"),
                "with_s": median_of(rows, "with_s"),
                "ratio": median_of(rows, "ratio"),
                "overhead_ns_per_call": median_of(rows, "overhead_ns_per_call"),
                "final_seen": all(r["final_seen"] for r in rows),
                "progress_messages_received": median_of(rows, "progress_messages_received"),
            }
            out[f"work={work}"] = entry
            print(
                f"  loop work {work:>3} rounds: without {entry['without_s']:.3f} s, with {entry['with_s']:.3f} s,"
                f" speed ratio {entry['ratio']:.2f} (goal >= 0.9), overhead {entry['overhead_ns_per_call']:.0f}"
                f" ns/call, final value seen: {entry['final_seen']},"
                f" progress messages received: {entry['progress_messages_received']:.0f}",
                flush=True,
            )
    results["progress"] = out


def bench_memory(
    conn: taskell.Connection, admin: Admin, a: argparse.Namespace, results: dict[str, Any]
) -> None:
    demo = Client(conn)
    total, chunk = a.memory_tasks, 5000
    print(f"memory (worker, parallelism 4, {total} square tasks):")
    with processes(conn, workers=1, parallelism=4, raw_servers=0) as (workers, _):
        admin.purge()
        pid = workers[0].pid
        time.sleep(1)  # idle RSS: after a second of rest
        idle = proc_status(pid)["VmRSS"]
        warm_up(demo, None, 1000)
        warm = proc_status(pid)["VmRSS"]
        series = []
        done = 0
        while done < total:
            step = min(chunk, total - done)
            deadline = time.monotonic() + TIMEOUT
            for handle in [demo.square(x=i) for i in range(step)]:
                handle.result(timeout=max(0.001, deadline - time.monotonic()))
            done += step
            series.append((done, proc_status(pid)["VmRSS"]))
        time.sleep(1)  # the final RSS, after a second of rest as for the idle one
        after = proc_status(pid)
    results["memory"] = {
        "tasks": total,
        "rss_idle_kib": idle,
        "rss_after_1000_kib": warm,
        "rss_after_kib": after["VmRSS"],
        "threads_after": after["Threads"],
        "series": series,
    }
    print(
        f"  RSS idle {idle} KiB, after 1,000 tasks {warm} KiB, after {total:,} tasks {after['VmRSS']} KiB"
        f" (+{after['VmRSS'] - warm} KiB since warm-up), threads {after['Threads']}"
    )
    print("  RSS along the run (tasks: KiB): " + ", ".join(f"{d // 1000}k: {r}" for d, r in series))


# Profile


def bench_profile(a: argparse.Namespace, results: dict[str, Any]) -> None:
    """cProfile of client and worker in this process, every thread profiled on its own with its
    own CPU clock (``time.thread_time``): time blocked on the GIL, a lock or the socket is not
    counted, so the figures are CPU time per task."""
    from examples.worker import handlers

    profiles: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()

    def hook(frame: FrameType, event: str, arg: object) -> None:
        profile = cProfile.Profile(time.thread_time)
        with lock:
            profiles.append((threading.current_thread().name, profile))
        profile.enable()  # replaces this hook for the thread

    count = a.profile_tasks
    per_task = count + WARM_UP  # thread profiles cover the warm-up too
    config = taskell.Config.from_url(URL)
    threading.setprofile(hook)
    main_profile = cProfile.Profile(time.thread_time)
    try:
        with taskell.Worker(handlers, config, parallelism=4), taskell.connect(URL) as conn:
            demo = Client(conn)
            main_profile.enable()  # the warm-up is profiled too, as on the other threads
            warm_up(demo, None, WARM_UP)
            started = time.perf_counter()
            handles = [demo.square(x=i) for i in range(count)]
            for handle in handles:
                handle.result(timeout=TIMEOUT)
            wall = time.perf_counter() - started
            main_profile.disable()
    finally:
        threading.setprofile(None)
    print(
        f"profile: {count} square round trips in one process (parallelism 4), {count / wall:.0f}/s under cProfile"
        " (CPU time per thread)"
    )
    client = pstats.Stats(main_profile)
    worker: pstats.Stats | None = None
    for name, profile in profiles:
        if name.startswith("taskell-client"):
            client.add(profile)
        elif name.startswith(("taskell-worker", "taskell-task", "taskell-control")):
            worker = pstats.Stats(profile) if worker is None else worker.add(profile)
    out: dict[str, Any] = {"tasks": count, "wall_s": round(wall, 3)}
    for side, stats in (("client (main + I/O thread)", client), ("worker (I/O + pool threads)", worker)):
        if stats is None:
            continue
        top = top_functions(stats, per_task, a.profile_top)
        by_package = package_split(stats, per_task)
        out[side] = {"top": top, "by_package_us_per_task": by_package}
        print(
            f"  {side}: own time per task by package: "
            + ", ".join(f"{k} {v:.1f} us" for k, v in by_package.items())
        )
        for row in top:
            print(
                f"    {row['tottime_us_per_task']:7.1f} us/task own, {row['cumtime_us_per_task']:7.1f} cum"
                f"  {row['calls_per_task']:5.1f} calls/task  {row['function']}"
            )
    results["profile"] = out


WARM_UP = 200
WAITING = ("method 'acquire'", "method 'poll'", "select.", "method 'wait'", "epoll", "SimpleQueue")


def where(func: tuple[str, int, str]) -> str:
    filename, line, name = func
    for marker in ("site-packages/", f"{ROOT}/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return f"{filename}:{line}:{name}"


def top_functions(stats: pstats.Stats, count: int, limit: int) -> list[dict[str, Any]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)
    skip = WAITING
    out = []
    for func, (_cc, nc, tt, ct, _callers) in rows:
        text = where(func)
        if any(s in text for s in skip):  # idle waiting, not work
            continue
        out.append(
            {
                "function": text,
                "tottime_us_per_task": round(tt / count * 1e6, 2),
                "cumtime_us_per_task": round(ct / count * 1e6, 2),
                "calls_per_task": round(nc / count, 2),
            }
        )
        if len(out) >= limit:
            break
    return out


def package_split(stats: pstats.Stats, count: int) -> dict[str, float]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    split: dict[str, float] = {}
    for (filename, _, name), (_, _, tt, _, _) in raw.items():
        text = where((filename, 0, name))
        if any(s in text for s in WAITING):
            key = "waiting"
        elif text.startswith(("taskell/", "generated/")):
            key = "taskell"
        elif text.startswith("pika/"):
            key = "pika"
        elif text.startswith(("pydantic", "pydantic_core")) or "pydantic" in name:
            key = "pydantic"
        else:
            key = "stdlib/builtins"
        split[key] = split.get(key, 0.0) + tt
    return {k: round(v / count * 1e6, 1) for k, v in sorted(split.items(), key=lambda kv: -kv[1])}


# Main


def ratio_table(results: dict[str, Any]) -> None:
    print("\nsummary (medians; ratio = taskell / raw pika in the same run; for latency, p50 taskell / raw):")
    print(f"  {'figure':<38} {'taskell':>12} {'raw pika':>12} {'ratio':>7}")
    for label, entry in results.items():
        if not isinstance(entry, dict) or "taskell" not in entry or "raw" not in entry:
            continue
        t, r = entry["taskell"], entry["raw"]
        if "rate" in t:
            print(f"  {label:<38} {t['rate']:>10.0f}/s {r['rate']:>10.0f}/s {t['rate'] / r['rate']:>6.2f}x")
            entry["ratio"] = round(t["rate"] / r["rate"], 3)
        else:
            print(
                f"  {label:<38} {t['p50_ms']:>7.3f}/{t['p99_ms']:.2f} {r['p50_ms']:>7.3f}/{r['p99_ms']:.2f}"
                f" {t['p50_ms'] / r['p50_ms']:>6.2f}x"
            )
            entry["ratio"] = round(t["p50_ms"] / r["p50_ms"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description="taskell vs raw pika: throughput, latency, progress, memory")
    parser.add_argument("--quick", action="store_true", help="1 run each, smaller counts")
    parser.add_argument("--profile", action="store_true", help="add a cProfile of an in-process run")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only", choices=["throughput", "progress", "memory", "profile"], default=None)
    parser.add_argument("--memory-tasks", type=int, default=None, help="default 100,000 (--quick: 20,000)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default bench/results/...)")
    parser.add_argument(
        "--others",
        action="store_true",
        help="then run bench.bench_others (Celery, Dramatiq when installed) on the same broker",
    )
    args = parser.parse_args()
    quick = args.quick
    args.runs = 1 if quick else 3
    args.tasks = 2000 if quick else 5000
    args.calls = 300 if quick else 1000
    args.payloads = (
        [(1000, 500), (100_000, 50), (1_000_000, 10)]
        if quick
        else [(1000, 2000), (100_000, 200), (1_000_000, 30)]
    )
    args.progress_calls = 200_000 if quick else 1_000_000
    args.progress_work = 20
    args.memory_tasks = args.memory_tasks or (20_000 if quick else 100_000)
    args.profile_tasks = 2000 if quick else 5000
    args.profile_top = 25

    admin = Admin()
    results: dict[str, Any] = {
        "kind": "throughput",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_commit(),
        "machine": machine(),
        "argv": sys.argv[1:],
        "quick": quick,
        "url": taskell.Config.from_url(URL).masked_url(),
        "versions": {
            "python": platform.python_version(),
            "pika": pika.__version__,
            "pydantic": pydantic.VERSION,
            "rabbitmq": admin.version,
        },
        "cpus": os.cpu_count(),
    }
    print(
        f"taskell vs raw pika on {results['url']} (RabbitMQ {admin.version}, Python {platform.python_version()},"
        f" {os.cpu_count()} CPUs){' --quick' if quick else ''}"
    )
    stale = admin.purge()
    if stale:
        print(f"  (purged {stale} stale messages)")
    raw = RawClient(URL, RAW_QUEUE)
    try:
        with taskell.connect(URL) as conn:
            if args.only in (None, "throughput"):
                bench_throughput(conn, raw, admin, args, results)
            if args.only in (None, "progress"):
                bench_progress(conn, admin, args, results)
            if args.only in (None, "memory") and not args.skip_memory:
                bench_memory(conn, admin, args, results)
        if args.profile or args.only == "profile":
            admin.purge()
            bench_profile(args, results)
    finally:
        raw.close()
        admin.purge()
        admin.close()
    ratio_table(results)
    print("codegen: see bench/bench_codegen.py (50 / 500 / 5,000 tasks)")
    path = (
        args.out
        or ROOT
        / "bench"
        / "results"
        / f"throughput-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if quick else ''}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    results["loadavg_end"] = os.getloadavg()
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"results saved to {path}")
    if args.others:  # same broker, same raw-pika baseline: compare through the ratios
        print("\nCelery and Dramatiq (bench/bench_others.py):", flush=True)
        subprocess.run(
            [sys.executable, "-m", "bench.bench_others", *(["--quick"] if quick else [])],
            cwd=ROOT,
            check=False,
        )


if __name__ == "__main__":
    main()
