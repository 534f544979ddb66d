"""What generated code hands the runtime: one ``TaskSpec`` per task, and the wire types.

A ``TaskSpec`` carries the task's own concrete encoder and decoder (a pydantic args model and
``TypeAdapter``s for progress and result), so nothing on the wire goes through ``Any``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, PlainSerializer, TypeAdapter, ValidationInfo, WrapValidator
from pydantic_core import PydanticCustomError

from .errors import TaskFailed

__all__ = ["Base64Bytes", "ErrorSpec", "TaskSpec"]

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
    """

    name: str
    queue: str
    fingerprint: str
    args: type[A]
    progress: TypeAdapter[P]
    result: TypeAdapter[R]
    errors: tuple[ErrorSpec, ...] = ()

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
