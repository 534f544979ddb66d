"""What generated code hands the runtime: one ``TaskSpec`` per task, and the wire types.

A ``TaskSpec`` carries the task's own concrete encoder and decoder (a pydantic args model and
``TypeAdapter``s for progress and result), so nothing on the wire goes through ``Any``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, PlainSerializer, TypeAdapter, ValidationInfo, WrapValidator
from pydantic_core import PydanticCustomError

from .errors import TaskFailed

__all__ = ["Base64Bytes", "ErrorSpec", "RetryPolicy", "TaskSpec"]

A = TypeVar("A", bound=BaseModel)
P = TypeVar("P")
R = TypeVar("R")


def _validate_bytes(value: Any, handler: Any, info: ValidationInfo) -> bytes:
    # In JSON, bytes arrive as standard, padded base64; in Python they are plain bytes.
    if info.mode == "json":
        if not isinstance(value, str):
            raise PydanticCustomError("base64", "expected a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise PydanticCustomError("base64", "invalid base64: {error}", {"error": str(exc)}) from None
    result: bytes = handler(value)
    return result


def _serialize_bytes(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


Base64Bytes = Annotated[
    bytes,
    WrapValidator(_validate_bytes),
    PlainSerializer(_serialize_bytes, return_type=str, when_used="json"),
]
"""``bytes`` whose JSON form is standard, padded base64 (docs/wire.md)."""


@dataclass(frozen=True, eq=False)
class ErrorSpec:
    """A declared error's wire identity and codec; generated once per error.

    Attributes:
        name: the wire name ``<package>.<ErrorName>`` (the ``error_type`` of its failures).
        exception: the generated exception class; its constructor takes the fields by keyword.
        fields: the pydantic model of its fields (the JSON under the failure's ``error`` key).
    """

    name: str
    exception: type[TaskFailed]
    fields: type[BaseModel]


@dataclass(frozen=True)
class RetryPolicy:
    """A task's ``retry:`` declaration (docs/schema.md).

    Attributes:
        attempts: all attempts, the first included (so 1 never retries).
        backoff: ``fixed`` waits ``delay`` each time; ``exponential`` doubles it after each retry.
        delay: seconds before the first retry.
        max_delay: the longest wait between two attempts, or None for no cap.
        on: the ``error_type``s that are retried (declared errors as ``<package>.<Error>``,
            and ``taskell.TimeLimitExceeded``); None retries any handler failure.
    """

    attempts: int
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: float = 1.0
    max_delay: float | None = None
    on: tuple[str, ...] | None = None

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1 for the first) failed."""
        wait = self.delay if self.backoff == "fixed" else self.delay * 2 ** (attempt - 1)
        return wait if self.max_delay is None else min(wait, self.max_delay)

    def retries(self, error_type: str, attempt: int) -> bool:
        """Whether a failure ``error_type`` of attempt number ``attempt`` is tried again."""
        return attempt < self.attempts and (self.on is None or error_type in self.on)


@dataclass(frozen=True, eq=False)
class TaskSpec(Generic[A, P, R]):
    """One task's wire identity and its concrete codecs; generated once per task.

    Attributes:
        name: the wire name ``<package>.<task>`` (the AMQP ``type``).
        queue: the queue tasks are submitted to.
        fingerprint: hex sha256 of the task's canonical signature.
        args: the pydantic model of the task's arguments.
        progress: encoder/decoder of progress values.
        result: encoder/decoder of the result value.
        errors: the errors the task declares (``raises``); others reach clients untyped.
        retry: the retry policy, or None (a failure is final).
        time_limit: seconds a handler may run before the worker stops it, or None.
        expires: seconds after it became due that an unstarted task is dropped, or None.
        priority: the default priority (0 lowest, 9 highest), or None (0).
        queue_priorities: the task's queue is declared with priorities (some task of the
            schema on the same queue declares ``priority``).
    """

    name: str
    queue: str
    fingerprint: str
    args: type[A]
    progress: TypeAdapter[P]
    result: TypeAdapter[R]
    errors: tuple[ErrorSpec, ...] = ()
    retry: RetryPolicy | None = None
    time_limit: float | None = None
    expires: float | None = None
    priority: int | None = None
    queue_priorities: bool = False

    def __post_init__(self) -> None:
        if self.errors:
            _SPECS[self.name] = self

    def declared_error(self, error_type: str) -> ErrorSpec | None:
        """The declared error whose wire name is ``error_type``, if any."""
        return next((e for e in self.errors if e.name == error_type), None)


_SPECS: dict[str, TaskSpec[Any, Any, Any]] = {}
"""The specs with declared errors built in this process, by wire name: how a dependency's
failure, which names its task but not its spec, finds the task's declared errors."""


def known_spec(name: str) -> TaskSpec[Any, Any, Any] | None:
    """The spec of task ``name`` if this process has built it."""
    return _SPECS.get(name)
