"""Wire rules (docs/wire.md) in one place: message properties, queue arguments, reply bodies."""

from __future__ import annotations

import json
import math
import time
import uuid
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from .config import Config
from .errors import ConfigError, TaskFailed, TimeLimitExceeded
from .spec import TaskSpec, known_spec
from .transport import Message, Transport
from .transport.delays import DUE_HEADER as DUE_HEADER  # when a delayed message is due (Unix ms)
from .transport.delays import MAX_DELAY_MS

FINGERPRINT_HEADER = "taskell-fingerprint"
REASON_HEADER = "taskell-reason"  # why a message was dead-lettered
QUEUE_HEADER = "taskell-queue"  # the task queue of a dead-lettered message or a join record
DELIVERIES_HEADER = "taskell-redeliveries"  # classic queues: times the task was redelivered
DELIVERY_COUNT_HEADER = "x-delivery-count"  # quorum queues: set by the broker itself
ATTEMPT_HEADER = "taskell-attempt"  # the attempt a task message is for (absent: 1)
EXPIRES_HEADER = "taskell-expires-at"  # ISO 8601 UTC; not started by then: never run
SUBMITTED_HEADER = "taskell-submitted-ms"  # Unix ms the task was published (queue wait metric)
# W3C trace context (OpenTelemetry, when installed): carried from a join record to its task
TRACE_HEADERS = ("traceparent", "tracestate")
MAX_PRIORITY = 9  # priorities run from 0 (lowest, the default) to 9
JSON = "application/json"

# Reply types (AMQP ``type`` of messages sent to ``reply_to``).
PROGRESS, RESULT, FAILED, ABORTED, REJECTED = "progress", "result", "failed", "aborted", "rejected"
RETRYING = "retrying"  # between two attempts: attempt, delay_s, error_type, message (not final)

# ``error_type`` of replies that do not come from a handler's own exception.
TASK_ABORTED = "taskell.TaskAborted"
PAYLOAD_ERROR = "taskell.PayloadError"
WORKER_CRASHED = "taskell.WorkerCrashed"
TIME_LIMIT_EXCEEDED = "taskell.TimeLimitExceeded"  # a failure; the body's ``error`` holds limit_s
TASK_EXPIRED = "taskell.TaskExpired"  # a failure that never ran: raised as TaskExpired

# Control messages (AMQP ``type``), broadcast to every worker on the abort exchange.
ABORT, INSPECT = "abort", "inspect"


def queue_arguments(config: Config, *, priorities: bool = False, queue: str = "") -> dict[str, Any]:
    """Arguments every task queue is declared with, identical on clients and workers.

    Quorum queues count deliveries: a message delivered ``delivery_limit`` times (its worker
    died on it each time) is dead-lettered to the dead-letter queue by the broker itself.
    ``priorities`` (a task on the queue declares a priority) adds ``x-max-priority``, which
    only classic queues take.

    Raises:
        ConfigError: ``priorities`` with ``queue_type = "quorum"`` (named ``queue`` in the message).
    """
    if priorities and config.queue_type == "quorum":
        raise ConfigError(
            "taskell.queue_type",
            f"quorum queues cannot order tasks by priority, and tasks on queue {queue or '?'} declare a"
            ' priority: use queue_type = "classic" for them, or remove their priority',
        )
    if priorities:
        return {"x-queue-type": "classic", "x-max-priority": MAX_PRIORITY}
    if config.queue_type == "quorum":
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": config.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": config.dead_letter_queue,
        }
    return {"x-queue-type": "classic"}


def dead_letter_queue_arguments(config: Config) -> dict[str, Any]:
    """The dead-letter queue is replicated like the task queues (quorum when configured)."""
    return {"x-queue-type": "quorum"} if config.queue_type == "quorum" else {}


