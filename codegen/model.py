"""The schema's intermediate representation (IR): what ``schema`` builds and ``render`` reads.

The tree, top down::

    Schema
      package: str
      types: (Record | Enum, ...)          schema declaration order
        Record.fields: (Field, ...)        schema order
        Enum.members: (str, ...)
      errors: (Error, ...)                 schema declaration order
        Error.fields: (Field, ...)         schema order
      tasks: (Task, ...)                   schema declaration order
        Task.args: (Field, ...)            schema order
        Task.progress, Task.result: TypeExpr
        Task.raises: (str, ...)            names of errors, schema order
        Task.retry: Retry | None           retry policy; durations in seconds
          Retry.on: (str, ...) | None      names of errors and TimeLimitExceeded, schema order
        Task.time_limit, Task.expires: float | None   seconds
        Task.priority: int | None          0 to 9
      schedules: (Schedule, ...)           schema declaration order
        Schedule.task: str                 the name of a task of this schema
        Schedule.cron | Schedule.every     a five-field cron expression, or seconds
        Schedule.args: {str: JSON}         the arguments given, canonical JSON, schema order

A ``TypeExpr`` is one of ``Prim``, ``ListOf``, ``DictOf``, ``TupleOf``, ``Optional`` or
``Named``; ``str(expr)`` is its canonical spelling (used in fingerprints). Defaults are kept in
their canonical JSON form (docs/wire.md), already validated against their type. Policies
(``retry``, ``time_limit``, ``expires``, ``priority``) are None when the schema leaves them out.
A schedule's args are checked like defaults; the ones left out take the task's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypeAlias

from .._wire import TIME_LIMIT_EXCEEDED

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None

RETRY_BUILTINS = {"TimeLimitExceeded": TIME_LIMIT_EXCEEDED}
"""The names ``retry.on`` takes besides declared errors, with their wire names."""

PRIMITIVES = ("int", "float", "bool", "str", "bytes", "None", "datetime", "date", "uuid", "decimal")
"""The built-in type names of the schema language."""


@dataclass(frozen=True)
class Prim:
    """A built-in type: one of ``PRIMITIVES``."""

    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class ListOf:
    """``list[item]``."""

    item: TypeExpr

    def __str__(self) -> str:
        return f"list[{self.item}]"


@dataclass(frozen=True)
class DictOf:
    """``dict[str, value]``."""

    value: TypeExpr

    def __str__(self) -> str:
        return f"dict[str, {self.value}]"


@dataclass(frozen=True)
class TupleOf:
    """``tuple[item, ...]``."""

    item: TypeExpr

    def __str__(self) -> str:
        return f"tuple[{self.item}, ...]"


@dataclass(frozen=True)
class Optional:
    """``inner | None``."""

    inner: TypeExpr

    def __str__(self) -> str:
        return f"{self.inner} | None"


@dataclass(frozen=True)
class Named:
    """A record or enum declared under ``types``."""

    name: str

    def __str__(self) -> str:
        return self.name


TypeExpr: TypeAlias = Prim | ListOf | DictOf | TupleOf | Optional | Named

NONE = Prim("None")


@dataclass(frozen=True)
class Field:
    """A record field or a task argument.

    Attributes:
        name: the Python name.
        type: its type.
        has_default: whether ``default`` is meaningful.
        default: the default in canonical JSON form.
        doc: documentation, or None.
    """

    name: str
    type: TypeExpr
    has_default: bool = False
    default: JSON = None
    doc: str | None = None


@dataclass(frozen=True)
class Record:
    """A named record type: a frozen pydantic model."""

    name: str
    fields: tuple[Field, ...]
    doc: str | None = None


@dataclass(frozen=True)
class Enum:
    """A named enum type; each member's value (and JSON form) is its name."""

    name: str
    members: tuple[str, ...]
    doc: str | None = None


@dataclass(frozen=True)
class Error:
    """A declared error: a generated exception class with typed fields; its wire name is
    ``<package>.<name>``."""

    name: str
    fields: tuple[Field, ...]
    doc: str | None = None


@dataclass(frozen=True)
class Retry:
    """A task's ``retry:`` policy; durations in seconds.

    Attributes:
        attempts: all attempts, the first included.
        backoff: ``fixed`` or ``exponential``.
        delay: the wait before the first retry.
        max_delay: the longest wait, or None for no cap.
        on: the names retried (declared errors and ``RETRY_BUILTINS``), or None: any failure.
    """

    attempts: int
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: float = 1.0
    max_delay: float | None = None
    on: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Task:
    """One task: its wire name is ``<package>.<name>``."""

    name: str
    queue: str
    args: tuple[Field, ...]
    progress: TypeExpr = NONE
    result: TypeExpr = NONE
    doc: str | None = None
    raises: tuple[str, ...] = ()
    retry: Retry | None = None
    time_limit: float | None = None
    expires: float | None = None
    priority: int | None = None


@dataclass(frozen=True)
class Schedule:
    """A schedule: submit ``task`` with ``args`` at each due time.

    Attributes:
        name: the schedule's name.
        task: the name of the task it submits.
        cron: a five-field cron expression, or None when ``every`` is set.
        every: the interval in seconds, or None when ``cron`` is set.
        timezone: the IANA zone ``cron`` is evaluated in; "UTC" for ``every``.
        args: the arguments given, in canonical JSON form.
        doc: documentation, or None.
    """

    name: str
    task: str
    cron: str | None
    every: float | None
    timezone: str = "UTC"
    args: dict[str, JSON] = field(default_factory=dict)
    doc: str | None = None


@dataclass(frozen=True)
class Schema:
    """A whole, validated schema."""

    package: str
    types: tuple[Record | Enum, ...]
    tasks: tuple[Task, ...]
    errors: tuple[Error, ...] = ()
    schedules: tuple[Schedule, ...] = ()

    def type_map(self) -> dict[str, Record | Enum]:
        """The named types by name."""
        return {t.name: t for t in self.types}

    def wire_name(self, task: Task) -> str:
        """The task's wire name, ``<package>.<task>``."""
        return f"{self.package}.{task.name}"

    def error_type(self, name: str) -> str:
        """The wire ``error_type`` of a declared error or a name of ``RETRY_BUILTINS``."""
        return RETRY_BUILTINS.get(name, f"{self.package}.{name}")

    def queue_priorities(self, task: Task) -> bool:
        """Whether the task's queue is declared with priorities: some task on it has one."""
        return any(t.priority is not None for t in self.tasks if t.queue == task.queue)


def names_in(expr: TypeExpr) -> list[str]:
    """The named types ``expr`` mentions, outermost first."""
    if isinstance(expr, Named):
        return [expr.name]
    if isinstance(expr, (ListOf, TupleOf)):
        return names_in(expr.item)
    if isinstance(expr, DictOf):
        return names_in(expr.value)
    if isinstance(expr, Optional):
        return names_in(expr.inner)
    return []
