"""Observability on a real RabbitMQ (SPEC §11): a worker's Prometheus metrics and OpenTelemetry
traces.

- After a known mix of results, failures, aborts, retries, time limits and rejections the
  counters and histograms scraped from ``/metrics`` say exactly that, in a thread pool and in
  a process pool (whose parent counts for its children).
- The running gauge is 1 while a handler runs and 0 after; the queue wait of a retried task
  counts from when its delay ended, not from its first submission.
- A task a stopping worker gives back to its queue counts as ``requeued``; the endpoint stops
  with the worker.
- ``taskell worker --metrics-port`` serves ``/metrics``; a port in use is a ``ConfigError``.
- One trace spans the client, the worker and a task that depended on another (subprocess
  ``trace_run``, in-memory exporter).
- Without OpenTelemetry (its import blocked) a client and worker run and nothing of it, nor
  prometheus_client (metrics off), is imported.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest
from prometheus_client.parser import text_string_to_metric_families

import taskell
from generated.demo import FAIL, SLEEP, SQUARE, SUM, TOTAL
from taskell.registry import Registry
from tests.support import (
    RESULT_TIMEOUT,
    ROOT,
    TASKELL,
    cli_env,
    python_env,
    stop_process,
    wait_consuming,
    wait_until,
)

LIMITED_SLEEP = dataclasses.replace(SLEEP, time_limit=0.3)
RETRY_DELAY = 1.5
RETRIED_SUM = dataclasses.replace(SUM, retry=taskell.RetryPolicy(attempts=2, delay=RETRY_DELAY))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: tuple[str, int]) -> Samples:
    """Every sample at ``http://HOST:PORT/metrics``, parsed by prometheus_client's parser:
    ``(sample name, sorted labels) -> value``."""
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def spin(seconds: float) -> None:
    """Python code for ``seconds`` (an abort or time limit interrupts it; bounded either way)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.005)


@pytest.fixture
def workers() -> Iterator[list[taskell.Worker]]:
    started: list[taskell.Worker] = []
    yield started
    for worker in started:
        worker.stop(20)


def start(
    workers: list[taskell.Worker], reg: Registry, config: taskell.Config, **update: Any
) -> taskell.Worker:
    worker = taskell.Worker(reg, config.model_copy(update={"metrics_port": 0, **update}), parallelism=2)
    worker.start()
    workers.append(worker)
    return worker


def address(worker: taskell.Worker) -> tuple[str, int]:
    assert worker.metrics is not None and worker.metrics.address is not None
    return worker.metrics.address


def sum_failing_once(ctx: taskell.Context[int], args: Any) -> int:
    if ctx.attempt == 1:
        raise ValueError("attempt 1 fails")
    return sum(args.numbers)


def spin_until_aborted(ctx: taskell.Context[None], args: Any) -> int:
    spin(20)
    return 0


def fail(ctx: taskell.Context[None], args: Any) -> None:
    raise ValueError(args.message)


def sleep_past_limit(ctx: taskell.Context[float], args: Any) -> float:
    spin(20)
    return 0.0


def rejected(kind: str) -> Any:
    """Properties of a raw task message of type ``kind``, without a reply queue."""
    return pika.BasicProperties(type=kind, message_id=str(uuid.uuid4()), content_type="application/json")


