"""Live pydantic types built straight from the IR, with no generated code, eval or exec.

``taskell call`` uses these to validate and encode JSON arguments; the schema validator uses
them to check defaults. Their JSON forms are the generated code's: same field order, same
types, same enum values.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import json
import typing
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from ..spec import Base64Bytes, RetryPolicy, TaskSpec
from .model import JSON, DictOf, Enum, Field, ListOf, Optional, Prim, Record, Schema, Task, TupleOf, TypeExpr
from .naming import args_model_name

__all__ = ["LiveTypes", "build_specs", "python_type"]

_PRIMS: dict[str, object] = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "bytes": Base64Bytes,
    "None": None,
    "datetime": pydantic.AwareDatetime,
    "date": datetime.date,
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
}

_CONFIG = pydantic.ConfigDict(frozen=True, extra="forbid")


def python_type(expr: TypeExpr, ns: Mapping[str, object]) -> Any:
    """The runtime type of ``expr``; named types come from ``ns`` (or a ForwardRef)."""
    if isinstance(expr, Prim):
        return _PRIMS[expr.name]
    if isinstance(expr, ListOf):
        return list[python_type(expr.item, ns)]  # type: ignore[misc]
    if isinstance(expr, DictOf):
        return dict[str, python_type(expr.value, ns)]  # type: ignore[misc]
    if isinstance(expr, TupleOf):
        return tuple[python_type(expr.item, ns), ...]  # type: ignore[misc]
    if isinstance(expr, Optional):
        # typing.Optional, not "| None": the inner type may still be a ForwardRef.
        return typing.Optional[python_type(expr.inner, ns)]  # noqa: UP045
    return ns.get(expr.name) or typing.ForwardRef(expr.name)


class LiveTypes:
    """The schema's named types as live classes, plus a cache of ``TypeAdapter``s.

    Builds one ``enum.Enum`` per enum (value == name) and one frozen pydantic model per
    record (``extra="forbid"``). Recursive records are resolved by ``model_rebuild``.

    Args:
        types: the schema's named types.
        module: the ``__module__`` given to the built classes.
    """

    def __init__(self, types: Sequence[Record | Enum], module: str = "taskell.live") -> None:
        self.module = module
        self.classes: dict[str, object] = {}
        self._adapters: dict[TypeExpr, pydantic.TypeAdapter[Any]] = {}
        for t in types:
            if isinstance(t, Enum):
                members = [(m, m) for m in t.members]
                self.classes[t.name] = enum.Enum(t.name, members, module=module)
        for t in types:
            if isinstance(t, Record):
                self.classes[t.name] = self.model(t.name, t.fields)
        for t in types:
            if isinstance(t, Record):
                model = typing.cast(type[pydantic.BaseModel], self.classes[t.name])
                model.model_rebuild(_types_namespace=self.classes)

    def model(self, name: str, fields: Sequence[Field]) -> type[pydantic.BaseModel]:
        """A frozen model with ``fields``; defaults are decoded from JSON on each use."""
        definitions: dict[str, Any] = {}
        for spec in fields:
            annotation = python_type(spec.type, self.classes)
            if spec.has_default:
                factory = functools.partial(self.decode, spec.type, spec.default)
                definitions[spec.name] = (annotation, pydantic.Field(default_factory=factory))
            else:
                definitions[spec.name] = (annotation, ...)
        return pydantic.create_model(name, __config__=_CONFIG, __module__=self.module, **definitions)

    def adapter(self, expr: TypeExpr) -> pydantic.TypeAdapter[Any]:
        """A (cached) ``TypeAdapter`` for ``expr``."""
        if expr not in self._adapters:
            self._adapters[expr] = pydantic.TypeAdapter(python_type(expr, self.classes))
        return self._adapters[expr]

    def decode(self, expr: TypeExpr, value: JSON) -> Any:
        """Decode ``value``, a default in JSON form, as ``expr``, strictly.

        Raises:
            pydantic.ValidationError: the value does not fit the type.
        """
        return self.adapter(expr).validate_json(json.dumps(value), strict=True)


def build_specs(schema: Schema, fingerprints: Mapping[str, str]) -> dict[str, TaskSpec[Any, Any, Any]]:
    """One live ``TaskSpec`` per task, keyed by task name (not wire name).

    Args:
        schema: a validated schema.
        fingerprints: each task's fingerprint, by task name.
    """
    live = LiveTypes(schema.types, f"taskell.live.{schema.package}")
    specs: dict[str, TaskSpec[Any, Any, Any]] = {}
    for task in schema.tasks:
        specs[task.name] = TaskSpec(
            name=schema.wire_name(task),
            queue=task.queue,
            fingerprint=fingerprints[task.name],
            args=live.model(args_model_name(task.name), task.args),
            progress=pydantic.TypeAdapter(python_type(task.progress, live.classes)),
            result=pydantic.TypeAdapter(python_type(task.result, live.classes)),
            retry=_retry_policy(schema, task),
            time_limit=task.time_limit,
            expires=task.expires,
            priority=task.priority,
            queue_priorities=schema.queue_priorities(task),
        )
    return specs


def _retry_policy(schema: Schema, task: Task) -> RetryPolicy | None:
    r = task.retry
    if r is None:
        return None
    on = None if r.on is None else tuple(schema.error_type(name) for name in r.on)
    return RetryPolicy(r.attempts, r.backoff, r.delay, r.max_delay, on)
