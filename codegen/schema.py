"""Load a schema file, validate it completely and build the IR (``model.Schema``).

Every problem is collected, then all are raised at once as a ``taskell.SchemaError`` whose
``errors`` are ``FILE:LINE:COL: message`` lines sorted by position. Positions come from the
YAML nodes (``yaml.compose`` keeps them); a duplicate key, which ``compose`` keeps, is
reported at its second occurrence.

Recursive records are allowed only through ``list``, ``dict``, ``tuple`` or ``| None``, which
can terminate; a record that contains itself directly (``A.a: A``, or ``A.b: B`` with
``B.a: A``) could never be built and is rejected.

Over 400 lines because it is one validator walking one document: each section's checks
share the error list and the position lookups.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal
from zoneinfo import available_timezones

import pydantic
import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..durations import format_duration, parse_duration
from ..errors import SchemaError
from ..schedule import cron_problem, every_problem, timezone_problem
from . import naming
from .live import LiveTypes
from .model import (
    JSON,
    NONE,
    PRIMITIVES,
    RETRY_BUILTINS,
    Enum,
    Error,
    Field,
    Named,
    Record,
    Retry,
    Schedule,
    Schema,
    Task,
    TypeExpr,
    names_in,
)
from .types import NameRef, TypeSyntaxError, parse_type

__all__ = ["DEFAULT_QUEUE", "load_schema", "parse_schema"]

DEFAULT_QUEUE = "taskell.default"
SCHEMA_VERSION = 1

_STR = "tag:yaml.org,2002:str"
# libyaml's loader keeps the same node marks and is about 10x faster on large schemas.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TOP_KEYS = ("taskell", "package", "types", "errors", "tasks", "schedules")
_TYPE_KEYS = ("doc", "fields", "enum")
_TASK_KEYS = (
    "doc",
    "queue",
    "args",
    "progress",
    "result",
    "raises",
    "retry",
    "time_limit",
    "expires",
    "priority",
)
_RETRY_KEYS = ("attempts", "backoff", "delay", "max_delay", "on")
_BACKOFFS = ("fixed", "exponential")
_DURATION_TAGS = ("tag:yaml.org,2002:str", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_ERROR_KEYS = ("doc", "fields")
_FIELD_KEYS = ("type", "default", "doc")
_SCHEDULE_KEYS = ("doc", "task", "cron", "every", "timezone", "args")


@dataclass
class _Problems:
    file: str
    found: list[tuple[int, int, str]] = field(default_factory=list)

    def at(self, node: Node, message: str, offset: int = 0) -> None:
        self.found.append((node.start_mark.line + 1, node.start_mark.column + 1 + offset, message))

    def at_start(self, message: str) -> None:
        self.found.append((1, 1, message))

    def lines(self) -> list[str]:
        return [
            f"{self.file}:{line}:{col}: {msg}" for line, col, msg in sorted(self.found, key=lambda p: p[:2])
        ]


@dataclass
class _TypeUse:
    """A type expression written in the schema, and where."""

    expr: TypeExpr
    node: Node
    refs: list[NameRef]


@dataclass
class _FieldDraft:
    name: str
    key: Node
    type: _TypeUse | None
    default: Node | None
    doc: str | None
    ok: bool = True  # name and type are valid: the field can be built


def _expr_offset(node: Node, offset: int) -> int:
    """Column offset of character ``offset`` of a one-line scalar's value, else 0."""
    if not isinstance(node, ScalarNode) or node.start_mark.line != node.end_mark.line:
        return 0
    width = node.end_mark.column - node.start_mark.column
    if node.style in (None, "") and width == len(node.value):  # plain: None, or "" from libyaml
        return offset
    if node.style in ("'", '"') and width == len(node.value) + 2:
        return offset + 1
    return 0


