"""Python source for types and default values, as the generated modules spell them.

Two spellings exist: the *model* spelling used in ``models.py`` (``bytes`` is
``taskell.Base64Bytes``, ``datetime`` is ``pydantic.AwareDatetime``, named types are bare) and
the *api* spelling used by ``client.py`` and ``worker.py`` (plain ``bytes`` and
``datetime.datetime``; named types as ``_models.Name``). Both mean the same to mypy. Every
function records the module aliases it used in ``uses``.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import cast

from .model import JSON, DictOf, Enum, ListOf, Named, Optional, Prim, Record, TupleOf, TypeExpr

__all__ = ["annotation", "stub_annotation", "value_expr"]

_SIMPLE = {"int": "int", "float": "float", "bool": "bool", "str": "str", "None": "None"}
_MODULE = {
    "date": ("_datetime", "_datetime.date"),
    "uuid": ("_uuid", "_uuid.UUID"),
    "decimal": ("_decimal", "_decimal.Decimal"),
}
_MODEL_ONLY = {
    "bytes": ("_taskell", "_taskell.Base64Bytes"),
    "datetime": ("_pydantic", "_pydantic.AwareDatetime"),
}
_API_ONLY = {"bytes": (None, "bytes"), "datetime": ("_datetime", "_datetime.datetime")}


def annotation(expr: TypeExpr, uses: set[str], *, api: bool) -> str:
    """The annotation of ``expr`` in the model (``api=False``) or api spelling."""
    if isinstance(expr, Prim):
        if expr.name in _SIMPLE:
            return _SIMPLE[expr.name]
        module, text = (_API_ONLY if api else _MODEL_ONLY).get(expr.name) or _MODULE[expr.name]
        if module:
            uses.add(module)
        return text
    if isinstance(expr, ListOf):
        return f"list[{annotation(expr.item, uses, api=api)}]"
    if isinstance(expr, DictOf):
        return f"dict[str, {annotation(expr.value, uses, api=api)}]"
    if isinstance(expr, TupleOf):
        return f"tuple[{annotation(expr.item, uses, api=api)}, ...]"
    if isinstance(expr, Optional):
        return f"{annotation(expr.inner, uses, api=api)} | None"
    if api:
        uses.add("_models")
        return f"_models.{expr.name}"
    return expr.name


def stub_annotation(expr: TypeExpr, uses: set[str]) -> str:
    """A client stub parameter: the value, or a ``Ref`` to it; lists may mix both."""
    uses.add("_taskell")
    if isinstance(expr, ListOf):
        uses.add("_abc")
        item = annotation(expr.item, uses, api=True)
        return f"_abc.Sequence[{item} | _taskell.Ref[{item}]] | _taskell.Ref[list[{item}]]"
    text = annotation(expr, uses, api=True)
    return f"{text} | _taskell.Ref[{text}]"


def value_expr(
    expr: TypeExpr, value: JSON, types: Mapping[str, Record | Enum], uses: set[str], *, api: bool
) -> tuple[str, bool]:
    """A Python expression that evaluates to ``value`` (canonical JSON) decoded as ``expr``.

    Returns:
        The expression, and whether it constructs a record (models use a default factory then).
    """
    if isinstance(expr, Optional):
        return ("None", False) if value is None else value_expr(expr.inner, value, types, uses, api=api)
    if isinstance(expr, Prim):
        return _prim_expr(expr.name, value, uses), False
    if isinstance(expr, (ListOf, TupleOf)):
        items = [value_expr(expr.item, v, types, uses, api=api) for v in cast(list[JSON], value)]
        text = ", ".join(i[0] for i in items)
        built = any(i[1] for i in items)
        if isinstance(expr, ListOf):
            return f"[{text}]", built
        return (f"({text},)" if len(items) == 1 else f"({text})"), built
    if isinstance(expr, DictOf):
        pairs = [
            (k, value_expr(expr.value, v, types, uses, api=api))
            for k, v in cast(dict[str, JSON], value).items()
        ]
        return "{" + ", ".join(f"{k!r}: {e[0]}" for k, e in pairs) + "}", any(e[1] for _, e in pairs)
    return _named_expr(expr, value, types, uses, api=api), isinstance(types[expr.name], Record)


def _named_expr(
    expr: Named, value: JSON, types: Mapping[str, Record | Enum], uses: set[str], *, api: bool
) -> str:
    prefix = "_models." if api else ""
    if api:
        uses.add("_models")
    declared = types[expr.name]
    if isinstance(declared, Enum):
        return f"{prefix}{expr.name}.{value}"
    fields = cast(dict[str, JSON], value)
    parts = [
        f"{f.name}={value_expr(f.type, fields[f.name], types, uses, api=api)[0]}"
        for f in declared.fields
        if f.name in fields
    ]
    return f"{prefix}{expr.name}({', '.join(parts)})"


def _prim_expr(name: str, value: JSON, uses: set[str]) -> str:
    if name in ("int", "bool", "str", "None"):
        return repr(value)
    if name == "float":
        return repr(float(cast(float, value)))
    if name == "bytes":
        return repr(base64.b64decode(cast(str, value)))
    module, text = {
        "datetime": ("_datetime", "_datetime.datetime.fromisoformat"),
        "date": ("_datetime", "_datetime.date.fromisoformat"),
        "uuid": ("_uuid", "_uuid.UUID"),
        "decimal": ("_decimal", "_decimal.Decimal"),
    }[name]
    uses.add(module)
    return f"{text}({value!r})"
