"""Helpers of the fault suite: scale, worker subprocesses, load, outcome checks and the report.

Scale: ``TASKELL_FAULT_SCALE=full`` runs the issue's counts (10,000 tasks per test); anything
else (the default, ``ci``) runs a tenth of them. ``TASKELL_FAULT_TASKS=N`` overrides both.
Every test appends one JSON line to ``$TASKELL_FAULT_REPORT`` (if set) with what it measured:
tasks submitted, lost (no correct result in time), duplicated (executed more than once),
dead-lettered, tasks done before and after the fault, whether the case passed, and the fault's
own figures (kills, reconnects...); see ``Report``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]

import taskell
import taskell.aio
from generated.demo import Client
from tests.support import ROOT, poll_until

WORKER_SCRIPT = Path(__file__).with_name("fault_worker.py")
FULL = os.environ.get("TASKELL_FAULT_SCALE", "ci") == "full"
SCALE = "full" if FULL else "ci"


def task_count(full: int = 10_000) -> int:
    """Tasks for one test: ``full`` at full scale, a tenth at CI scale, or $TASKELL_FAULT_TASKS."""
    override = os.environ.get("TASKELL_FAULT_TASKS")
    if override:
        return int(override)
    return full if FULL else max(100, full // 10)


def client_config(urls: Sequence[str], **settings: Any) -> taskell.Config:
    """A client config for brokers ``urls`` (the first is the main one, the rest ``hosts``)."""
    hosts = [u.split("@", 1)[1].split("/", 1)[0] for u in urls[1:]]
    return taskell.Config.load(None, env={}, url=urls[0], rabbitmq_hosts=hosts or None, **settings)


def worker_env(urls: Sequence[str], **settings: object) -> dict[str, str]:
    """``TASKELL_*`` variables for a worker subprocess (``heartbeat=2`` -> ``TASKELL_HEARTBEAT``)."""
    env = {"TASKELL_URL": urls[0]}
    hosts = [u.split("@", 1)[1].split("/", 1)[0] for u in urls[1:]]
    if hosts:
        env["TASKELL_RABBITMQ_HOSTS"] = ",".join(hosts)
    for key, value in settings.items():
        env[f"TASKELL_{key.upper()}"] = str(value)
    return env


# Worker subprocesses


class WorkerProc:
    """One ``fault_worker.py`` subprocess; its stdout/stderr go to ``log_path``."""

    def __init__(self, popen: subprocess.Popen[bytes], log_path: Path, label: str) -> None:
        self.popen = popen
        self.log_path = log_path
        self.label = label

    def __repr__(self) -> str:
        return f"<worker {self.label} pid {self.pid} rc {self.popen.poll()}>"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def ready(self) -> bool:
        """True once Worker.start() has registered its consumers (it logs "consuming")."""
        return " consuming " in self.log()

    def wait_ready(self, timeout: float = 30.0) -> None:
        ended = poll_until(lambda: self.ready() or self.popen.poll() is not None, timeout, 0.05)
        if not self.ready():
            state = "exited before consuming" if ended else f"not consuming after {timeout} s"
            raise AssertionError(f"{self} {state}:\n{self.log()[-3000:]}")

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.popen.wait(10)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)


class Workers:
    """Starts worker subprocesses for one test; ``close()`` stops each by its own PID."""

    def __init__(self, directory: Path, env: Mapping[str, str], *, sleep: float = 0.0) -> None:
        self.directory = directory
        self.exec_log = directory / "executions.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TASKELL_")}
        self.env.update(env)
        self.env.update(
            FAULT_EXEC_LOG=str(self.exec_log),
            FAULT_TASK_SLEEP=str(sleep),
            PYTHONPATH=str(ROOT),
            PYTHONUNBUFFERED="1",
        )
        self.started: list[WorkerProc] = []

    def spawn(self, label: str | None = None, **env: str) -> WorkerProc:
        label = label or f"w{len(self.started)}"
        log_path = self.directory / f"worker-{len(self.started)}-{label}.log"
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, str(WORKER_SCRIPT)],
                cwd=ROOT,
                env={**self.env, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = WorkerProc(popen, log_path, label)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.signal(signal.SIGKILL)
        for proc in self.started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(10)

    def executions(self) -> collections.Counter[str]:
        """How many times each task id was executed to the end (by any worker)."""
        counts: collections.Counter[str] = collections.Counter()
        try:
            text = self.exec_log.read_text()
        except FileNotFoundError:
            return counts
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 3:
                counts[parts[0]] += 1
        return counts

    def redelivered_executions(self) -> int:
        try:
            return sum(1 for line in self.exec_log.read_text().splitlines() if line.split()[1:2] == ["1"])
        except FileNotFoundError:
            return 0

    def reconnects(self) -> int:
        """ "reconnected to the broker" lines over all worker logs (two connections each)."""
        return sum(p.log().count("reconnected to the broker") for p in self.started)

    def connection_losses(self) -> list[int]:
        """Per worker started (in order), how many of its connections were lost: each loss logs
        "connection lost" once (``transport/amqp.py``), whatever the reconnect did after."""
        return [p.log().count("connection lost") for p in self.started]


MakeWorkers = Callable[..., Workers]  # the ``workers`` fixture: ``workers(env, sleep=0.0)``


# Load and outcome


Handle = taskell.TaskHandle[None, int]
AsyncHandle = taskell.aio.TaskHandle[None, int]


def submit_squares(client: Client, count: int, start: int = 0) -> list[tuple[int, Handle]]:
    return [(x, client.square(x=x)) for x in range(start, start + count)]


def submit_paced(
    client: Client, count: int, seconds: float, out: list[tuple[int, Handle]], batches: int = 50
) -> None:
    """Submit ``count`` squares spread over about ``seconds`` (appending to ``out``)."""
    per_batch = max(1, count // batches)
    pause = seconds / max(1, (count + per_batch - 1) // per_batch)
    x = 0
    while x < count:
        n = min(per_batch, count - x)
        out.extend(submit_squares(client, n, x))
        x += n
        time.sleep(pause)


def done_count(handles: Iterable[tuple[int, Handle]]) -> int:
    return sum(1 for _, h in handles if h.done())


def wait_progress(handles: Sequence[tuple[int, Handle]], target: float, timeout: float) -> int:
    """Wait until ``target`` handles (a float: that fraction of them) are done, or ``timeout``;
    returns how many are. ``handles`` may grow meanwhile (a submitter thread)."""
    count = int(len(handles) * target) if isinstance(target, float) else target
    poll_until(lambda: done_count(list(handles)) >= count, timeout, 0.05)
    return done_count(list(handles))


@dataclass
class Outcome:
    completed: int = 0
    lost: list[str] = field(default_factory=list)  # no outcome in time
    failed: dict[str, str] = field(default_factory=dict)  # ended with an error instead
    wrong: list[str] = field(default_factory=list)  # a result, but not x * x

    @property
    def not_ok(self) -> int:
        return len(self.lost) + len(self.failed) + len(self.wrong)

    def describe(self) -> str:
        errors = collections.Counter(self.failed.values())
        return (
            f"{self.completed} correct, {len(self.lost)} without a result, {len(self.wrong)} wrong, "
            f"{len(self.failed)} failed {dict(errors.most_common(5))}; first lost: {self.lost[:5]}"
        )

    def note(self, task_id: str, x: int, end: int | BaseException) -> None:
        """Sort the end of square ``x``: its result, or the error waiting for it raised."""
        if isinstance(end, TimeoutError):
            self.lost.append(task_id)
        elif isinstance(end, BaseException):
            self.failed[task_id] = f"{type(end).__name__}: {str(end)[:120]}"
        elif end == x * x:
            self.completed += 1
        else:
            self.wrong.append(task_id)


def collect(handles: Sequence[tuple[int, Handle]], timeout: float) -> Outcome:
    """Wait (up to ``timeout`` s in all) for every handle; sort them into correct / not."""
    deadline = time.monotonic() + timeout
    outcome = Outcome()
    for x, handle in handles:
        end: int | BaseException
        try:
            end = handle.result(timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, taskell.TaskellError) as exc:
            end = exc
        outcome.note(handle.id, x, end)
    return outcome


async def collect_async(handles: Sequence[tuple[int, AsyncHandle]], timeout: float) -> Outcome:
    """``collect`` for handles of the asyncio client."""
    deadline = time.monotonic() + timeout
    outcome = Outcome()
    for x, handle in handles:
        end: int | BaseException
        try:
            end = await handle.result(timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, taskell.TaskellError) as exc:
            end = exc
        outcome.note(handle.id, x, end)
    return outcome


# Raw AMQP


def blocking_channel(url: str) -> tuple[Any, Any]:
    params = pika.URLParameters(url)
    params.connection_attempts = 3
    params.retry_delay = 1
    params.socket_timeout = 5
    params.blocked_connection_timeout = 30
    connection = pika.BlockingConnection(params)
    return connection, connection.channel()


def queue_depth(url: str, queue: str) -> int:
    connection, channel = blocking_channel(url)
    try:
        return int(channel.queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def read_queue(url: str, queue: str, limit: int = 100_000) -> list[tuple[dict[str, Any], bytes]]:
    """The (headers, body) of the messages in ``queue``, left in place (read, then requeued)."""
    connection, channel = blocking_channel(url)
    messages: list[tuple[dict[str, Any], bytes]] = []
    try:
        channel.basic_qos(prefetch_count=0)
        while len(messages) < limit:
            method, props, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                break
            messages.append((dict(props.headers or {}), body))
    finally:
        connection.close()  # unacked: all back in the queue
    return messages


# Report


@dataclass
class Report:
    """One row of the results table. Build it once the case has measured, then run the case's
    assertions inside ``with report.checks():``: the row is written after them, with the result
    (``passed``), so a failing case never shows up as a clean one.

    ``done_before`` / ``done_after``: tasks (or runs) done before the fault landed and after it;
    ``checks()`` asserts both are above 0 when given (the fault landed mid-run).
    """

    fault: str
    load: str
    submitted: int
    lost: int
    duplicated: int  # tasks executed (to the end) more than once
    dead_lettered: int
    seconds: float
    scale: str = SCALE
    details: dict[str, Any] = field(default_factory=dict)
    done_before: int | None = None
    done_after: int | None = None
    passed: bool | None = None  # None: emitted without ``checks()``
    failure: str | None = None

    @contextlib.contextmanager
    def checks(self) -> Iterator[None]:
        """Run the case's assertions in the block; then emit the row, passed or failed."""
        try:
            yield
            if self.done_before is not None or self.done_after is not None:
                assert (self.done_before or 0) > 0 and (self.done_after or 0) > 0, (
                    f"the fault did not land mid-run: {self.done_before} done before it, "
                    f"{self.done_after} after"
                )
        except BaseException as exc:
            self.passed = False
            self.failure = f"{type(exc).__name__}: {str(exc)[:300]}"
            self.emit()
            raise
        self.passed = True
        self.emit()

    def emit(self) -> None:
        line = json.dumps(asdict(self))
        print(f"\nFAULT REPORT {line}")
        path = os.environ.get("TASKELL_FAULT_REPORT")
        if path:
            with open(path, "a") as fh:
                fh.write(line + "\n")


def duplicates(counts: collections.Counter[str]) -> int:
    return sum(1 for c in counts.values() if c > 1)