def reply_queue_arguments(config: Config, extra: dict[str, Any]) -> dict[str, Any]:
    """Reply queues too: a classic queue whose node is down cannot even be declared again."""
    return {"x-queue-type": "quorum", **extra} if config.queue_type == "quorum" else dict(extra)


def task_message(
    spec: TaskSpec[Any, Any, Any],
    task_id: str,
    body: bytes,
    reply_to: str | None,
    *,
    priority: int | None = None,
    expires: float | None = None,
    delay: float = 0.0,
    headers: Mapping[str, Any] | None = None,
) -> Message:
    """The one AMQP message of a task submission.

    ``priority`` and ``expires`` (seconds) given per call override the spec's; a task that
    expires carries ``taskell-expires-at``: when it becomes due (now, or after ``delay``
    seconds) plus ``expires``. ``headers`` are added last (``taskell-attempt`` on a retry).
    """
    return compose_task(
        spec.name,
        spec.fingerprint,
        task_id,
        body,
        reply_to,
        priority=spec.priority if priority is None else priority,
        expires=spec.expires if expires is None else expires,
        delay=delay,
        headers=headers,
    )


def compose_task(
    task: str,
    fingerprint: str | None,
    task_id: str | None,
    body: bytes,
    reply_to: str | None,
    *,
    priority: int | None,
    expires: float | None,
    delay: float = 0.0,
    headers: Mapping[str, Any] | None = None,
) -> Message:
    """A task message from its parts, options already resolved (see ``task_message``)."""
    all_headers: dict[str, Any] = {FINGERPRINT_HEADER: fingerprint, SUBMITTED_HEADER: now_ms()}
    if expires is not None:
        all_headers[EXPIRES_HEADER] = utc_iso(
            datetime.now(UTC) + timedelta(seconds=max(delay, 0.0) + expires)
        )
    all_headers.update(headers or {})
    return Message(
        body=body,
        type=task,
        message_id=task_id,
        reply_to=reply_to,
        content_type=JSON,
        persistent=True,
        headers=all_headers,
        priority=priority,
    )


def now_ms() -> int:
    """The time now in whole Unix milliseconds (an AMQP table holds no floats, as pika writes it)."""
    return int(time.time() * 1000)


def utc_iso(moment: datetime) -> str:
    """``moment`` as ISO 8601 in UTC, to the millisecond (``2026-01-31T12:00:00.000+00:00``)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def dead_letter(message: Message, queue: str, reason: str) -> Message:
    """The copy of task ``message`` (taken from ``queue``) put in the dead-letter queue."""
    return Message(
        body=message.body,
        type=message.type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        content_type=message.content_type,
        persistent=True,
        headers={**message.headers, REASON_HEADER: reason, QUEUE_HEADER: queue},
        priority=message.priority,
    )


def attempt_of(message: Message) -> int:
    """The attempt a task message is for: its ``taskell-attempt`` header, 1 when absent
    (or not a positive number)."""
    try:
        attempt = int(message.headers.get(ATTEMPT_HEADER, 1))
    except (TypeError, ValueError):
        return 1
    return max(attempt, 1)


def retry_copy(message: Message, attempt: int) -> Message:
    """The copy of task ``message`` that runs as attempt number ``attempt``: same task id,
    body, reply queue, priority and headers, but none of the redelivery counts (and other
    broker-set ``x-`` headers) of the delivery that failed: a new attempt starts afresh. Nor
    its expiry: ``expires`` is for a task that never started, and this one ran."""
    headers = {
        key: value
        for key, value in message.headers.items()
        if key not in (DELIVERIES_HEADER, EXPIRES_HEADER) and not key.startswith("x-")
    }
    headers[ATTEMPT_HEADER] = attempt
    headers[SUBMITTED_HEADER] = now_ms()  # its wait in the queue starts now
    return Message(
        body=message.body,
        type=message.type,
        message_id=message.message_id,
        correlation_id=message.correlation_id,
        reply_to=message.reply_to,
        content_type=message.content_type,
        persistent=True,
        headers=headers,
        priority=message.priority,
    )


def retrying_body(attempt: int, delay_s: float, error_type: str, message: str) -> bytes:
    """The JSON body of a ``retrying`` notice: attempt number ``attempt`` failed with
    ``error_type``/``message``; the next starts ``delay_s`` seconds later."""
    return json.dumps(
        {"attempt": attempt, "delay_s": delay_s, "error_type": error_type, "message": message}
    ).encode()


def reply(kind: str, task_id: str, body: bytes) -> Message:
    """A progress/retrying/result/failed/aborted/rejected notice for task ``task_id``; all but
    progress are persistent, so a confirmed final reply survives a broker restart."""
    return Message(
        body=body, type=kind, correlation_id=task_id, content_type=JSON, persistent=kind != PROGRESS
    )


def error_body(error_type: str, message: str, traceback: str = "") -> bytes:
    """The JSON body of a failed/aborted/rejected notice."""
    return json.dumps({"error_type": error_type, "message": message, "traceback": traceback}).encode()


def time_limit_body(limit_s: float, traceback: str) -> bytes:
    """The ``failed`` body of a handler stopped after its time limit of ``limit_s`` seconds;
    ``error`` holds the limit, as it does a declared error's fields."""
    message = f"stopped after its time limit of {limit_s:g} s"
    body = {"error_type": TIME_LIMIT_EXCEEDED, "message": message, "traceback": traceback}
    return json.dumps({**body, "error": {"limit_s": float(limit_s)}}).encode()


