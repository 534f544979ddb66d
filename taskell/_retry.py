"""Retries: whether a failed attempt of a task runs again, and when (the task's ``RetryPolicy``).

The worker asks ``retry_of`` once a handler's run ended; a ``Retry`` it gets back is carried
out by ``_settle`` (a delayed copy of the task message, a ``retrying`` notice, then the ack).
Only a handler's own failure is retried: an abort, a payload error (bad args, a result or
error that does not fit its type), an expired task and a dependency failure never are.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from . import _wire
from .spec import TaskSpec

__all__ = ["NEVER_RETRIED", "Retry", "retry_of"]

NEVER_RETRIED = frozenset(
    {_wire.PAYLOAD_ERROR, _wire.TASK_ABORTED, _wire.TASK_EXPIRED, _wire.DEPENDENCY_FAILED}
)


@dataclass(frozen=True)
class Retry:
    """Attempt number ``attempt`` failed with ``error_type``/``message``; the next one starts
    ``delay`` seconds later."""

    attempt: int
    delay: float
    error_type: str
    message: str


def retry_of(spec: TaskSpec[Any, Any, Any], kind: str, body: bytes, attempt: int) -> Retry | None:
    """The retry due after attempt number ``attempt`` ended with reply ``kind``/``body``, or
    None if that reply is final."""
    policy = spec.retry
    if policy is None or kind != _wire.FAILED:
        return None
    try:
        info = json.loads(body)
    except ValueError:
        return None
    if not isinstance(info, dict):
        return None
    error_type = str(info.get("error_type", ""))
    if error_type in NEVER_RETRIED or not policy.retries(error_type, attempt):
        return None
    return Retry(attempt, policy.delay_after(attempt), error_type, str(info.get("message", "")))