def _suggest(name: str, known: Iterator[str] | list[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Loader:
    def __init__(self, file: str) -> None:
        self.problems = _Problems(file)
        self.constructor = SafeConstructor()

    # --- YAML shapes -----------------------------------------------------------------------

    def mapping(
        self, node: Node, what: str, allowed: tuple[str, ...] | None = None
    ) -> dict[str, tuple[Node, Node]]:
        """The string keys of a mapping node (first occurrence wins), reporting bad ones."""
        if not isinstance(node, MappingNode):
            self.problems.at(node, f"{what} must be a mapping")
            return {}
        items: dict[str, tuple[Node, Node]] = {}
        for key, value in node.value:
            # YAML 1.1 reads a plain `on` as a boolean: an expected key counts by its text.
            named = isinstance(key, ScalarNode) and (key.tag == _STR or key.value in (allowed or ()))
            if not named:
                self.problems.at(key, f"keys of {what} must be names")
            elif key.value in items:
                self.problems.at(key, f"duplicate key {key.value!r} in {what}")
            elif allowed is not None and key.value not in allowed:
                hint = _suggest(key.value, list(allowed))
                expected = ", ".join(allowed)
                self.problems.at(
                    key, f"unknown key {key.value!r} in {what}{hint}; expected one of: {expected}"
                )
            else:
                items[key.value] = (key, value)
        return items

    def string(self, node: Node, what: str, *, empty_ok: bool = True) -> str | None:
        if not isinstance(node, ScalarNode) or node.tag != _STR:
            self.problems.at(node, f"{what} must be a string")
            return None
        if not empty_ok and node.value == "":
            self.problems.at(node, f"{what} must not be empty")
            return None
        value: str = node.value
        return value

    def doc(self, items: dict[str, tuple[Node, Node]]) -> str | None:
        if "doc" not in items:
            return None
        text = self.string(items["doc"][1], "doc")
        return text if text and text.strip() else None

    def integer(self, node: Node) -> int | None:
        """The value of an integer scalar, else None (the caller reports it)."""
        if not isinstance(node, ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            return None
        try:
            value = self.constructor.construct_object(node)
        except ValueError:  # !!int with a text that is not one
            return None
        return value if isinstance(value, int) else None

    def duration(self, node: Node, what: str, *, positive: bool = False) -> float | None:
        """Seconds of a duration (``30s``, ``1h30m``, or a number of seconds), reporting bad ones."""
        if not isinstance(node, ScalarNode) or node.tag not in _DURATION_TAGS:
            self.problems.at(node, f"{what} must be a duration (e.g. 30s, 10m, 1h30m, 500ms, 2d)")
            return None
        try:
            seconds = parse_duration(node.value)
        except ValueError as exc:
            self.problems.at(node, f"bad {what}: {exc}")
            return None
        if positive and seconds == 0:
            self.problems.at(node, f"{what} must be longer than 0")
            return None
        return seconds

    def type_use(self, node: Node, what: str) -> _TypeUse | None:
        text = self.string(node, f"{what} (a type expression)")
        if text is None:
            return None
        try:
            expr, refs = parse_type(text)
        except TypeSyntaxError as exc:
            self.problems.at(node, f"bad type {text!r}: {exc.message}", _expr_offset(node, exc.offset))
            return None
        return _TypeUse(expr, node, refs)

    def json_value(self, node: Node, what: str = "default") -> tuple[bool, JSON]:
        """A default's (or other ``what``'s) JSON value; YAML timestamps are kept as the
        strings they were."""
        if isinstance(node, MappingNode):
            out: dict[str, JSON] = {}
            ok = True
            for key, value in node.value:
                if not isinstance(key, ScalarNode) or key.tag != _STR:
                    self.problems.at(key, f"keys in a {what} must be strings")
                    ok = False
                    continue
                if key.value in out:
                    self.problems.at(key, f"duplicate key {key.value!r} in {what}")
                    ok = False
                item_ok, out[key.value] = self.json_value(value, what)
                ok = ok and item_ok
            return ok, out
        if isinstance(node, SequenceNode):
            pairs = [self.json_value(item, what) for item in node.value]
            return all(p[0] for p in pairs), [p[1] for p in pairs]
        assert isinstance(node, ScalarNode)
        if node.tag in (_STR, "tag:yaml.org,2002:timestamp"):
            return True, str(node.value)
        try:
            value = self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            self.problems.at(node, f"bad {what}: {exc.problem}")
            return False, None
        except (ValueError, KeyError):  # an explicit tag its text does not fit: !!int x
            self.problems.at(node, f"bad {what}: not a valid {node.tag.rsplit(':', 1)[-1]}: {node.value!r}")
            return False, None
        if isinstance(value, float) and not math.isfinite(value):
            self.problems.at(node, f"a {what} must be representable in JSON (no nan or infinity)")
            return False, None
        if value is None or isinstance(value, (bool, int, float)):
            return True, value
        self.problems.at(node, f"a {what} must be a JSON value, not {node.tag.rsplit(':', 1)[-1]}")
        return False, None

    # --- schema parts ----------------------------------------------------------------------

    def fields(self, node: Node, what: str, kind: str, *, error: bool = False) -> list[_FieldDraft]:
        drafts: list[_FieldDraft] = []
        check_name = f"{kind} name"
        for name, (key, value) in self.mapping(node, what).items():
            if error:
                problem = naming.check_error_field_name(name)
            else:
                problem = naming.check_field_name(name, check_name)
            if problem:
                self.problems.at(key, problem)
            start = len(drafts)
            if isinstance(value, MappingNode):
                items = self.mapping(value, f"{kind} {name!r}", _FIELD_KEYS)
                if "type" not in items:
                    self.problems.at(value, f"{kind} {name!r} needs a 'type'")
                type_use = self.type_use(items["type"][1], "type") if "type" in items else None
                default = items["default"][1] if "default" in items else None
                drafts.append(_FieldDraft(name, key, type_use, default, self.doc(items)))
            else:
                drafts.append(_FieldDraft(name, key, self.type_use(value, f"{kind} {name!r}"), None, None))
            drafts[start].ok = problem is None and drafts[start].type is not None
        return drafts


@dataclass
class _TypeDraft:
    name: str
    key: Node
    doc: str | None
    fields: list[_FieldDraft] | None = None
    members: list[str] | None = None
    ok: bool = True  # the type can be built (its fields may still be bad)


@dataclass
class _RetryDraft:
    attempts: int = 1
    backoff: Literal["fixed", "exponential"] = "exponential"
    delay: float = 1.0
    max_delay: float | None = None
    on: list[tuple[str, Node]] | None = None


@dataclass
class _TaskDraft:
    name: str
    key: Node
    doc: str | None
    queue: str
    args: list[_FieldDraft]
    progress: _TypeUse | None
    result: _TypeUse | None
    raises: list[tuple[str, Node]]
    retry: _RetryDraft | None = None
    time_limit: float | None = None
    limited: bool = False  # time_limit is given, valid or not
    expires: float | None = None
    priority: int | None = None


@dataclass
class _ScheduleDraft:
    name: str
    key: Node
    doc: str | None
    task: tuple[str, Node] | None = None
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    args: dict[str, tuple[Node, Node]] | None = None  # None: no (usable) args mapping
    args_node: Node | None = None


def _compose(text: str, problems: _Problems) -> Node | None:
    try:
        return yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problems.found.append((line, col, f"invalid YAML: {exc.problem or exc.context}"))
    except yaml.YAMLError as exc:
        problems.at_start(f"invalid YAML: {exc}")
    return None


def _parse_types(loader: _Loader, node: Node) -> list[_TypeDraft]:
    drafts = []
    for name, (key, value) in loader.mapping(node, "types").items():
        problem = naming.check_type_name(name)
        if problem:
            loader.problems.at(key, problem)
        items = loader.mapping(value, f"type {name!r}", _TYPE_KEYS)
        draft = _TypeDraft(name, key, loader.doc(items))
        if "fields" in items and "enum" in items:
            later = max(items["fields"][0], items["enum"][0], key=lambda n: n.start_mark.index)
            loader.problems.at(later, f"type {name!r} has both 'fields' and 'enum'")
            draft.ok = False
        elif "enum" in items:
            draft.members = _parse_members(loader, items["enum"][1], name)
        elif "fields" in items:
            draft.fields = loader.fields(items["fields"][1], f"fields of {name!r}", "field")
        elif isinstance(value, MappingNode):
            loader.problems.at(key, f"type {name!r} needs 'fields' (a record) or 'enum'")
        if draft.members is None and draft.fields is None:
            draft.ok = False
        elif draft.members is not None:
            draft.ok = len(draft.members) == len(items["enum"][1].value)
        drafts.append(draft)
    return drafts


def _parse_errors(loader: _Loader, node: Node) -> list[_TypeDraft]:
    drafts = []
    for name, (key, value) in loader.mapping(node, "errors").items():
        problem = naming.check_type_name(name)
        if problem:
            loader.problems.at(key, problem.replace("type name", "error name"))
        items = loader.mapping(value, f"error {name!r}", _ERROR_KEYS)
        draft = _TypeDraft(name, key, loader.doc(items))
        if "fields" in items:
            draft.fields = loader.fields(items["fields"][1], f"fields of {name!r}", "field", error=True)
            for f in draft.fields:
                # The constructor's defaults are plain parameter defaults, shared by every call.
                if isinstance(f.default, (MappingNode, SequenceNode)):
                    loader.problems.at(f.default, "a default of an error field must be a single value")
        elif isinstance(value, MappingNode):
            draft.fields = []  # an error without fields
        else:
            draft.ok = False
        drafts.append(draft)
    return drafts


def _parse_error_names(loader: _Loader, node: Node, key: str, task: str) -> list[tuple[str, Node]]:
    """The names listed under ``raises`` or ``retry.on`` (``key``)."""
    if not isinstance(node, SequenceNode):
        loader.problems.at(node, f"{key} of {task!r} must be a list of error names")
        return []
    names: list[tuple[str, Node]] = []
    for item in node.value:
        name = loader.string(item, f"an error name in {key}")
        if name is None:
            continue
        if name in [n for n, _ in names]:
            loader.problems.at(item, f"duplicate error {name!r} in {key} of {task!r}")
        else:
            names.append((name, item))
    return names


def _parse_retry(loader: _Loader, node: Node, task: str) -> _RetryDraft:
    items = loader.mapping(node, f"retry of {task!r}", _RETRY_KEYS)
    draft = _RetryDraft()
    if "attempts" not in items:
        if isinstance(node, MappingNode):
            loader.problems.at(node, f"retry of {task!r} needs 'attempts' (all attempts, the first included)")
    else:
        value = items["attempts"][1]
        attempts = loader.integer(value)
        if attempts is None or attempts < 1:
            loader.problems.at(value, "retry.attempts must be an integer of at least 1")
        else:
            draft.attempts = attempts
    if "backoff" in items:
        value = items["backoff"][1]
        text = value.value if isinstance(value, ScalarNode) and value.tag == _STR else None
        if text == "fixed" or text == "exponential":
            draft.backoff = text
        else:
            hint = _suggest(text, list(_BACKOFFS)) if text else ""
            loader.problems.at(value, f"retry.backoff must be 'fixed' or 'exponential'{hint}")
    delay_ok = True
    if "delay" in items:
        delay = loader.duration(items["delay"][1], "retry.delay")
        delay_ok = delay is not None
        draft.delay = draft.delay if delay is None else delay
    if "max_delay" in items:
        value = items["max_delay"][1]
        draft.max_delay = loader.duration(value, "retry.max_delay")
        if draft.max_delay is not None and delay_ok and draft.max_delay < draft.delay:
            loader.problems.at(
                value,
                f"retry.max_delay ({format_duration(draft.max_delay)}) is shorter than retry.delay"
                f" ({format_duration(draft.delay)})",
            )
    if "on" in items:
        value = items["on"][1]
        draft.on = _parse_error_names(loader, value, "retry.on", task)
        if isinstance(value, SequenceNode) and not value.value:
            loader.problems.at(value, "retry.on must not be empty (leave it out to retry on any failure)")
    return draft


def _check_raises(loader: _Loader, errors: list[_TypeDraft], tasks: list[_TaskDraft]) -> None:
    """Report unknown names in raises and retry.on, and retry.on names the task cannot fail with."""
    known = [e.name for e in errors]
    for task in tasks:
        for name, node in task.raises:
            if name not in known:
                loader.problems.at(node, f"unknown error {name!r}{_suggest(name, known)}")
        raised = [n for n, _ in task.raises]
        for name, node in task.retry.on if task.retry and task.retry.on else []:
            if name in RETRY_BUILTINS:
                if not task.limited:
                    loader.problems.at(node, f"retry on {name!r} needs a time_limit on task {task.name!r}")
            elif name not in known:
                hint = _suggest(name, [*known, *RETRY_BUILTINS])
                loader.problems.at(node, f"unknown error {name!r}{hint}")
            elif name not in raised:
                loader.problems.at(
                    node, f"error {name!r} is not in raises of {task.name!r}; add it there to retry on it"
                )


def _parse_members(loader: _Loader, node: Node, name: str) -> list[str]:
    if not isinstance(node, SequenceNode) or not node.value:
        loader.problems.at(node, f"enum {name!r} must be a non-empty list of names")
        return []
    members: list[str] = []
    for item in node.value:
        member = loader.string(item, "an enum member")
        if member is None:
            continue
        problem = naming.check_enum_member(member)
        if problem:
            loader.problems.at(item, problem)
        elif member in members:
            loader.problems.at(item, f"duplicate enum member {member!r} in {name!r}")
        else:
            members.append(member)
    return members


def _parse_tasks(loader: _Loader, node: Node) -> list[_TaskDraft]:
    drafts = []
    for name, (key, value) in loader.mapping(node, "tasks").items():
        problem = naming.check_task_name(name)
        if problem:
            loader.problems.at(key, problem)
        items = loader.mapping(value, f"task {name!r}", _TASK_KEYS)
        queue = DEFAULT_QUEUE
        if "queue" in items:
            queue = loader.string(items["queue"][1], "queue", empty_ok=False) or DEFAULT_QUEUE
            if len(queue.encode()) > 255:
                loader.problems.at(items["queue"][1], "queue names are at most 255 bytes (UTF-8)")
        args = loader.fields(items["args"][1], f"args of {name!r}", "argument") if "args" in items else []
        progress = loader.type_use(items["progress"][1], "progress") if "progress" in items else None
        result = loader.type_use(items["result"][1], "result") if "result" in items else None
        raises = _parse_error_names(loader, items["raises"][1], "raises", name) if "raises" in items else []
        draft = _TaskDraft(name, key, loader.doc(items), queue, args, progress, result, raises)
        _parse_policies(loader, items, draft)
        drafts.append(draft)
    return drafts


def _parse_policies(loader: _Loader, items: dict[str, tuple[Node, Node]], draft: _TaskDraft) -> None:
    if "retry" in items:
        draft.retry = _parse_retry(loader, items["retry"][1], draft.name)
    if "time_limit" in items:
        draft.limited = True
        draft.time_limit = loader.duration(items["time_limit"][1], "time_limit", positive=True)
    if "expires" in items:
        draft.expires = loader.duration(items["expires"][1], "expires", positive=True)
    if "priority" in items:
        value = items["priority"][1]
        draft.priority = loader.integer(value)
        if draft.priority is None or not 0 <= draft.priority <= 9:
            loader.problems.at(value, "priority must be an integer from 0 (lowest) to 9")


def _parse_schedules(loader: _Loader, node: Node) -> list[_ScheduleDraft]:
    drafts = []
    for name, (key, value) in loader.mapping(node, "schedules").items():
        problem = naming.check_schedule_name(name)
        if problem:
            loader.problems.at(key, problem)
        items = loader.mapping(value, f"schedule {name!r}", _SCHEDULE_KEYS)
        draft = _ScheduleDraft(name, key, loader.doc(items))
        is_mapping = isinstance(value, MappingNode)
        if "task" in items:
            task = loader.string(items["task"][1], "task")
            draft.task = None if task is None else (task, items["task"][1])
        elif is_mapping:
            loader.problems.at(key, f"schedule {name!r} needs 'task'")
        _parse_when(loader, items, draft)
        if "cron" in items and "every" in items:
            later = max(items["cron"][0], items["every"][0], key=lambda n: n.start_mark.index)
            loader.problems.at(later, f"schedule {name!r} has both 'cron' and 'every'")
        elif "cron" not in items and "every" not in items and is_mapping:
            loader.problems.at(key, f"schedule {name!r} needs 'cron' or 'every'")
        if "args" in items:
            draft.args_node = items["args"][1]
            args = loader.mapping(draft.args_node, f"args of schedule {name!r}")
            draft.args = args if isinstance(draft.args_node, MappingNode) else None
        else:
            draft.args = {}
        drafts.append(draft)
    return drafts


def _parse_when(loader: _Loader, items: dict[str, tuple[Node, Node]], draft: _ScheduleDraft) -> None:
    """A schedule's cron or every, and its timezone."""
    if "cron" in items:
        value = items["cron"][1]
        text = value.value if isinstance(value, ScalarNode) and value.tag == _STR else None
        problem = (
            cron_problem(text)
            if text is not None
            else 'cron must be a string (five fields, e.g. "0 3 * * *")'
        )
        if problem:
            loader.problems.at(value, problem)
        draft.cron = None if problem else text
    if "every" in items:
        value = items["every"][1]
        every = loader.duration(value, "every")
        problem = every_problem(every) if every is not None else None
        if problem:
            loader.problems.at(value, problem)
        draft.every = None if problem else every
    if "timezone" in items:
        key, value = items["timezone"]
        if "cron" not in items:
            loader.problems.at(key, "timezone applies to cron only; every counts from the Unix epoch (UTC)")
            return
        zone = loader.string(value, "timezone", empty_ok=False)
        problem = timezone_problem(zone) if zone is not None else None
        if problem:
            assert zone is not None
            hint = _suggest(zone, sorted(available_timezones()))
            loader.problems.at(value, f"unknown timezone {zone!r}{hint}" if hint else problem)
        elif zone is not None:
            draft.timezone = zone


def _check_collisions(
    loader: _Loader, types: list[_TypeDraft], errors: list[_TypeDraft], tasks: list[_TaskDraft]
) -> None:
    """Types, errors, their models, args models and spec constants share the generated
    modules' namespace."""
    seen: dict[str, str] = {}
    names = [(t.name, t.key, f"type {t.name!r}") for t in types]
    for e in errors:
        names.append((e.name, e.key, f"error {e.name!r}"))
        names.append((naming.error_model_name(e.name), e.key, f"the fields model of error {e.name!r}"))
    for task in tasks:
        names.append((naming.args_model_name(task.name), task.key, f"the args model of task {task.name!r}"))
        names.append(
            (naming.spec_constant_name(task.name), task.key, f"the spec constant of task {task.name!r}")
        )
    for name, node, what in sorted(names, key=lambda n: n[1].start_mark.index):
        plain = (f"type {name!r}", f"error {name!r}")
        if name in seen and what in plain and seen[name] in plain:
            loader.problems.at(node, f"{what} has the name of {seen[name]}: types and errors share names")
        elif name in seen:
            loader.problems.at(node, f"{what} is generated as {name!r}, which is already {seen[name]}")
        else:
            seen[name] = what


def _type_uses(types: list[_TypeDraft], tasks: list[_TaskDraft]) -> Iterator[_TypeUse]:
    for t in types:  # records, and errors (records that no type refers to)
        yield from (f.type for f in t.fields or [] if f.type)
    for task in tasks:
        yield from (a.type for a in task.args if a.type)
        yield from (u for u in (task.progress, task.result) if u)


def _check_refs(
    loader: _Loader, types: list[_TypeDraft], errors: list[_TypeDraft], tasks: list[_TaskDraft]
) -> set[str]:
    """Report unknown type names; return them."""
    unknown: set[str] = set()
    known = [t.name for t in types]
    candidates = [*known, *PRIMITIVES, "list", "dict", "tuple"]
    for use in _type_uses([*types, *errors], tasks):
        for ref in use.refs:
            if ref.name not in known:
                unknown.add(ref.name)
                hint = _suggest(ref.name, candidates)
                loader.problems.at(
                    use.node, f"unknown type {ref.name!r}{hint}", _expr_offset(use.node, ref.offset)
                )
    return unknown


def _check_cycles(loader: _Loader, types: list[_TypeDraft]) -> set[str]:
    """Report records that contain themselves directly; return their names."""
    cyclic: set[str] = set()
    records = {t.name: t for t in types if t.fields is not None}
    edges = {
        t.name: [(f.type.expr.name, f) for f in t.fields or [] if f.type and isinstance(f.type.expr, Named)]
        for t in records.values()
    }
    state: dict[str, int] = {}  # 1: on the DFS stack, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target, fdraft in edges.get(name, []):
            if target not in records:
                continue
            if state.get(target) == 1:
                cyclic.update(path[path.index(target) :])
                cycle = " -> ".join([*path[path.index(target) :], target])
                assert fdraft.type is not None
                loader.problems.at(
                    fdraft.type.node,
                    f"record {target!r} contains itself without list, dict, tuple or '| None' ({cycle})",
                )
            elif target not in state:
                visit(target, [*path, target])
        state[name] = 2

    for name in records:
        if name not in state:
            visit(name, [name])
    return cyclic


def _tainted(types: list[_TypeDraft], bad: set[str]) -> set[str]:
    """Names of types that cannot be built: bad ones, and those that reach them."""
    tainted = set(bad) | {t.name for t in types if not t.ok or not all(f.ok for f in t.fields or [])}
    uses = {t.name: {n for f in t.fields or [] if f.type for n in names_in(f.type.expr)} for t in types}
    grew = True
    while grew:
        grew = False
        for name, refs in uses.items():
            if name not in tainted and refs & tainted:
                tainted.add(name)
                grew = True
    return tainted


def _ir_field(d: _FieldDraft, defaults: dict[int, JSON]) -> Field:
    assert d.type is not None
    return Field(d.name, d.type.expr, id(d) in defaults, defaults.get(id(d)), d.doc)


def _ir_types(types: list[_TypeDraft], defaults: dict[int, JSON]) -> tuple[Record | Enum, ...]:
    return tuple(
        Enum(t.name, tuple(t.members), t.doc)
        if t.members is not None
        else Record(t.name, tuple(_ir_field(f, defaults) for f in t.fields or [] if f.ok), t.doc)
        for t in types
    )


def _check_defaults(
    loader: _Loader,
    types: list[_TypeDraft],
    errors: list[_TypeDraft],
    tasks: list[_TaskDraft],
    tainted: set[str],
) -> tuple[dict[int, JSON], LiveTypes]:
    """Validate every default that can be checked; return the canonical JSON by draft id, and
    the live types it was checked with.

    Defaults are decoded strictly from their JSON form by live types built from the types
    that are sound, so one bad type does not hide the errors of unrelated defaults.
    """
    drafts = [f for t in [*types, *errors] for f in t.fields or []] + [a for t in tasks for a in t.args]
    raw: dict[int, JSON] = {}
    for d in drafts:
        if d.default is not None:
            ok, value = loader.json_value(d.default)
            if ok and d.ok and d.type and not set(names_in(d.type.expr)) & tainted:
                raw[id(d)] = value
    live = LiveTypes(_ir_types([t for t in types if t.name not in tainted], raw))
    canonical: dict[int, JSON] = {}
    for d in drafts:
        if id(d) not in raw:
            continue
        assert d.type is not None and d.default is not None
        try:
            canonical[id(d)] = _canonical(live, d.type.expr, raw[id(d)])
        except ValueError as exc:
            loader.problems.at(d.default, f"default of {d.name!r} is not a valid {d.type.expr}: {exc}")
    return canonical, live


def _canonical(live: LiveTypes, expr: TypeExpr, value: JSON) -> JSON:
    """``value`` (JSON) decoded strictly as ``expr``, in canonical JSON form.

    Raises:
        ValueError: it does not fit; the message says where in it and why.
    """
    try:
        return json.loads(live.adapter(expr).dump_json(live.decode(expr, value)))  # type: ignore[no-any-return]
    except pydantic.ValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"[{part!r}]" for part in error["loc"])
        raise ValueError(f"{where}{' ' if where else ''}{error['msg']}") from None
    # Any other ValueError is a nested default's own ValidationError, from its factory.


def _check_schedules(
    loader: _Loader,
    schedules: list[_ScheduleDraft],
    tasks: list[_TaskDraft],
    live: LiveTypes,
    tainted: set[str],
) -> dict[int, dict[str, JSON]]:
    """Check each schedule's task and args like defaults; return the canonical args by draft id."""
    by_name = {t.name: t for t in tasks}
    canonical: dict[int, dict[str, JSON]] = {}
    for s in schedules:
        if s.task is None:
            continue
        name, node = s.task
        task = by_name.get(name)
        if task is None:
            loader.problems.at(node, f"unknown task {name!r}{_suggest(name, list(by_name))}")
        elif s.args is not None:
            canonical[id(s)] = _check_args(loader, s, task, live, tainted)
    return canonical


def _check_args(
    loader: _Loader, s: _ScheduleDraft, task: _TaskDraft, live: LiveTypes, tainted: set[str]
) -> dict[str, JSON]:
    assert s.args is not None
    params = {a.name: a for a in task.args}
    out: dict[str, JSON] = {}
    for name, (key, value) in s.args.items():
        arg = params.get(name)
        if arg is None:
            hint = _suggest(name, list(params))
            loader.problems.at(key, f"unknown argument {name!r} of task {task.name!r}{hint}")
            continue
        ok, raw = loader.json_value(value, "schedule argument")
        if not (ok and arg.ok and arg.type) or set(names_in(arg.type.expr)) & tainted:
            continue  # reported already
        try:
            out[name] = _canonical(live, arg.type.expr, raw)
        except ValueError as exc:
            loader.problems.at(value, f"argument {name!r} is not a valid {arg.type.expr}: {exc}")
    for arg in task.args:
        if arg.default is None and arg.name not in s.args:
            where = s.args_node or s.key
            loader.problems.at(
                where, f"missing argument {arg.name!r} of task {task.name!r} (it has no default)"
            )
    return out


def _ir_retry(d: _RetryDraft | None) -> Retry | None:
    if d is None:
        return None
    on = None if d.on is None else tuple(name for name, _ in d.on)
    return Retry(d.attempts, d.backoff, d.delay, d.max_delay, on)


def parse_schema(text: str, file: str) -> Schema:
    """Validate schema source ``text`` and build its IR.

    Args:
        text: the YAML source.
        file: the name used in error lines, as given by the user.

    Raises:
        SchemaError: one or more problems, all of them in ``errors``.
    """
    loader = _Loader(file)
    problems = loader.problems
    root = _compose(text, problems)
    if root is None and not problems.found:
        problems.at_start("missing 'taskell:' (the schema format version, 1)")
    if root is None:
        raise SchemaError(problems.lines())
    top = loader.mapping(root, "the schema", _TOP_KEYS)
    if "taskell" not in top:
        problems.at_start("missing 'taskell:' (the schema format version, 1)")
    else:
        version = top["taskell"][1]
        if not (isinstance(version, ScalarNode) and version.tag.endswith(":int") and version.value == "1"):
            problems.at(version, f"unsupported schema format version; 'taskell:' must be {SCHEMA_VERSION}")
    package = ""
    if "package" not in top:
        problems.at_start("missing 'package:' (the generated package name)")
    else:
        package = loader.string(top["package"][1], "package") or ""
        problem = naming.check_package_name(package) if package else None
        if problem:
            problems.at(top["package"][1], problem)
    types = _parse_types(loader, top["types"][1]) if "types" in top else []
    errors = _parse_errors(loader, top["errors"][1]) if "errors" in top else []
    tasks = _parse_tasks(loader, top["tasks"][1]) if "tasks" in top else []
    schedules = _parse_schedules(loader, top["schedules"][1]) if "schedules" in top else []
    _check_collisions(loader, types, errors, tasks)
    _check_raises(loader, errors, tasks)
    bad = _check_refs(loader, types, errors, tasks) | _check_cycles(loader, types)
    tainted = _tainted(types, bad)
    defaults, live = _check_defaults(loader, types, errors, tasks, tainted)
    schedule_args = _check_schedules(loader, schedules, tasks, live, tainted)
    if problems.found:
        raise SchemaError(problems.lines())
    ir_tasks = tuple(
        Task(
            t.name,
            t.queue,
            tuple(_ir_field(a, defaults) for a in t.args),
            t.progress.expr if t.progress else NONE,
            t.result.expr if t.result else NONE,
            t.doc,
            tuple(name for name, _ in t.raises),
            _ir_retry(t.retry),
            t.time_limit,
            t.expires,
            t.priority,
        )
        for t in tasks
    )
    ir_errors = tuple(
        Error(e.name, tuple(_ir_field(f, defaults) for f in e.fields or []), e.doc) for e in errors
    )
    ir_schedules = tuple(
        Schedule(
            s.name, s.task[0] if s.task else "", s.cron, s.every, s.timezone, schedule_args[id(s)], s.doc
        )
        for s in schedules
    )
    return Schema(package, _ir_types(types, defaults), ir_tasks, ir_errors, ir_schedules)


def load_schema(path: str) -> tuple[Schema, bytes]:
    """Read and validate the schema file at ``path``.

    Returns:
        The IR and the file's raw bytes (the generator hashes them).

    Raises:
        SchemaError: the file is unreadable or invalid; error lines name ``path`` as given.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise SchemaError([f"{path}:1:1: cannot read schema: {exc.strerror}"]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SchemaError([f"{path}:1:1: schema is not UTF-8: {exc.reason}"]) from None
    return parse_schema(text, path), data
