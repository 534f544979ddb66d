"""A traced client and worker, run in a subprocess by test_rmq_observability (a tracer provider
is process-wide, so the test process keeps none):

    TASKELL_URL=... python -m tests.integration.trace_run [scheduled]

Sets OpenTelemetry's SDK with an in-memory exporter, starts a worker, then inside a span
``request`` submits ``square(x=3)`` (slowed down so it is still running) and ``total`` of its
result and 4, which waits for it in a join record. With ``scheduled``, a scheduler submits
``square(x=3)`` every second instead, and the run ends once the worker has run one. Prints
every finished span as one JSON line: name, kind, trace and span ids, parent, links, attributes.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import taskell
from examples.worker import Impl
from generated.demo import Client, registry
from tests.integration.sched_tick import SCHEDULES

tracer = trace.get_tracer("tests.trace_run")


squared = threading.Event()


class Traced(Impl):
    def square(self, ctx: taskell.Context[None], x: int) -> int:
        with tracer.start_as_current_span("inside square"):  # a span of the handler's own
            time.sleep(0.5)  # still running when `total` is submitted: it waits in a join record
            squared.set()
            return x * x


def describe(span: ReadableSpan) -> dict[str, object]:
    context = span.get_span_context()
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "links": [f"{link.context.span_id:016x}" for link in span.links],
        "attributes": dict(span.attributes or {}),
    }


def main() -> int:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    config = taskell.Config.load()
    if sys.argv[1:] == ["scheduled"]:
        with taskell.Worker(registry(Traced()), config, parallelism=1):
            scheduler = taskell.Scheduler(SCHEDULES, config)
            scheduler.start()
            try:
                assert squared.wait(30), "no scheduled square ran"
            finally:
                scheduler.stop()
            time.sleep(0.2)  # the worker's span ends right after the reply is handed on
    else:
        with (
            taskell.Worker(registry(Traced()), config, parallelism=2),
            taskell.connect(config=config) as conn,
        ):
            demo = Client(conn)
            with tracer.start_as_current_span("request"):
                square = demo.square(x=3)
                total = demo.total(parts=[square, 4])
            assert total.result(timeout=30) == 13
            time.sleep(0.2)  # the worker's span ends right after the reply is handed on
    provider.shutdown()
    for span in exporter.get_finished_spans():
        print(json.dumps(describe(span)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