def mix_registry() -> Registry:
    reg = Registry()
    reg.add(SQUARE, lambda ctx, args: args.x * args.x)
    reg.add(FAIL, fail)
    reg.add(LIMITED_SLEEP, sleep_past_limit)
    reg.add(RETRIED_SUM, sum_failing_once)
    reg.add(TOTAL, spin_until_aborted)
    return reg


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_counters_and_histograms_after_a_known_mix(
    config: taskell.Config, conn: taskell.Connection, workers: list[taskell.Worker], amqp: Any, pool: str
) -> None:
    worker = start(workers, mix_registry(), config, pool=pool)
    squares = [conn.submit(SQUARE, {"x": x}) for x in range(3)]
    failures = [conn.submit(FAIL, {"message": f"no {n}"}) for n in range(2)]
    limited = conn.submit(LIMITED_SLEEP, {"seconds": 20})
    retried = conn.submit(RETRIED_SUM, {"numbers": [1, 2]})
    aborted = conn.submit(TOTAL, {"parts": [1]})
    # Rejected: args that do not validate, and a task type no worker knows.
    for kind, body in (("demo.square", b'{"x": "nine"}'), ("demo.nothing", b"{}")):
        amqp.basic_publish("", SQUARE.queue, body, properties=rejected(kind))
    assert [h.result(timeout=RESULT_TIMEOUT) for h in squares] == [0, 1, 4]
    for handle in failures:
        with pytest.raises(taskell.TaskFailed):
            handle.result(timeout=RESULT_TIMEOUT)
    with pytest.raises(taskell.TimeLimitExceeded):
        limited.result(timeout=RESULT_TIMEOUT)
    wait_until(
        lambda: value(scrape(address(worker)), "taskell_tasks_running", task="demo.total") == 1,
        10,
        "total runs",
    )
    aborted.abort()
    with pytest.raises(taskell.TaskAborted):
        aborted.result(timeout=RESULT_TIMEOUT)
    assert retried.result(timeout=RESULT_TIMEOUT) == 3
    wait_until(
        lambda: (
            value(scrape(address(worker)), "taskell_tasks_finished_total", task="unknown", outcome="rejected")
            == 1
        ),
        10,
        "both rejections counted",
    )

    samples = scrape(address(worker))
    started = {"demo.square": 3, "demo.fail": 2, "demo.sleep": 1, "demo.sum": 2, "demo.total": 1}
    finished = {
        ("demo.square", "result"): 3,
        ("demo.square", "rejected"): 1,
        ("demo.fail", "failed"): 2,
        ("demo.sleep", "time_limit"): 1,
        ("demo.sum", "retrying"): 1,
        ("demo.sum", "result"): 1,
        ("demo.total", "aborted"): 1,
        ("unknown", "rejected"): 1,
    }
    got_finished = {
        (dict(labels)["task"], dict(labels)["outcome"]): v
        for (name, labels), v in samples.items()
        if name == "taskell_tasks_finished_total" and v
    }
    assert got_finished == finished
    for task, count in started.items():
        assert value(samples, "taskell_tasks_started_total", task=task) == count, task
        assert value(samples, "taskell_task_duration_seconds_count", task=task) == count, task
        assert value(samples, "taskell_queue_wait_seconds_count", task=task) == count, task
        assert value(samples, "taskell_tasks_running", task=task) == 0, task
    assert value(samples, "taskell_task_duration_seconds_bucket", task="demo.sleep", le="0.25") == 0
    assert value(samples, "taskell_task_duration_seconds_sum", task="demo.sleep") >= 0.3
    # The second attempt waited RETRY_DELAY s for its retry, then started at once: its queue
    # wait counts from when it was due.
    assert value(samples, "taskell_queue_wait_seconds_bucket", task="demo.sum", le="1.0") == 2


def test_the_running_gauge_during_and_after_a_task(
    config: taskell.Config, conn: taskell.Connection, workers: list[taskell.Worker]
) -> None:
    began, release = threading.Event(), threading.Event()

    def hold(ctx: taskell.Context[float], args: Any) -> float:
        began.set()
        release.wait(RESULT_TIMEOUT)
        return 1.0

    reg = Registry()
    reg.add(SLEEP, hold)
    worker = start(workers, reg, config)
    assert address(worker)[0] == "127.0.0.1"  # loopback unless metrics_host says otherwise
    handle = conn.submit(SLEEP, {"seconds": 1})
    assert began.wait(RESULT_TIMEOUT)
    during = scrape(address(worker))
    assert value(during, "taskell_tasks_running", task="demo.sleep") == 1
    assert value(during, "taskell_tasks_started_total", task="demo.sleep") == 1
    assert value(during, "taskell_tasks_finished_total", task="demo.sleep", outcome="result") == 0
    release.set()
    assert handle.result(timeout=RESULT_TIMEOUT) == 1.0
    after = scrape(address(worker))
    assert value(after, "taskell_tasks_running", task="demo.sleep") == 0
    assert value(after, "taskell_tasks_finished_total", task="demo.sleep", outcome="result") == 1


def test_a_task_requeued_by_a_stopping_worker_counts_as_requeued(
    config: taskell.Config, conn: taskell.Connection, workers: list[taskell.Worker]
) -> None:
    reg = Registry()
    reg.add(TOTAL, spin_until_aborted)
    worker = start(workers, reg, config)
    served = address(worker)
    conn.submit(TOTAL, {"parts": [1]})
    wait_until(
        lambda: value(scrape(served), "taskell_tasks_running", task="demo.total") == 1, 10, "total runs"
    )
    worker.stop(0.2)  # the grace period ends while it runs: aborted and given back to the queue
    assert worker.metrics is not None
    read = worker.metrics.registry.get_sample_value
    assert read("taskell_tasks_finished_total", {"task": "demo.total", "outcome": "requeued"}) == 1
    assert read("taskell_tasks_running", {"task": "demo.total"}) == 0
    with pytest.raises(OSError):  # the endpoint stopped with the worker
        scrape(served)


def test_a_metrics_port_in_use_is_a_config_error(config: taskell.Config) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reg = Registry()
        reg.add(SQUARE, lambda ctx, args: args.x * args.x)
        worker = taskell.Worker(reg, config.model_copy(update={"metrics_port": port}))
        with pytest.raises(taskell.ConfigError) as info:
            worker.start()
    assert info.value.key == "metrics_port" and f"127.0.0.1:{port}" in str(info.value)


