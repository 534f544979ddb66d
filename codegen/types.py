"""A small recursive-descent parser for the schema's type expressions; never ``eval``.

Grammar::

    type    := primary ("|" primary)*          at most one side may be None: T | None
    primary := NAME ("[" args "]")?
    args    := type ("," type)* ("," "...")?

``list[T]``, ``dict[str, T]`` and ``tuple[T, ...]`` are the only generic forms.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .model import PRIMITIVES, DictOf, ListOf, Named, Optional, Prim, TupleOf, TypeExpr

__all__ = ["TypeSyntaxError", "parse_type"]

_TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<ellipsis>\.\.\.)|(?P<punct>[\[\],|]))")
_GENERICS = {"list": 1, "dict": 2, "tuple": 2}


class TypeSyntaxError(Exception):
    """A malformed type expression.

    Attributes:
        message: what is wrong.
        offset: 0-based character offset in the expression where it went wrong.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset


@dataclass(frozen=True)
class NameRef:
    """A named (non built-in) type used in an expression, and where."""

    name: str
    offset: int


@dataclass
class _Token:
    kind: str  # "name", "...", a punctuation character, or "end"
    text: str
    offset: int


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if match is None:
            bad = pos + len(text[pos:]) - len(text[pos:].lstrip())
            raise TypeSyntaxError(f"unexpected character {text[bad]!r} in type", bad)
        start = match.start(match.lastgroup or 0)
        kind = "name" if match.group("name") else "..." if match.group("ellipsis") else match.group(0).strip()
        tokens.append(_Token(kind, match.group(match.lastgroup or 0), start))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0
        self.refs: list[NameRef] = []

    @property
    def tok(self) -> _Token:
        return self.tokens[self.index]

    def expect(self, kind: str, what: str) -> _Token:
        tok = self.tok
        if tok.kind != kind:
            found = "end of type" if tok.kind == "end" else repr(tok.text)
            raise TypeSyntaxError(f"expected {what}, found {found}", tok.offset)
        self.index += 1
        return tok

    def parse(self) -> TypeExpr:
        result = self.union()
        if self.tok.kind != "end":
            raise TypeSyntaxError(f"unexpected {self.tok.text!r} in type", self.tok.offset)
        return result

    def union(self) -> TypeExpr:
        members = [(self.tok.offset, self.primary())]
        while self.tok.kind == "|":
            self.index += 1
            members.append((self.tok.offset, self.primary()))
        if len(members) == 1:
            return members[0][1]
        nones = [off for off, t in members if t == Prim("None")]
        others = [(off, t) for off, t in members if t != Prim("None")]
        if len(nones) != 1 or len(others) != 1:
            off = nones[1] if len(nones) > 1 else others[1][0] if len(others) > 1 else members[0][0]
            raise TypeSyntaxError("only 'T | None' unions are supported", off)
        return Optional(others[0][1])

    def primary(self) -> TypeExpr:
        name = self.expect("name", "a type name")
        if self.tok.kind != "[":
            if name.text in _GENERICS:
                raise TypeSyntaxError(f"{name.text!r} needs type arguments", name.offset)
            if name.text in PRIMITIVES:
                return Prim(name.text)
            self.refs.append(NameRef(name.text, name.offset))
            return Named(name.text)
        bracket = self.tok
        if name.text not in _GENERICS:
            raise TypeSyntaxError(f"{name.text!r} takes no type arguments", bracket.offset)
        self.index += 1
        if name.text == "list":
            item = self.union()
            self.expect("]", "']'")
            return ListOf(item)
        if name.text == "dict":
            key_tok = self.tok
            key = self.union()
            if key != Prim("str"):
                raise TypeSyntaxError("dict keys must be str", key_tok.offset)
            self.expect(",", "','")
            value = self.union()
            self.expect("]", "']'")
            return DictOf(value)
        item = self.union()
        self.expect(",", "', ...' (only tuple[T, ...] is supported)")
        self.expect("...", "'...' (only tuple[T, ...] is supported)")
        self.expect("]", "']'")
        return TupleOf(item)


def parse_type(text: str) -> tuple[TypeExpr, list[NameRef]]:
    """Parse a type expression.

    Args:
        text: the expression, e.g. ``"list[Image | None]"``.

    Returns:
        The type, and the named (non built-in) types it mentions with their offsets.

    Raises:
        TypeSyntaxError: the expression is malformed.
    """
    parser = _Parser(text)
    return parser.parse(), parser.refs
