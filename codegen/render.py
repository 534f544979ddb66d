"""Render the IR into the generated modules' source with jinja2.

``prepare`` turns the IR into view objects holding every string a template needs (names,
annotations, default expressions, imports), so templates never compute anything; ``render``
fills one template per output file. Literals pass through the ``pyrepr`` filter, docs through
``docstring`` and free text in comments through ``comment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from . import naming
from .fingerprint import fingerprint
from .model import Enum, Error, Field, Record, Schedule, Schema, Task, TypeExpr, names_in
from .pyexpr import annotation, stub_annotation, value_expr

__all__ = ["OUTPUT_FILES", "Header", "prepare", "render"]

OUTPUT_FILES = ("__init__.py", "models.py", "client.py", "worker.py")

_IMPORTS = {
    "_aio": "import taskell.aio as _aio",
    "_abc": "import collections.abc as _abc",
    "_datetime": "import datetime as _datetime",
    "_decimal": "import decimal as _decimal",
    "_enum": "import enum as _enum",
    "_models": "from . import models as _models",
    "_pydantic": "import pydantic as _pydantic",
    "_taskell": "import taskell as _taskell",
    "_typing": "import typing as _typing",
    "_uuid": "import uuid as _uuid",
}


@dataclass(frozen=True)
class Header:
    """What the do-not-edit header names."""

    schema_path: str
    schema_sha256: str
    version: str


@dataclass(frozen=True)
class FieldView:
    """A model field (record field or task argument) as ``models.py`` declares it."""

    name: str
    annotation: str
    default: str | None
    factory: bool
    doc: str | None


@dataclass(frozen=True)
class RecordView:
    name: str
    doc: str | None
    fields: tuple[FieldView, ...]
    rebuild: bool


@dataclass(frozen=True)
class EnumView:
    name: str
    doc: str | None
    members: tuple[str, ...]


@dataclass(frozen=True)
class ErrorView:
    """A declared error: its fields model and its exception class."""

    name: str
    wire_name: str
    model: str
    doc: str | None
    fields: tuple[FieldView, ...]
    message: str


@dataclass(frozen=True)
class ArgView:
    """A task argument in the client stub and the handler signature."""

    name: str
    stub_annotation: str
    stub_default: str | None
    handler_annotation: str


@dataclass(frozen=True)
class TaskView:
    name: str
    wire_name: str
    queue: str
    fingerprint: str
    args_model: str
    spec: str
    model_progress: str
    model_result: str
    progress: str
    result: str
    returns_none: bool
    ctx: str
    args_fields: tuple[FieldView, ...]
    args: tuple[ArgView, ...]
    doc: str | None
    raises: tuple[str, ...]
    policies: tuple[str, ...]


@dataclass(frozen=True)
class ScheduleView:
    """A ``taskell.Schedule`` in ``SCHEDULES``: its keyword arguments, and its doc as comment lines."""

    arguments: tuple[str, ...]
    doc: tuple[str, ...]


@dataclass(frozen=True)
class Views:
    """Everything the templates read."""

    package: str
    header: Header
    enums: tuple[EnumView, ...]
    records: tuple[RecordView, ...]
    errors: tuple[ErrorView, ...]
    tasks: tuple[TaskView, ...]
    schedules: tuple[ScheduleView, ...]
    exports: tuple[str, ...]
    imports: dict[str, tuple[str, ...]]


def _doc_with_args(doc: str | None, fields: tuple[Field, ...]) -> str | None:
    documented = [f for f in fields if f.doc]
    if not documented:
        return doc
    lines = [doc or "", "", "Args:"] if doc else ["Args:"]
    lines += [f"    {f.name}: {' '.join((f.doc or '').split())}" for f in documented]
    return "\n".join(lines)


class _Preparer:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.types = schema.type_map()
        self.uses: dict[str, set[str]] = {
            "models": {"_pydantic", "_taskell"},
            "client": set(),
            "worker": set(),
        }

    def field(self, f: Field) -> FieldView:
        uses = self.uses["models"]
        default, factory = None, False
        if f.has_default:
            default, factory = value_expr(f.type, f.default, self.types, uses, api=False)
        return FieldView(f.name, annotation(f.type, uses, api=False), default, factory, f.doc)

    def arg(self, f: Field) -> ArgView:
        stub_default = None
        if f.has_default:
            stub_default = value_expr(f.type, f.default, self.types, self.uses["client"], api=True)[0]
        return ArgView(
            f.name,
            stub_annotation(f.type, self.uses["client"]),
            stub_default,
            annotation(f.type, self.uses["worker"], api=True),
        )

    def api(self, expr: TypeExpr) -> str:
        annotation(expr, self.uses["worker"], api=True)
        return annotation(expr, self.uses["client"], api=True)

    def task_view(self, index: int) -> TaskView:
        task = self.schema.tasks[index]
        names = {a.name for a in task.args}
        return TaskView(
            name=task.name,
            wire_name=self.schema.wire_name(task),
            queue=task.queue,
            fingerprint=fingerprint(self.schema, task),
            args_model=naming.args_model_name(task.name),
            spec=naming.spec_constant_name(task.name),
            model_progress=annotation(task.progress, self.uses["models"], api=False),
            model_result=annotation(task.result, self.uses["models"], api=False),
            progress=self.api(task.progress),
            result=self.api(task.result),
            returns_none=str(task.result) == "None",
            # The handler's context parameter is positional-only; rename it if an arg is "ctx".
            ctx="ctx" if "ctx" not in names else "context" if "context" not in names else "ctx_",
            args_fields=tuple(self.field(a) for a in task.args),
            args=tuple(self.arg(a) for a in task.args),
            doc=_doc_with_args(task.doc, task.args),
            raises=tuple(
                f"_taskell.ErrorSpec(name={self.schema.error_type(name)!r}, exception={name}, "
                f"fields={naming.error_model_name(name)})"
                for name in task.raises
            ),
            policies=self.policies(task),
        )

    def policies(self, task: Task) -> tuple[str, ...]:
        """The ``TaskSpec`` keyword arguments of the task's policies, only those set."""
        found = []
        if task.retry:
            r = task.retry
            parts = [f"attempts={r.attempts!r}", f"backoff={r.backoff!r}", f"delay={r.delay!r}"]
            if r.max_delay is not None:
                parts.append(f"max_delay={r.max_delay!r}")
            if r.on is not None:
                parts.append(f"on={tuple(self.schema.error_type(name) for name in r.on)!r}")
            found.append(f"retry=_taskell.RetryPolicy({', '.join(parts)})")
        for name, value in (
            ("time_limit", task.time_limit),
            ("expires", task.expires),
            ("priority", task.priority),
        ):
            if value is not None:
                found.append(f"{name}={value!r}")
        if self.schema.queue_priorities(task):
            found.append("queue_priorities=True")
        return tuple(found)

    def error_view(self, error: Error) -> ErrorView:
        # The message reads like the constructor call: "sku='a', available=0".
        message = ", ".join(f"{f.name}={{{f.name}!r}}" for f in error.fields)
        return ErrorView(
            name=error.name,
            wire_name=f"{self.schema.package}.{error.name}",
            model=naming.error_model_name(error.name),
            doc=_doc_with_args(error.doc, error.fields),
            fields=tuple(self.field(f) for f in error.fields),
            message=f"f{message!r}" if error.fields else '""',
        )


