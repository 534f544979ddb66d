"""taskell against both pika baselines, Dramatiq and Celery, in one run on one broker: the
README's comparison table (issues 7, 15 and 16).

    scripts/bench-others [--quick] [--out FILE]     # installs the extra, starts a Redis, runs this
    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench .venv/bin/python -m bench.bench_others [...]

Systems, each running the no-op ``x * x`` (or ``a + b``) in a worker subprocess:

* naive pika: ``bench/raw_pika.py`` ``serve`` / ``RawClient``, what a user writes by hand
  (no confirms, transient replies, auto-acked exclusive reply queue);
* pika, same guarantees: ``bench/raw_pika.py`` ``serve --confirmed`` / ``ConfirmedClient``:
  taskell's guarantees (persistent confirmed submissions and replies, ack after the confirmed
  reply), one I/O loop per side, batched acks and writes;
* taskell: ``taskell worker examples.worker:handlers`` (``square``), ``demo.square``;
* taskell (async): the same worker, called through ``taskell.aio`` (the generated ``AsyncClient``);
* dramatiq: ``bench/others_dramatiq_app.py`` (RabbitmqBroker, Results middleware on Redis at
  ``REDIS_URL``, default ``redis://127.0.0.1:6379/0``);
* celery: ``bench/others_celery_app.py`` (threads pool, ``rpc://`` results).

Every worker gets taskell's default prefetch per thread (``PREFETCH_PER_SLOT`` x threads); the
single-threaded pika servers' "4 threads" is just that prefetch. A framework that is not
installed, or Dramatiq without a Redis, is skipped and said so. Figures, per repetition:

1. round trip: submit N tasks, then collect every result (N = 5,000; ``--quick`` 1,000), 1 and 4
   threads;
2. drain: N-1 fire-and-forget tasks (no result asked for), then one whose result is awaited:
   tasks/s from the first publish until that result is in; the same definition for every system;
3. sequential latency p50 / p99 over ``--calls`` calls (1,000; ``--quick`` 300), 1 thread.

The run is ``--repeat`` repetitions (5; ``--quick`` 3) of the whole set: in each, for 1 then 4
threads, every system in a random order (``--seed``) starts its worker, warms up with 200 round
trips, is measured once per figure, and stops. Ratios are taskell's figure over the other
system's in the same repetition (tasks/s: above 1 is taskell faster; latency: above 1 is
taskell slower), then the median and range over repetitions; the spread of one system's figure
over the repetitions is the noise of this machine during the run. The machine may be shared:
ratios within one run are what counts, not the absolute figures.

Output: a summary table, and a JSON file (``--out``, default ``bench/results/others-<time>.json``)
with the commit, date, versions, machine, the order of every repetition and every sample
(each sequential call's time included). ``bench/readme_tables.py`` turns such a file, once
committed under ``bench/reference/``, into the README's table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]

import taskell
import taskell.aio
from bench._common import ROOT, URL, git_commit, machine, percentile, start_raw_server, start_worker
from bench._summary import SYSTEMS, TASKELL, TASKELL_AIO, summarise
from bench.raw_pika import ConfirmedClient, RawClient
from generated.demo import AsyncClient, Client
from taskell.config import PREFETCH_PER_SLOT

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
NAIVE_QUEUE = "bench.others.pika"
CONFIRMED_QUEUE = "bench.others.pika.confirmed"
CELERY_QUEUE = "bench.others.celery"  # as in bench/others_celery_app.py
DRAMATIQ_QUEUE = "bench.others.dramatiq"  # as in bench/others_dramatiq_app.py
TASKELL_QUEUES = ("taskell.q1", "taskell.q2", "taskell.default")  # examples/worker.py's
QUEUES = (
    NAIVE_QUEUE,
    CONFIRMED_QUEUE,
    CELERY_QUEUE,
    DRAMATIQ_QUEUE,
    DRAMATIQ_QUEUE + ".DQ",
    DRAMATIQ_QUEUE + ".XQ",
    *TASKELL_QUEUES,
)
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


# The systems: start(threads) / stop(), and the operations that are timed.


class Side:
    name = ""
    process: subprocess.Popen[bytes] | None = None

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.log = tmp / f"{self.name.replace(' ', '-').replace(',', '')}.log"

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
        """``count - 1`` tasks without a result, then one whose result is awaited."""
        raise NotImplementedError

    def call(self, i: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class PikaSide(Side):
    """Both pika baselines: ``RawClient`` / ``ConfirmedClient`` have the same interface. Their
    one thread drives the connection only while it waits (no heartbeats in between), so each
    measurement opens its own client."""

    client: RawClient | ConfirmedClient

    def __init__(self, tmp: Path, *, confirmed: bool) -> None:
        self.name = SYSTEMS[1] if confirmed else SYSTEMS[0]
        super().__init__(tmp)
        self.confirmed = confirmed
        self.queue = CONFIRMED_QUEUE if confirmed else NAIVE_QUEUE

    def start(self, threads: int) -> None:
        self.process = start_raw_server(self.queue, PREFETCH_PER_SLOT * threads, confirmed=self.confirmed)
        self.client = (ConfirmedClient if self.confirmed else RawClient)(URL, self.queue)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(Exception):  # a failed measurement may have left it broken
                self.client.close()
        super().stop()

    def round_trip(self, count: int) -> None:
        self.client.replies.clear()
        ids = [self.client.publish(json.dumps({"x": i}).encode()) for i in range(count)]
        self.client.wait(count, TIMEOUT)
        if any(json.loads(self.client.replies[cid]) != i * i for i, cid in enumerate(ids)):
            raise AssertionError(f"wrong {self.name} result")
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
            raise AssertionError(f"wrong {self.name} result")


class TaskellSide(Side):
    name = TASKELL

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.conn = taskell.connect(URL)
        self.demo = Client(self.conn)

    def start(self, threads: int) -> None:
        self.process = start_worker(self.conn, "examples.worker:handlers", parallelism=threads)

    def round_trip(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        handles = [self.demo.square(x=i) for i in range(count)]
        for i, handle in enumerate(handles):
            if handle.result(timeout=max(0.001, deadline - time.monotonic())) != i * i:
                raise AssertionError("wrong taskell result")

    def drain(self, count: int) -> None:
        for i in range(count - 1):
            taskell.fire(self.demo.square, x=i)
        self.demo.square(x=count).result(timeout=TIMEOUT)
        self.conn.flush(10)  # every submission confirmed, as the confirmed pika client waits for

    def call(self, i: int) -> None:
        if self.demo.square(x=i).result(timeout=10) != i * i:
            raise AssertionError("wrong taskell result")

    def close(self) -> None:
        self.conn.close()


class AioSide(Side):
    """The asyncio client (``taskell.aio``) on its own event loop, run by this thread for each
    measurement; the worker is taskell's, as for the sync client."""

    name = TASKELL_AIO

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.loop = asyncio.new_event_loop()
        self.aconn = self.loop.run_until_complete(self._connect())
        self.demo = AsyncClient(self.aconn)

    @staticmethod
    async def _connect() -> taskell.aio.Connection:
        return await taskell.aio.connect(URL)

    def start(self, threads: int) -> None:
        self.process = start_worker(self.aconn.sync, "examples.worker:handlers", parallelism=threads)

    def round_trip(self, count: int) -> None:
        async def run() -> None:
            handles = [self.demo.square(x=i) for i in range(count)]
            results = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), TIMEOUT)
            if results != [i * i for i in range(count)]:
                raise AssertionError("wrong taskell.aio result")

        self.loop.run_until_complete(run())

    def drain(self, count: int) -> None:
        async def run() -> None:
            for i in range(count - 1):
                taskell.aio.fire(self.demo.square, x=i)
            await self.demo.square(x=count).result(timeout=TIMEOUT)
            await self.aconn.flush(10)

        self.loop.run_until_complete(run())

    def call(self, i: int) -> None:
        async def run() -> None:
            if await self.demo.square(x=i).result(timeout=10) != i * i:
                raise AssertionError("wrong taskell.aio result")

        self.loop.run_until_complete(run())

    def close(self) -> None:
        self.loop.run_until_complete(self.aconn.close())
        self.loop.close()


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

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.env = {"REDIS_URL": REDIS_URL}
        os.environ.update(self.env)  # read when the app module is imported, here and in the worker
        from bench import others_dramatiq_app

        self.app = others_dramatiq_app

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
        deadline = time.monotonic() + START_TIMEOUT
        message = self.app.add_actor.send(1, 2)
        while time.monotonic() < deadline:
            self.alive()
            with contextlib.suppress(Exception):  # dramatiq's ResultTimeout, while the worker starts
                if message.get_result(block=True, timeout=1000) == 3:
                    return
        raise RuntimeError(f"dramatiq worker did not answer within {START_TIMEOUT:.0f} s")

    def result(self, message: Any, deadline: float) -> Any:
        # ms; the Redis backend rounds down to whole seconds, and 0 would not block at all
        return message.get_result(block=True, timeout=max(1000, int((deadline - time.monotonic()) * 1000)))

    def round_trip(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        messages = [self.app.add_actor.send(i, i) for i in range(count)]
        for i, message in enumerate(messages):
            if self.result(message, deadline) != i + i:
                raise AssertionError("wrong dramatiq result")

    def drain(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        for i in range(count - 1):
            self.app.discard_actor.send(i, i)
        self.result(self.app.add_actor.send(count, count), deadline)

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


def close_all(sides: Iterable[Side], admin: Admin) -> None:
    """Stop every system's worker and close its client, then empty the queues and close."""
    for side in sides:
        side.stop()
        with contextlib.suppress(Exception):  # a failed measurement may have left it broken
            side.close()
    admin.purge()
    admin.close()


def rate(run: Callable[[int], None], count: int) -> float:
    """Tasks per second of ``run(count)``."""
    started = time.perf_counter()
    run(count)
    return round(count / (time.perf_counter() - started), 1)


def call_times(call: Callable[[int], None], count: int) -> list[float]:
    """Milliseconds of each of ``count`` sequential ``call(i)``."""
    times = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        times.append(round((time.perf_counter() - started) * 1000, 4))
    return times


def measure(side: Side, threads: int, admin: Admin, a: argparse.Namespace) -> dict[str, Any]:
    """One repetition's figures of one system at ``threads``: start, warm up, measure, stop."""
    admin.purge()
    side.start(threads)
    try:
        side.round_trip(WARM_UP)
        out: dict[str, Any] = {f"round trip {threads}": rate(side.round_trip, a.tasks)}
        admin.purge()
        out[f"drain {threads}"] = rate(side.drain, a.tasks)
        if threads == 1:
            times = call_times(side.call, a.calls)
            out["latency p50"] = round(statistics.median(times), 4)
            out["latency p99"] = round(percentile(times, 0.99), 4)
            out["call ms"] = times
        side.alive()
        return out
    finally:
        side.stop()


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


def versions(rabbitmq: str) -> dict[str, str]:
    out = {"rabbitmq": rabbitmq}
    for package in ("taskell", "pika", "pydantic", "celery", "kombu", "dramatiq", "redis"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[package] = importlib.metadata.version(package)
    return out


def show(summary: dict[str, Any]) -> None:
    """Print the medians (range) and taskell's ratios."""
    print("\nmedian (min-max over repetitions); ratio = taskell / system in the same repetition:")
    for system, figures in summary["systems"].items():
        print(f"  {system}")
        for figure, entry in figures.items():
            text = f"    {figure:<14} {entry['median']:>9.2f} ({entry['min']:.2f}-{entry['max']:.2f})"
            if "ratio" in entry:
                r = entry["ratio"]
                text += f"   taskell / this {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
            print(text)


def main() -> None:
    parser = argparse.ArgumentParser(
        description="taskell, pika (naive and same guarantees), Dramatiq, Celery"
    )
    parser.add_argument("--quick", action="store_true", help="3 repetitions, 1,000 tasks, 300 calls")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 5; --quick 3)")
    parser.add_argument("--tasks", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument(
        "--seed", type=int, default=None, help="of the random order (default: from the clock)"
    )
    parser.add_argument(
        "--only",
        default=None,
        help='comma-separated systems to run, commas in a name left out, e.g. "naive pika,pika same '
        'guarantees,taskell" (default: every installed one)',
    )
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default bench/results/...)")
    a = parser.parse_args()
    a.repeat = a.repeat or (3 if a.quick else 5)
    a.tasks = a.tasks or (1000 if a.quick else 5000)
    a.calls = a.calls or (300 if a.quick else 1000)
    a.seed = a.seed if a.seed is not None else int(time.time())
    parsed = urllib.parse.urlsplit(URL)
    shown_url = URL.replace(f":{parsed.password}@", ":***@") if parsed.password else URL
    print(
        f"broker {shown_url}; {a.tasks} tasks, {a.calls} calls, {a.repeat} repetitions, seed {a.seed}",
        flush=True,
    )
    data: dict[str, Any] = {
        "kind": "others",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_commit(),
        "machine": machine(),
        "broker_url": shown_url,
        "redis_url": REDIS_URL,
        "tasks": a.tasks,
        "calls": a.calls,
        "repeat": a.repeat,
        "seed": a.seed,
        "prefetch_per_thread": PREFETCH_PER_SLOT,
        "warm_up": WARM_UP,
    }
    skipped: dict[str, str] = {}
    samples: dict[str, list[dict[str, Any]]] = {}  # system -> one dict of figures per repetition
    orders: list[dict[str, Any]] = []
    rng = random.Random(a.seed)
    admin = Admin()
    data["versions"] = versions(admin.version)
    with tempfile.TemporaryDirectory(prefix="bench-others-") as tmpdir:
        tmp = Path(tmpdir)
        makers: dict[str, Callable[[], Side]] = {
            SYSTEMS[0]: lambda: PikaSide(tmp, confirmed=False),
            SYSTEMS[1]: lambda: PikaSide(tmp, confirmed=True),
            TASKELL: lambda: TaskellSide(tmp),
            TASKELL_AIO: lambda: AioSide(tmp),
        }
        if importlib.util.find_spec("dramatiq") is None:
            skipped["dramatiq"] = f"not installed; {INSTALL}"
        elif (why := redis_answers()) is not None:
            skipped["dramatiq"] = f"{why}: no results backend"
        else:
            makers["dramatiq"] = lambda: DramatiqSide(tmp)
        if importlib.util.find_spec("celery") is None:
            skipped["celery"] = f"not installed; {INSTALL}"
        else:
            makers["celery"] = lambda: CelerySide(tmp)
        if a.only:
            wanted = {name.strip() for name in a.only.split(",")}
            makers = {name: make for name, make in makers.items() if name.replace(",", "") in wanted}
        for name, reason in skipped.items():
            print(f"{name}: skipped, {reason}", flush=True)
        sides: dict[str, Side] = {}
        try:
            for name, make in makers.items():
                sides[name] = make()
            for repetition in range(a.repeat):
                row: dict[str, dict[str, Any]] = {name: {} for name in sides}
                for threads in (1, 4):
                    order = list(sides)
                    rng.shuffle(order)
                    orders.append({"repetition": repetition, "threads": threads, "order": order})
                    print(f"repetition {repetition + 1}, {threads} thread(s): {', '.join(order)}", flush=True)
                    for name in order:
                        side = sides[name]
                        try:
                            figures = measure(side, threads, admin, a)
                        except Exception as exc:
                            print(f"  {name}: FAILED\n{tail(side.log)}", flush=True)
                            raise RuntimeError(
                                f"{name}, repetition {repetition + 1}, {threads} threads"
                            ) from exc
                        row[name].update(figures)
                        shown = ", ".join(f"{k} {v:.2f}" for k, v in figures.items() if k != "call ms")
                        print(f"  {name:<22} {shown}", flush=True)
                for name, figures in row.items():
                    samples.setdefault(name, []).append(figures)
        finally:
            close_all(sides.values(), admin)
    data.update(
        {
            "systems": list(samples),
            "orders": orders,
            "skipped": skipped,
            "samples": samples,
            "loadavg_end": os.getloadavg(),
        }
    )
    show(summarise(data))
    out = (
        a.out
        or ROOT
        / "bench"
        / "results"
        / f"others-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if a.quick else ''}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
