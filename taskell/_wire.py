"""Wire rules of SPEC §7 in one place: message properties, queue arguments, reply bodies."""

from __future__ import annotations

import json
import ssl
from typing import Any

import pika
from pydantic import BaseModel, ValidationError

from ._transport import Message
from .config import Config
from .spec import TaskSpec

FINGERPRINT_HEADER = "taskell-fingerprint"
REASON_HEADER = "taskell-reason"
JSON = "application/json"

# Reply types (AMQP ``type`` of messages sent to ``reply_to``).
PROGRESS, RESULT, FAILED, ABORTED, REJECTED = "progress", "result", "failed", "aborted", "rejected"


def pika_parameters(url: str, config: Config) -> pika.URLParameters:
    """Connection parameters for ``url`` with the config's heartbeat, timeout and TLS files."""
    params = pika.URLParameters(url)
    params.heartbeat = config.heartbeat
    params.socket_timeout = config.connect_timeout
    params.stack_timeout = config.connect_timeout
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.client_properties = {"connection_name": "taskell"}
    mq = config.rabbitmq
    if url.startswith("amqps://") and (mq.ca_file or mq.cert_file):
        context = ssl.create_default_context(cafile=mq.ca_file)
        if mq.cert_file:
            context.load_cert_chain(mq.cert_file, mq.key_file)
        params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
    return params


def queue_arguments(config: Config) -> dict[str, Any]:
    """Arguments every task queue is declared with, identical on clients and workers."""
    return {"x-queue-type": config.queue_type}


def task_message(spec: TaskSpec[Any, Any, Any], task_id: str, body: bytes, reply_to: str | None) -> Message:
    """The one AMQP message of a task submission."""
    return Message(
        body=body,
        type=spec.name,
        message_id=task_id,
        reply_to=reply_to,
        content_type=JSON,
        persistent=True,
        headers={FINGERPRINT_HEADER: spec.fingerprint},
    )


def reply(kind: str, task_id: str, body: bytes) -> Message:
    """A progress/result/failed/aborted/rejected notice for task ``task_id``."""
    return Message(body=body, type=kind, correlation_id=task_id, content_type=JSON)


def error_body(error_type: str, message: str, traceback: str = "") -> bytes:
    """The JSON body of a failed/aborted/rejected notice."""
    return json.dumps({"error_type": error_type, "message": message, "traceback": traceback}).encode()


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
    return FAILED, error_body("taskell.PayloadError", f"{spec.name}: result does not fit its type: {detail}")


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
