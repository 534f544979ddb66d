"""Round trip of a no-op task with OpenTelemetry tracing on vs off (issue 17's second figure),
measured in one run.

A tracer provider is process-wide, so each measurement is a child process running a worker and
a client side by side: "on" sets the SDK's provider with a batch span processor and an exporter
that drops the spans (the cost of making, ending and handing on spans; none of exporting them),
"off" sets none (OpenTelemetry installed, not configured: taskell makes no span). Repetitions
alternate the two in a random order; each runs a batch of ``--count`` tasks submitted at once
then awaited (throughput) and ``--sequential`` calls one after another (p50/p99); the ratio is
computed per repetition and the median reported with every raw sample. Each child also times
taskell's tracing calls alone for one task (the submission's ``send`` span with its headers,
the worker's ``process`` span), in microseconds: ``hooks_us``.

    .venv/bin/python -m bench.bench_tracing [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import taskell
from bench._common import ROOT, URL, latencies
from generated.demo.models import SQUARE, SquareArgs

TRACED = dataclasses.replace(SQUARE, name="bench.square_traced", queue="taskell.bench.tracing")
TIMEOUT = 120.0


def _square(ctx: taskell.Context[None], args: SquareArgs) -> int:
    return args.x * args.x


def child(mode: str, count: int, calls: int) -> dict[str, Any]:
    """One measurement in this process (tracing ``mode`` "on" or "off")."""
    spans = 0
    if mode == "on":
        from opentelemetry import trace
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, batch: Sequence[ReadableSpan]) -> SpanExportResult:
                nonlocal spans
                spans += len(batch)
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        trace.set_tracer_provider(provider)
    registry = taskell.Registry()
    registry.add(TRACED, _square)
    config = taskell.Config.from_url(URL)
    with taskell.Worker(registry, config), taskell.connect(config=config) as conn:

        def batch(n: int) -> float:
            deadline = time.monotonic() + TIMEOUT
            started = time.perf_counter()
            handles = [conn.submit(TRACED, {"x": i}) for i in range(n)]
            for i, handle in enumerate(handles):
                if handle.result(timeout=max(0.001, deadline - time.monotonic())) != i * i:
                    raise AssertionError("wrong result")
            return n / (time.perf_counter() - started)

        def call(i: int) -> None:
            if conn.submit(TRACED, {"x": i}).result(timeout=10) != i * i:
                raise AssertionError("wrong result")

        batch(min(300, count))  # warm up
        result = {"rate": round(batch(count), 1), **latencies(call, calls)}
    result["hooks_us"] = round(hooks_seconds(5000) * 1e6, 2)
    if mode == "on":
        provider.shutdown()  # flushes: every span was made
        result["spans"] = spans
    return result


def hooks_seconds(count: int) -> float:
    """Seconds of taskell's tracing calls for one task: ``send`` (with its headers), then
    ``process`` around nothing."""
    from taskell import _tracing
    from taskell.transport import Delivery, Message

    observer = _tracing.TracingObserver()
    started = time.perf_counter()
    for _ in range(count):
        headers: dict[str, Any] = {}
        with _tracing.sending(TRACED.name, TRACED.queue, "t", headers):
            pass
        delivery = Delivery(
            Message(b"{}", type=TRACED.name, message_id="t", headers=headers), 1, False, TRACED.queue
        )
        observer.started(delivery, TRACED.name)("result")
    return (time.perf_counter() - started) / count


def measure(mode: str, count: int, calls: int) -> dict[str, Any]:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_tracing",
            "--child",
            mode,
            "--count",
            str(count),
            "--sequential",
            str(calls),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    return dict(json.loads(run.stdout.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, smaller counts")
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--count", type=int, default=None, help="tasks per batch (default 3000)")
    parser.add_argument("--sequential", type=int, default=None, help="sequential calls (default 500)")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    a = parser.parse_args()
    repeat = a.repeat or (2 if a.quick else 5)
    count = a.count or (500 if a.quick else 3000)
    calls = a.sequential or (100 if a.quick else 500)
    if a.child:
        print(json.dumps(child(a.child, count, calls)), flush=True)
        return
    samples: list[dict[str, Any]] = []
    for _ in range(repeat):
        order = ["off", "on"]
        random.shuffle(order)
        sample: dict[str, Any] = {"order": order}
        for mode in order:
            sample[mode] = measure(mode, count, calls)
        if sample["on"]["spans"] != 2 * (min(300, count) + count + calls + 5000):  # send and process
            raise AssertionError(f"tracing on made {sample['on']['spans']} spans")
        sample["rate_ratio"] = round(sample["on"]["rate"] / sample["off"]["rate"], 3)
        sample["p50_ratio"] = round(sample["on"]["p50_ms"] / sample["off"]["p50_ms"], 3)
        samples.append(sample)
        print(json.dumps(sample), flush=True)
    result = {
        "benchmark": "bench_tracing",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "taskell": taskell.__version__,
        "count": count,
        "sequential": calls,
        "samples": samples,
        "median_rate_ratio": statistics.median(s["rate_ratio"] for s in samples),
        "median_p50_ratio": statistics.median(s["p50_ratio"] for s in samples),
        "median_hooks_us": {
            mode: statistics.median(s[mode]["hooks_us"] for s in samples) for mode in ("off", "on")
        },
    }
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if a.out:
        with open(a.out, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
