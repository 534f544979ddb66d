"""taskell's schema compiler: ``tasks.schema.yaml`` in, a typed Python package out.

Entry points:

- ``run_gen(schema, outdir, check)``: what ``taskell gen`` runs; returns the exit status.
- ``generate(schema, outdir, check)``: the same, raising ``SchemaError`` instead of printing.
- ``load_specs(schema)``: live ``TaskSpec`` objects built from the schema, without generated
  code (``taskell call``).
- ``fingerprint(schema, task)``: the hex sha256 of a task's canonical signature.
"""

from __future__ import annotations

import hashlib
import os
import sys
from typing import Any

from .._version import __version__
from ..errors import SchemaError
from ..spec import TaskSpec
from .fingerprint import fingerprint
from .format import format_source
from .live import build_specs
from .model import Schema
from .render import OUTPUT_FILES, Header, prepare, render
from .schema import load_schema, parse_schema

__all__ = [
    "fingerprint",
    "generate",
    "generate_sources",
    "load_schema",
    "load_specs",
    "parse_schema",
    "run_gen",
]


def generate_sources(schema: Schema, schema_path: str, schema_bytes: bytes) -> dict[str, str]:
    """The formatted source of every generated file, keyed by file name.

    Args:
        schema: a validated schema.
        schema_path: the schema path as the user gave it (named in the header).
        schema_bytes: the schema file's content (hashed in the header).
    """
    header = Header(schema_path, hashlib.sha256(schema_bytes).hexdigest(), __version__)
    raw = render(prepare(schema, header))
    return {name: format_source(raw[name], name) for name in OUTPUT_FILES}


def generate(schema_path: str, outdir: str = "generated", check: bool = False) -> list[str]:
    """Compile ``schema_path`` into ``outdir/<package>/``.

    Only files whose content changed are written. With ``check``, nothing is written.

    Args:
        schema_path: the schema file, as given by the user.
        outdir: the output directory (created if needed).
        check: compare only.

    Returns:
        The paths of the files that were stale (rewritten, or to rewrite under ``check``).

    Raises:
        SchemaError: the schema is invalid; nothing was written.
    """
    schema, data = load_schema(schema_path)
    sources = generate_sources(schema, schema_path, data)
    target = os.path.join(outdir, schema.package)
    stale = []
    for name, text in sources.items():
        path = os.path.join(target, name)
        try:
            with open(path, "rb") as file:
                current: bytes | None = file.read()
        except OSError:
            current = None
        if current != text.encode("utf-8"):
            stale.append(path)
    if not check:
        os.makedirs(target, exist_ok=True)
        for path in stale:
            with open(path, "wb") as file:
                file.write(sources[os.path.basename(path)].encode("utf-8"))
    return stale


def run_gen(schema_path: str, outdir: str = "generated", check: bool = False) -> int:
    """Run ``taskell gen``: print schema errors (or stale files) to stderr, else the files
    written (or that the output is up to date) to stdout.

    Returns:
        0 on success (or fresh output under ``check``), 1 on schema errors or stale output.
    """
    try:
        stale = generate(schema_path, outdir, check)
    except SchemaError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    if check and stale:
        for path in stale:
            print(f"{path}: stale; run taskell gen {schema_path}", file=sys.stderr)
        return 1
    for path in stale:  # without check, these were just written
        print(f"wrote {path}")
    if not stale:
        print(f"{outdir} is up to date with {schema_path}{'' if check else ' (nothing written)'}")
    return 0


def load_specs(schema_path: str) -> dict[str, TaskSpec[Any, Any, Any]]:
    """Live ``TaskSpec`` objects straight from a schema, keyed by task name.

    Their args models and adapters give the same JSON as the generated code's.

    Raises:
        SchemaError: the schema is invalid.
    """
    schema, _ = load_schema(schema_path)
    return build_specs(schema, {t.name: fingerprint(schema, t) for t in schema.tasks})