def _schedule_view(schedule: Schedule) -> ScheduleView:
    arguments = [
        f"name={schedule.name!r}",
        f"task={naming.spec_constant_name(schedule.task)}",
        f"args={schedule.args!r}",  # JSON: its Python repr is a literal of the same value
    ]
    if schedule.cron is not None:
        arguments += [f"cron={schedule.cron!r}", f"timezone={schedule.timezone!r}"]
    else:
        arguments.append(f"every={schedule.every!r}")
    return ScheduleView(tuple(arguments), tuple((schedule.doc or "").splitlines()))


def prepare(schema: Schema, header: Header) -> Views:
    """Build the template views of ``schema``."""
    prep = _Preparer(schema)
    enums = tuple(EnumView(t.name, t.doc, t.members) for t in schema.types if isinstance(t, Enum))
    if enums:
        prep.uses["models"].add("_enum")
    declared: set[str] = set()
    records = []
    for t in schema.types:
        if isinstance(t, Record):
            fields = tuple(prep.field(f) for f in t.fields)
            # A field naming a record not declared before (itself included) is a forward
            # reference, resolved by model_rebuild() once every class exists.
            refs = {n for f in t.fields for n in names_in(f.type) if isinstance(prep.types[n], Record)}
            records.append(RecordView(t.name, t.doc, fields, not refs <= declared))
            declared.add(t.name)
    errors = tuple(prep.error_view(e) for e in schema.errors)
    tasks = tuple(prep.task_view(i) for i in range(len(schema.tasks)))
    prep.uses["client"] |= {"_taskell", "_aio", "_abc", "_models"}
    prep.uses["worker"] |= {"_taskell", "_typing", "_models"}
    exports = sorted(
        [t.name for t in schema.types]
        + [e.name for e in errors]
        + [e.model for e in errors]
        + [v.args_model for v in tasks]
        + [v.spec for v in tasks]
        + ["AsyncClient", "AsyncHandlers", "Client", "Handlers", "SCHEDULES", "registry"]
    )
    # Absolute imports first, then the relative one; each group sorted.
    imports = {
        key: tuple(sorted((_IMPORTS[m] for m in uses), key=lambda line: (line.startswith("from ."), line)))
        for key, uses in prep.uses.items()
    }
    schedules = tuple(_schedule_view(s) for s in schema.schedules)
    return Views(
        schema.package, header, enums, tuple(records), errors, tasks, schedules, tuple(exports), imports
    )


def _escape_doc(text: str, indent: int = 0) -> str:
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\n" + " " * indent)
        elif ch == "\t":
            out.append("\\t")
        elif not ch.isprintable():
            out.append(repr(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def _comment(text: str) -> str:
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("taskell.codegen", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)
_ENV.filters["pyrepr"] = repr
_ENV.filters["docstring"] = _escape_doc
_ENV.filters["comment"] = _comment


def render(views: Views) -> dict[str, str]:
    """Render every output file (unformatted), keyed by file name."""
    return {name: _ENV.get_template(name + ".j2").render(v=views) for name in OUTPUT_FILES}
