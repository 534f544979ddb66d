"""OpenTelemetry tracing (SPEC §11), when the API is installed (the ``otel`` extra) and the
application set a tracer provider.

- A submission is a producer span (``send <task>``) whose W3C trace context the propagator
  puts in the task message's headers (``traceparent``, ``tracestate``); a task with
  dependencies links it to its dependencies' own submissions, and its join record carries the
  context to the task the joiner fires.
- The worker continues that trace in a consumer span (``process <task>``) around the handler
  (``TracingObserver``); in a thread pool it is the current span while the handler runs.

Without OpenTelemetry nothing here imports it: ``INSTALLED`` is False and every entry point
returns at once.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any

from ._observe import RESULT, Observer, Outcome, _nothing
from .transport import Delivery

__all__ = ["INSTALLED", "TracingObserver", "sending"]


def _installed() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False


INSTALLED = _installed()
# The API's modules, imported on first use (through importlib: the extra may be missing, and
# a user's mypy --strict must not stumble on it then).
trace: Any = None
propagate: Any = None
context: Any = None
_tracer: Any = None


def _active_tracer() -> Any:
    """taskell's tracer once the application has set a tracer provider, else None."""
    global trace, propagate, context, _tracer
    if _tracer is not None or not INSTALLED:
        return _tracer
    if trace is None:
        modules = [
            importlib.import_module(f"opentelemetry.{name}") for name in ("propagate", "context", "trace")
        ]
        propagate, context, trace = modules  # trace last: the others are set once it is
    if not _provider_may_be_set() or isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return None  # not configured (yet): no spans, no headers
    from ._version import __version__

    _tracer = trace.get_tracer("taskell", __version__)
    return _tracer


def _provider_may_be_set() -> bool:
    """False when surely no tracer provider is set, known cheaply: this is asked per task, and
    the API's ``get_tracer_provider`` reads the environment each time until one is set. A
    provider named in the environment is loaded by the API on request: then always ask it."""
    global _env_provider
    if _env_provider is None:
        _env_provider = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ
    return _env_provider or getattr(trace, "_TRACER_PROVIDER", _UNKNOWN) is not None


_UNKNOWN = object()  # an API without that global (private, set once): always ask it
_env_provider: bool | None = None


def _attributes(task: str, queue: str, task_id: str, operation: str) -> dict[str, Any]:
    # Messaging semantic conventions. Tasks go through the default exchange with the queue as
    # routing key, so the queue is the destination that says something.
    return {
        "messaging.system": "rabbitmq",
        "messaging.destination.name": queue,
        "messaging.message.id": task_id,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "taskell.task": task,
    }


@contextlib.contextmanager
def _span(
    tracer: Any,
    task: str,
    queue: str,
    task_id: str,
    headers: MutableMapping[str, Any],
    links: Sequence[Any],
) -> Iterator[Any]:
    with tracer.start_as_current_span(
        f"send {task}",
        kind=trace.SpanKind.PRODUCER,
        attributes=_attributes(task, queue, task_id, "send"),
        links=[trace.Link(context) for context in links if context is not None],
    ) as span:
        propagate.inject(headers)
        yield span.get_span_context()


def sending(
    task: str, queue: str, task_id: str, headers: MutableMapping[str, Any], links: Sequence[Any] = ()
) -> contextlib.AbstractContextManager[Any]:
    """A context manager around publishing task message ``task_id``: the producer span, whose
    context goes into ``headers`` and is what the ``with`` gives (None when not tracing).
    ``links`` are span contexts given earlier (the submissions of the task's dependencies)."""
    tracer = _active_tracer()
    if tracer is None:
        return contextlib.nullcontext()
    return _span(tracer, task, queue, task_id, headers, links)


class TracingObserver(Observer):
    """The worker's consumer span around each handler, continuing the submission's trace."""

    def started(self, delivery: Delivery, task: str) -> Outcome:
        tracer = _active_tracer()
        if tracer is None:
            return _nothing
        message = delivery.message
        attributes = _attributes(task, delivery.queue, message.message_id or "", "process")
        attributes["messaging.rabbitmq.message.delivery_tag"] = delivery.tag
        span = tracer.start_span(
            f"process {task}",
            context=propagate.extract(message.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(span))

        def finished(outcome: str) -> None:
            span.set_attribute("taskell.outcome", outcome)
            if outcome != RESULT:
                span.set_status(trace.StatusCode.ERROR, outcome)
                span.set_attribute("error.type", outcome)
            span.end()
            context.detach(token)

        return finished
