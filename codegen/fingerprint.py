"""The task fingerprint: hex sha256 of the task's canonical signature (docs/wire.md).

The signature is a compact, key-sorted JSON object: the wire name, the args (name, canonical
type spelling, canonical JSON default if any) in schema order, the progress and result types,
and the definitions of every named type they reach (so changing a record's fields changes the
fingerprint). Docs, the queue and the declared errors are excluded (docs/wire.md says why), and
so are the policies (retry, time_limit, expires, priority): they change how a task is run,
not the args and results on the wire, so a worker and a client that differ only in policies
still agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from .model import JSON, Enum, Field, Schema, Task, names_in

__all__ = ["fingerprint", "signature"]


def _fields(fields: Iterable[Field]) -> list[JSON]:
    out: list[JSON] = []
    for f in fields:
        entry: dict[str, JSON] = {"name": f.name, "type": str(f.type)}
        if f.has_default:
            entry["default"] = f.default
        out.append(entry)
    return out


def signature(schema: Schema, task: Task) -> str:
    """The canonical signature of ``task`` as compact, key-sorted JSON."""
    types = schema.type_map()
    pending = [n for e in (*(a.type for a in task.args), task.progress, task.result) for n in names_in(e)]
    reached: dict[str, JSON] = {}
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        declared = types[name]
        if isinstance(declared, Enum):
            reached[name] = {"enum": list(declared.members)}
        else:
            reached[name] = {"fields": _fields(declared.fields)}
            pending.extend(n for f in declared.fields for n in names_in(f.type))
    data: JSON = {
        "name": schema.wire_name(task),
        "args": _fields(task.args),
        "progress": str(task.progress),
        "result": str(task.result),
        "types": reached,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(schema: Schema, task: Task) -> str:
    """Hex sha256 of ``task``'s canonical signature (see ``signature``)."""
    return hashlib.sha256(signature(schema, task).encode("utf-8")).hexdigest()