def test_the_cli_worker_serves_metrics(
    config: taskell.Config, conn: taskell.Connection, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a free port, for the flag
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [TASKELL, "worker", "examples.worker:handlers", "--metrics-port", str(port)],
            cwd=ROOT,
            env=cli_env(config.broker_url()),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_consuming(config, [(proc, log_path)])
        assert f"metrics at http://127.0.0.1:{port}/metrics" in log_path.read_text()
        assert conn.submit(SQUARE, {"x": 5}).result(timeout=RESULT_TIMEOUT) == 25
        wait_until(
            lambda: (
                value(
                    scrape(("127.0.0.1", port)),
                    "taskell_tasks_finished_total",
                    task="demo.square",
                    outcome="result",
                )
                == 1
            ),
            10,
            "the square counted",
        )
    finally:
        stop_process(proc)


def test_one_trace_spans_the_client_the_worker_and_a_dependent_task(config: taskell.Config) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.trace_run"],
        env=python_env(config.broker_url()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    spans: dict[str, dict[str, Any]] = {
        span["name"]: span for span in map(json.loads, run.stdout.splitlines())
    }
    assert set(spans) == {
        "request",
        "send demo.square",
        "process demo.square",
        "inside square",
        "send demo.total",
        "process demo.total",
    }
    assert len({span["trace_id"] for span in spans.values()}) == 1  # one trace

    def parent(name: str) -> str:
        return next(n for n, s in spans.items() if s["span_id"] == spans[name]["parent_id"])

    assert parent("send demo.square") == parent("send demo.total") == "request"
    assert parent("process demo.square") == "send demo.square"  # through the message headers
    assert parent("inside square") == "process demo.square"  # the handler's own spans
    assert parent("process demo.total") == "send demo.total"  # through the join record
    assert spans["send demo.total"]["links"] == [spans["send demo.square"]["span_id"]]  # the dependency
    send, process = spans["send demo.square"], spans["process demo.square"]
    assert (send["kind"], process["kind"]) == ("PRODUCER", "CONSUMER")
    for span, operation in ((send, "send"), (process, "process")):
        attributes = span["attributes"]
        assert attributes["messaging.system"] == "rabbitmq"
        assert attributes["messaging.destination.name"] == SQUARE.queue
        assert attributes["messaging.operation.type"] == operation
        assert (
            attributes["messaging.message.id"]
            == spans["send demo.square"]["attributes"]["messaging.message.id"]
        )
    assert process["attributes"]["taskell.outcome"] == "result"


def test_a_scheduled_submission_is_traced_like_a_client_one(config: taskell.Config) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "tests.integration.trace_run", "scheduled"],
        env=python_env(config.broker_url()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    spans = [json.loads(line) for line in run.stdout.splitlines()]
    process = next(s for s in spans if s["name"] == "process demo.square")
    send = next(s for s in spans if s["span_id"] == process["parent_id"])  # through the headers
    assert (send["name"], send["kind"], send["parent_id"]) == ("send demo.square", "PRODUCER", None)
    assert send["trace_id"] == process["trace_id"]
    # The schedule's deterministic task id (a uuid5 of schedule and due time, where a client's
    # is a uuid4) is the message id on both sides.
    message_id = send["attributes"]["messaging.message.id"]
    assert uuid.UUID(message_id).version == 5
    assert process["attributes"]["messaging.message.id"] == message_id


BLOCKED_RUN = """
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"blocked: {name}", name=name)
        return None

sys.meta_path.insert(0, Block())
import taskell
from examples.worker import Impl
from generated.demo import Client, registry

config = taskell.Config.load()
with taskell.Worker(registry(Impl()), config), taskell.connect(config=config) as conn:
    assert Client(conn).square(x=6).result(timeout=30) == 36
from taskell import _tracing
print(_tracing.INSTALLED, sorted(m for m in sys.modules if m.startswith(("opentelemetry", "prometheus_client"))))
"""


def test_without_opentelemetry_nothing_of_it_is_imported(config: taskell.Config) -> None:
    run = subprocess.run(
        [sys.executable, "-c", BLOCKED_RUN],
        env=python_env(config.broker_url()),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "[]"]


def test_with_opentelemetry_unconfigured_messages_carry_no_trace_context(
    config: taskell.Config, conn: taskell.Connection, amqp: Any
) -> None:
    # The test process sets no tracer provider: OpenTelemetry is installed, not configured.
    handle = conn.submit(SQUARE, {"x": 2})
    conn.flush(RESULT_TIMEOUT)
    method, properties, _ = amqp.basic_get(SQUARE.queue, auto_ack=True)
    assert method is not None and properties.message_id == handle.id
    assert "traceparent" not in properties.headers
    assert isinstance(properties.headers["taskell-submitted-ms"], int)