def failure_body(spec: TaskSpec[Any, Any, Any], exc: Exception, traceback: str) -> bytes:
    """The ``failed`` body for an exception a handler raised: a declared error of the task
    also carries its fields under ``error``; any other exception is named by its class."""
    for declared in spec.errors:
        if isinstance(exc, declared.exception):
            try:
                values = {name: getattr(exc, name) for name in declared.fields.model_fields}
                fields = declared.fields.model_validate(values, strict=True).model_dump(mode="json")
            except (AttributeError, ValidationError) as bad:
                detail = describe(bad) if isinstance(bad, ValidationError) else str(bad)
                message = f"{spec.name}: error {declared.name} does not fit its type: {detail}"
                return error_body(PAYLOAD_ERROR, message, traceback)
            body = {"error_type": declared.name, "message": str(exc.message), "traceback": traceback}
            return json.dumps({**body, "error": fields}).encode()
    return error_body(type_name(type(exc)), str(exc), traceback)


def task_failed(spec: TaskSpec[Any, Any, Any] | None, task_id: str, info: Mapping[str, Any]) -> TaskFailed:
    """The exception for a ``failed`` body: an instance of the generated class when the error
    is declared by the task (``spec``, else the spec of ``info["task"]`` if known here) and its
    fields decode; a plain ``TaskFailed`` otherwise."""
    task = str(info.get("task")) if spec is None else spec.name
    error_type, message = str(info.get("error_type")), str(info.get("message", ""))
    traceback = str(info.get("traceback", ""))
    if error_type == TIME_LIMIT_EXCEEDED:
        error = info.get("error")
        limit = error.get("limit_s") if isinstance(error, Mapping) else None
        if isinstance(limit, (int, float)) and not isinstance(limit, bool):
            return TimeLimitExceeded(task_id, task, float(limit), message, traceback)
    spec = spec or known_spec(task)
    declared = spec.declared_error(error_type) if spec is not None else None
    if declared is not None and "error" in info:
        try:
            fields = declared.fields.model_validate_json(json.dumps(info["error"]))
            exc = declared.exception(**{name: getattr(fields, name) for name in declared.fields.model_fields})
        except (ValidationError, TypeError):
            pass  # not what this client's schema declares: untyped
        else:
            TaskFailed.__init__(exc, task_id, task, error_type, message, traceback)
            return exc
    return TaskFailed(task_id, task, error_type, message, traceback)


