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

__all__ = ["Base64Bytes", "TaskSpec"]

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
class TaskSpec(Generic[A, P, R]):
    """One task's wire identity and its concrete codecs; generated once per task.

    Attributes:
        name: the wire name ``<package>.<task>`` (the AMQP ``type``).
        queue: the queue tasks are submitted to.
        fingerprint: hex sha256 of the task's canonical signature.
        args: the pydantic model of the task's arguments.
        progress: encoder/decoder of progress values.
        result: encoder/decoder of the result value.
    """

    name: str
    queue: str
    fingerprint: str
    args: type[A]
    progress: TypeAdapter[P]
    result: TypeAdapter[R]
