"""The fenced blocks of README.md and docs/*.md, and the markers that say how each is checked.

Every fence has a language tag. An HTML comment on the last non-blank line before a fence
(invisible on GitHub) holds directives for that block, separated by ``;``::

    <!-- docs: file shop.schema.yaml; error -->

``skip REASON``   not run; the reason (the rest of the comment) is required.
``file NAME``     also saved as NAME in the page's working directory (yaml, toml, python).
``error``         yaml: the schema must be rejected; toml: loading must raise ConfigError.
``output``        the expected output of the previous checked block (text/json/... blocks).
``continue``      python: runs in the same interpreter as the previous python block.
``broker``        python/bash: needs the test broker (the page becomes an integration test).

How each language is checked (see test_docs.py):

``yaml``    a whole schema, compiled by the generator (and rendered); ``error``: the error lines.
``toml``    loaded by ``taskell.Config.load``; every value shown must be the loaded value.
``python``  executed, cwd = the page's working directory (a copy of ``tasks.schema.yaml``,
            ``generated/`` and ``examples/``); its stdout is its output.
``bash``    each line a ``taskell`` command (``VAR=value`` prefixes allowed), run with bash;
            exit status 0 unless the line's comment says ``[exit N]``; ``[background]`` starts a
            ``taskell worker`` that runs until the page ends. Output: stdout and stderr.
others      only as ``output`` or ``skip``.

The URL ``amqp://guest:guest@localhost:5672/%2F`` in a block is replaced by the test broker's
URL in ``broker`` blocks, and by an unreachable one elsewhere (so a block that needs a broker
and does not say so fails instead of reaching some other broker).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_URL = "amqp://guest:guest@localhost:5672/%2F"
DIRECTIVES = ("skip", "file", "error", "output", "continue", "broker")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs:(?P<body>.*?)-->\s*$")


@dataclass
class Block:
    """One fenced block: where it is, its language, its text and its directives."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    directives: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    """README.md and every page under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def parse_directives(body: str, where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    parts = body.split(";")
    for i, part in enumerate(parts):
        part = part.strip()
        if not part:
            continue
        name, _, arg = part.partition(" ")
        if name == "skip":  # the reason is the rest of the comment, ";" included
            arg = ";".join([arg, *parts[i + 1 :]])
        if name not in DIRECTIVES:
            raise ValueError(f"{where}: unknown docs directive {name!r} (known: {', '.join(DIRECTIVES)})")
        if name in ("skip", "file") and not arg.strip():
            raise ValueError(f"{where}: 'docs: {name}' needs an argument")
        found[name] = arg.strip()
        if name == "skip":
            break
    return found


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of one page, in order."""
    page = str(path.relative_to(ROOT)) if ROOT in path.parents else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"].strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""
        ):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            raise ValueError(f"{page}:{start + 1}: fence never closed")
        i += 1
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _MARKER.match(lines[before]) if before >= 0 else None
        where = f"{page}:{start + 1}"
        directives = parse_directives(marker["body"], where) if marker else {}
        lang = info.split()[0] if info else ""
        found.append(Block(page, start + 1, lang, "\n".join(body) + "\n", directives))
    return found