def control_request(kind: str, request_id: str, reply_to: str | None, body: Mapping[str, Any]) -> Message:
    """An ``abort``/``inspect`` request to every worker; answers come to ``reply_to``."""
    return Message(
        body=json.dumps(body).encode(),
        type=kind,
        message_id=request_id,
        reply_to=reply_to,
        content_type=JSON,
    )


def control_reply(kind: str, request_id: str | None, answer: dict[str, Any]) -> Message:
    """One worker's answer to a control request (type ``abort-reply``/``inspect-reply``)."""
    return Message(
        body=json.dumps(answer).encode(), type=f"{kind}-reply", correlation_id=request_id, content_type=JSON
    )


def control_queue() -> str:
    """A worker's own control queue, bound to the abort exchange; named (not server-named) so
    a reconnect can declare and bind it again."""
    return f"taskell.control.{uuid.uuid4().hex}"


def describe(exc: ValidationError) -> str:
    """A one-line-per-error summary naming each field, without echoing whole inputs."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "(root)"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def type_name(kind: type) -> str:
    """``module.QualName`` of an exception class, bare for builtins."""
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def encode_result(spec: TaskSpec[Any, Any, Any], value: Any) -> tuple[str, bytes]:
    """The final reply for a handler's return value: ``result``, or ``failed`` naming the task
    and field when the value does not fit the result type (also records built with
    ``model_construct``: serialization warnings are errors)."""
    try:
        return RESULT, spec.result.dump_json(
            spec.result.validate_python(value, strict=True), warnings="error"
        )
    except ValidationError as exc:
        detail = describe(exc)
    except ValueError as exc:
        # Instances are not re-validated; validating their plain fields names the bad one.
        try:
            spec.result.validate_python(_plain(value))
            detail = str(exc)
        except ValidationError as field_exc:
            detail = describe(field_exc)
    return FAILED, error_body(PAYLOAD_ERROR, f"{spec.name}: result does not fit its type: {detail}")


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return {name: _plain(item) for name, item in value.__dict__.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def encode_progress(spec: TaskSpec[Any, Any, Any], value: Any) -> bytes:
    """JSON of a progress value; raises ValueError (or ValidationError) if it does not fit."""
    return spec.progress.dump_json(spec.progress.validate_python(value, strict=True), warnings="error")


# Dependencies (see docs/dependencies.md): outcome events, join partitions.

OUTCOMES_EXCHANGE = "taskell.outcomes"  # direct; routing key = the completed task's id
JOIN_PARTITIONS = 4
JOIN, OUTCOME, SYNC = "join", "outcome", "sync"  # AMQP types of join-queue and sync messages
KIND_HEADER = "taskell-kind"  # an outcome's reply kind: result, failed, aborted, rejected
TASK_HEADER = "taskell-task"  # wire name of the task a join record or outcome is about
DEPS_HEADER = "taskell-deps"  # a join record's dependency ids
REFS_HEADER = "taskell-refs"  # a join record's [[path, dependency id], ...] as JSON
DEPENDENCY_FAILED = "taskell.DependencyFailed"
# A join record's submission options, for the task it fires (its ``priority`` is the record's):
# (whole milliseconds: AMQP tables, as pika writes them, hold no floats)
DELAY_HEADER = "taskell-delay-ms"  # the task waits this long once its dependencies are done
ETA_HEADER = "taskell-eta"  # ISO 8601: the task is due then, or when they are done if later
EXPIRES_AFTER_HEADER = "taskell-expires-ms"  # the task expires this long after it is due


def join_options(*, delay: float | None, eta: datetime | None, expires: float | None) -> dict[str, Any]:
    """The headers of a join record's options that are set."""
    headers: dict[str, Any] = {}
    if delay:
        headers[DELAY_HEADER] = math.ceil(round(delay * 1000, 3))  # never shortened
    if eta is not None:
        headers[ETA_HEADER] = utc_iso(eta)
    if expires is not None:
        headers[EXPIRES_AFTER_HEADER] = round(expires * 1000)
    return headers


