"""Task policies (retry, time_limit, expires, priority) from the schema to the generated TaskSpec."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest
from mypy import api

import taskell
from taskell.codegen import fingerprint, generate, load_specs
from taskell.codegen.schema import parse_schema
from tests.codegen.test_codegen_hostile import import_package
from tests.support import ROOT

SCHEMA = """\
taskell: 1
package: policies
errors:
  Busy: {}
  Gone: {fields: {why: str}}
tasks:
  place:
    queue: policies.orders
    args: {sku: str}
    raises: [Busy, Gone]
    retry:
      attempts: 4
      backoff: fixed
      delay: 700ms
      max_delay: 1m
      on: [TimeLimitExceeded, Busy]
    time_limit: 1h30m
    expires: 2d
    priority: 7
  audit:
    queue: policies.orders
    retry: {attempts: 2}
  urgent:
    priority: 0
  ping:
    queue: policies.other
"""

PLACE_SPEC = """\
PLACE: _taskell.TaskSpec[PlaceArgs, None, None] = _taskell.TaskSpec(
    name="policies.place",
    queue="policies.orders",
    fingerprint="{fingerprint}",
    args=PlaceArgs,
    progress=_pydantic.TypeAdapter(None),
    result=_pydantic.TypeAdapter(None),
    errors=(
        _taskell.ErrorSpec(name="policies.Busy", exception=Busy, fields=BusyFields),
        _taskell.ErrorSpec(name="policies.Gone", exception=Gone, fields=GoneFields),
    ),
    retry=_taskell.RetryPolicy(
        attempts=4,
        backoff="fixed",
        delay=0.7,
        max_delay=60.0,
        on=("taskell.TimeLimitExceeded", "policies.Busy"),
    ),
    time_limit=5400.0,
    expires=172800.0,
    priority=7,
    queue_priorities=True,
)
"""


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("policies")
    (directory / "policies.schema.yaml").write_text(SCHEMA)
    generate(str(directory / "policies.schema.yaml"), str(directory / "out"))
    return directory / "out"


@pytest.fixture(scope="module")
def generated(out: Path) -> ModuleType:
    return import_package(out, "policies")


def test_rendered_spec(out: Path) -> None:
    source = (out / "policies" / "models.py").read_text()
    place = next(t for t in parse_schema(SCHEMA, "F").tasks if t.name == "place")
    expected = PLACE_SPEC.replace("{fingerprint}", fingerprint(parse_schema(SCHEMA, "F"), place))
    assert expected in source


def test_spec_values_at_runtime(generated: ModuleType) -> None:
    place, audit, urgent, ping = generated.PLACE, generated.AUDIT, generated.URGENT, generated.PING
    assert place.retry == taskell.RetryPolicy(
        attempts=4,
        backoff="fixed",
        delay=0.7,
        max_delay=60.0,
        on=("taskell.TimeLimitExceeded", "policies.Busy"),
    )
    assert (place.time_limit, place.expires, place.priority, place.queue_priorities) == (
        5400.0,
        172800.0,
        7,
        True,
    )
    # On the queue of a task with a priority, without one of its own.
    assert audit.retry == taskell.RetryPolicy(attempts=2, backoff="exponential", delay=1.0)
    assert (audit.time_limit, audit.expires, audit.priority, audit.queue_priorities) == (
        None,
        None,
        None,
        True,
    )
    # Priority 0 is declared, so its queue (the default) has priorities.
    assert (urgent.retry, urgent.priority, urgent.queue_priorities) == (None, 0, True)
    assert (ping.retry, ping.time_limit, ping.expires, ping.priority, ping.queue_priorities) == (
        None,
        None,
        None,
        None,
        False,
    )


def test_live_specs_of_taskell_call_match(out: Path, generated: ModuleType) -> None:
    live = load_specs(str(out.parent / "policies.schema.yaml"))
    for name in ("place", "audit", "urgent", "ping"):
        made = getattr(generated, name.upper())
        fields = ("fingerprint", "retry", "time_limit", "expires", "priority", "queue_priorities")
        assert [getattr(live[name], f) for f in fields] == [getattr(made, f) for f in fields], name


def test_policies_leave_the_fingerprint_alone() -> None:
    bare = textwrap.dedent("""\
        taskell: 1
        package: policies
        errors:
          Busy: {}
          Gone: {fields: {why: str}}
        tasks:
          place:
            queue: policies.orders
            args: {sku: str}
          audit: {}
          urgent: {}
          ping: {}
        """)
    with_policies, without = parse_schema(SCHEMA, "F"), parse_schema(bare, "F")
    assert [fingerprint(with_policies, t) for t in with_policies.tasks] == [
        fingerprint(without, t) for t in without.tasks
    ]


def test_deterministic_across_hash_seeds(out: Path, tmp_path: Path) -> None:
    schema = str(out.parent / "policies.schema.yaml")
    script = "from taskell.codegen import generate; generate({!r}, {!r})"
    for seed in ("1", "2"):
        target = tmp_path / seed
        command = [sys.executable, "-P", "-c", script.format(schema, str(target))]
        subprocess.run(command, check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=ROOT)
        for file in sorted((out / "policies").glob("*.py")):
            assert (target / "policies" / file.name).read_bytes() == file.read_bytes(), file.name


def test_formatted_by_ruff(out: Path) -> None:
    ruff = [sys.executable, "-m", "ruff", "format", "--check", "--config", str(ROOT / "pyproject.toml"), "."]
    proc = subprocess.run(ruff, cwd=out, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_accepts_the_generated_package(out: Path) -> None:
    stdout, stderr, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "codegen-policies"),
            "--no-pretty",
            str(out / "policies"),
        ]
    )
    assert status == 0, stdout + stderr
