"""The README's performance figures come from committed reference runs, through
``bench/readme_tables.py``, and cannot drift from them (no broker: reads files only)."""

from __future__ import annotations

import re
from pathlib import Path

from bench import readme_tables

README = readme_tables.README


def performance_section() -> str:
    text = README.read_text()
    start = text.index("## Performance\n")
    end = text.find("\n## ", start + 1)
    return text[start : None if end == -1 else end]


def test_readme_tables_equal_the_scripts_output() -> None:
    text = README.read_text()
    assert readme_tables.render(text) == text, (
        "README.md's performance tables differ from their reference files: "
        ".venv/bin/python -m bench.readme_tables --write"
    )


def test_every_generated_part_names_committed_files_and_is_filled() -> None:
    parts = readme_tables.BLOCK.findall(README.read_text())
    assert {kind for _, kind, _, _, _ in parts} == set(readme_tables.KINDS)
    for _, kind, sources, body, _ in parts:
        for source in sources.split():
            assert source.startswith("bench/reference/"), f"bench:{kind} reads {source}, not a reference file"
            assert (readme_tables.ROOT / source).is_file(), source
        assert body.count("\n|") >= 2, f"bench:{kind} has no table"


def test_no_figure_outside_the_generated_parts() -> None:
    # Prose and commands only: every number of the section is generated from a reference file.
    section = readme_tables.BLOCK.sub("", performance_section())
    section = re.sub(r"```.*?```|<!--.*?-->", "", section, flags=re.S)
    assert not re.findall(r".{0,30}\d.{0,30}", section)


def test_a_stale_figure_is_caught() -> None:
    text = README.read_text()
    parts = readme_tables.BLOCK.search(text)
    assert parts is not None
    stale = text.replace(parts.group(4), parts.group(4).replace("|", "| 1 ", 1), 1)
    assert readme_tables.render(stale) == text != stale


def test_use_points_a_part_at_a_file_of_the_same_name(tmp_path: Path) -> None:
    text = README.read_text()
    match = readme_tables.BLOCK.search(text)
    assert match is not None
    source = match.group(3).split()[0]
    copy = tmp_path / Path(source).name
    copy.write_text((readme_tables.ROOT / source).read_text())
    rendered = readme_tables.render(text, [str(copy)])
    assert f"<!-- bench:{match.group(2)} {copy}" in rendered
    assert f"raw data: `{copy}`" in rendered