def joined_task(record: Message, body: bytes) -> tuple[Message, float]:
    """The task a join record fires, with ``body`` as its args, and its delay from now."""
    headers = record.headers
    delay = (_number(headers.get(DELAY_HEADER)) or 0.0) / 1000
    if ETA_HEADER in headers:
        try:
            due = datetime.fromisoformat(str(headers[ETA_HEADER]))
            delay = (due - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            delay = 0.0
    delay = min(max(delay, 0.0), MAX_DELAY_MS / 1000)  # clients check it; never a ValueError here
    task = compose_task(
        str(headers.get(TASK_HEADER)),
        _text(headers.get(FINGERPRINT_HEADER)),
        record.message_id,
        body,
        record.reply_to,
        priority=record.priority,
        expires=_milliseconds(headers.get(EXPIRES_AFTER_HEADER)),
        delay=delay,
        headers={key: headers[key] for key in TRACE_HEADERS if key in headers},
    )
    return task, delay


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _milliseconds(value: Any) -> float | None:
    number = _number(value)
    return None if number is None else number / 1000


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def join_queue(task_id: str) -> str:
    """The join partition that holds task ``task_id``'s record until its dependencies end."""
    return f"taskell.join.{zlib.crc32(task_id.encode()) % JOIN_PARTITIONS}"


def join_queues() -> list[str]:
    """Every join partition queue."""
    return [f"taskell.join.{n}" for n in range(JOIN_PARTITIONS)]


def declare_joins(transport: Transport, config: Config) -> list[str]:
    """Declare the outcomes exchange and every join partition (clients before their first
    join record, joiners before consuming); returns the partitions' names."""
    transport.declare_exchange(OUTCOMES_EXCHANGE, "direct").result()
    for name in join_queues():
        transport.declare_queue(name, durable=True, arguments=join_queue_arguments(config)).result()
    return join_queues()


def join_queue_arguments(config: Config) -> dict[str, Any]:
    """Join partitions: one active consumer each, so one joiner holds a partition's state."""
    return {**queue_arguments(config), "x-single-active-consumer": True}


def outcome(task_id: str, task: str, kind: str, body: bytes) -> Message:
    """The event that task ``task_id`` ended (``kind``), for joiners waiting on it."""
    return Message(
        body=body,
        type=OUTCOME,
        correlation_id=task_id,
        content_type=JSON,
        persistent=True,
        headers={KIND_HEADER: kind, TASK_HEADER: task},
    )


def dependency_failed_body(dependency_id: str, dependency_task: str, kind: str, body: bytes) -> bytes:
    """The failure of a task whose dependency ``dependency_id`` ended with ``kind``/``body``;
    a failure that was itself a dependency failure keeps its root cause."""
    try:
        info = json.loads(body)
    except ValueError:
        info = {}
    if not isinstance(info, dict):
        info = {}
    if info.get("error_type") == DEPENDENCY_FAILED and isinstance(info.get("cause"), dict):
        root_id, cause = str(info.get("dependency_id")), info["cause"]
    else:
        root_id = dependency_id
        cause = {
            "kind": kind,
            "task": dependency_task,
            "error_type": str(info.get("error_type", "")),
            "message": str(info.get("message", "")),
            "traceback": str(info.get("traceback", "")),
        }
        if "error" in info:  # a declared error's fields
            cause["error"] = info["error"]
    message = f"dependency {root_id} ({cause.get('task')}) {cause.get('kind')}: {cause.get('message')}"
    return json.dumps(
        {
            "error_type": DEPENDENCY_FAILED,
            "message": message,
            "traceback": "",
            "dependency_id": root_id,
            "cause": cause,
        }
    ).encode()
