"""Pure naming rules: which schema names are allowed, and the Python names derived from them."""

from __future__ import annotations

import keyword
import re

from pydantic import BaseModel

__all__ = [
    "RESERVED_ARGS",
    "args_model_name",
    "check_enum_member",
    "check_field_name",
    "check_package_name",
    "check_schedule_name",
    "check_task_name",
    "check_type_name",
    "spec_constant_name",
]

# Fixed rather than keyword.softkwlist, so the rules do not depend on the running Python.
SOFT_KEYWORDS = frozenset({"_", "case", "match", "type"})

BASEMODEL_ATTRIBUTES = frozenset(name for name in dir(BaseModel) if not name.startswith("_"))

# Builtins that generated annotations use: a model field of that name would shadow them in
# the class body.
SHADOWED_BUILTINS = frozenset({"bool", "bytes", "dict", "float", "int", "list", "object", "str", "tuple"})

RESERVED_ARGS = frozenset({"after", "self"})
"""Argument names every stub already uses: ``after`` (order-only dependencies) and ``self``."""

# What the generated exception classes inherit from taskell.TaskFailed and Exception.
TASK_FAILED_ATTRIBUTES = frozenset(
    {"args", "task_id", "task", "error_type", "message", "traceback", "with_traceback", "add_note"}
)

RESERVED_TYPES = frozenset({"AsyncClient", "AsyncHandlers", "Client", "Handlers", "SCHEDULES"})
"""Type names the generated package exports itself."""

RESERVED_TASKS = frozenset({"schedules"})
"""Task names whose spec constant would be a name the generated package exports itself."""

ENUM_RESERVED = frozenset({"mro", "name", "value"})

_LOWER = re.compile(r"[a-z][a-z0-9_]*\Z")
_PASCAL = re.compile(r"[A-Z][A-Za-z0-9]*\Z")


def _common(name: str, what: str) -> str | None:
    if not name.isidentifier():
        return f"{what} {name!r} is not a Python identifier"
    if keyword.iskeyword(name):
        return f"{what} {name!r} is a Python keyword"
    if name in SOFT_KEYWORDS:
        return f"{what} {name!r} is a Python soft keyword"
    if name.startswith("_"):
        return f"{what} {name!r} must not start with '_'"
    return None


def _lower(name: str, what: str) -> str | None:
    problem = _common(name, what)
    if problem is None and not _LOWER.match(name):
        problem = f"{what} {name!r} must be a lowercase identifier ([a-z][a-z0-9_]*)"
    return problem


def check_package_name(name: str) -> str | None:
    """Return why ``name`` is not a valid package name, or None if it is."""
    return _lower(name, "package name")


def check_task_name(name: str) -> str | None:
    """Return why ``name`` is not a valid task name, or None if it is."""
    problem = _lower(name, "task name")
    if problem is None and name in RESERVED_TASKS:
        problem = f"task name {name!r} is reserved by the generated package (its {spec_constant_name(name)})"
    return problem


def check_schedule_name(name: str) -> str | None:
    """Return why ``name`` is not a valid schedule name, or None if it is."""
    return _lower(name, "schedule name")


def check_field_name(name: str, what: str = "field name") -> str | None:
    """Return why ``name`` is not a valid record field or task argument name, or None."""
    problem = _lower(name, what)
    if problem is not None:
        return problem
    if name.startswith("model_") or name in BASEMODEL_ATTRIBUTES:
        return f"{what} {name!r} would shadow the pydantic BaseModel attribute {name!r}"
    if name in SHADOWED_BUILTINS:
        return f"{what} {name!r} would shadow the builtin type {name!r} in generated models"
    if name in RESERVED_ARGS:
        return f"{what} {name!r} is reserved by generated stubs"
    return None


def check_error_field_name(name: str) -> str | None:
    """Return why ``name`` is not a valid field name of an error, or None if it is."""
    problem = check_field_name(name)
    if problem is None and name in TASK_FAILED_ATTRIBUTES:
        problem = f"field name {name!r} would shadow the attribute {name!r} of taskell.TaskFailed"
    return problem


def check_type_name(name: str) -> str | None:
    """Return why ``name`` is not a valid record or enum name, or None if it is."""
    problem = _common(name, "type name")
    if problem is None and not _PASCAL.match(name):
        problem = f"type name {name!r} must be PascalCase ([A-Z][A-Za-z0-9]*)"
    if problem is None and name in RESERVED_TYPES:
        problem = f"type name {name!r} is reserved by the generated package"
    return problem


def check_enum_member(name: str) -> str | None:
    """Return why ``name`` is not a valid enum member, or None if it is."""
    problem = _common(name, "enum member")
    if problem is None and name in ENUM_RESERVED:
        problem = f"enum member {name!r} would shadow an enum.Enum attribute"
    return problem


def pascal_case(name: str) -> str:
    """``make_thumb`` -> ``MakeThumb``."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def args_model_name(task: str) -> str:
    """The name of a task's generated arguments model: ``sum`` -> ``SumArgs``."""
    return pascal_case(task) + "Args"


def error_model_name(error: str) -> str:
    """The name of an error's generated fields model: ``OutOfStock`` -> ``OutOfStockFields``."""
    return error + "Fields"


def spec_constant_name(task: str) -> str:
    """The name of a task's generated ``TaskSpec`` constant: ``sum`` -> ``SUM``."""
    return task.upper()
