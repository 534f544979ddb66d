"""Schedules: validated by the schema compiler (exact FILE:LINE:COL lines), rendered as the
generated package's ``SCHEDULES``, and what those are at run time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from types import ModuleType

import pytest
from mypy import api

import taskell
from taskell.codegen import fingerprint, generate
from taskell.codegen.model import Schedule
from taskell.codegen.schema import parse_schema
from taskell.errors import SchemaError
from tests.codegen.test_codegen_hostile import import_package
from tests.support import ROOT


def errors(source: str) -> list[str]:
    with pytest.raises(SchemaError) as info:
        parse_schema(textwrap.dedent(source), "F")
    return info.value.errors


BAD = """\
    taskell: 1
    package: shop
    types:
      Color: {enum: [red, green]}
      Box: {fields: {size: int, color: {type: Color, default: red}}}
    tasks:
      square:
        args: {x: int, color: {type: Color, default: red}}
      report:
        args:
          day: int
          label: str
          box: {type: Box, default: {size: 1}}
      schedules: {}
    schedules:
      Nightly:
        task: sqaure
        cron: "0 3 * *"
      both:
        task: square
        cron: "0 3 * * *"
        every: 1m
        args: {x: 1}
      neither:
        task: square
        args: {x: 1}
      bad_cron:
        task: square
        cron: "61 3 * * *"
        timezone: Europe/Warsow
        args: {x: "1", color: blue, colr: 2}
      bad_every:
        task: report
        every: 0.5ms
        timezone: Europe/Warsaw
        args: {day: 1, box: {size: x, colour: red}}
      odd:
        task: [report]
        every: soon
        cron: 5
        args: [1]
        colour: x
      later:
        task: report
        cron: "0 3 31 2 *"
        timezone: ""
        args: {day: 1, label: 2, x: 3}
      bad_value: 3
      six:
        task: square
        cron: 0 0 3 * * *
        args: {x: .nan}
    """

BAD_EXPECTED = [
    "F:14:3: task name 'schedules' is reserved by the generated package (its SCHEDULES)",
    "F:16:3: schedule name 'Nightly' must be a lowercase identifier ([a-z][a-z0-9_]*)",
    "F:17:11: unknown task 'sqaure' (did you mean 'square'?)",
    "F:18:11: cron must have five fields (minute hour day-of-month month day-of-week), not 4",
    "F:22:5: schedule 'both' has both 'cron' and 'every'",
    "F:24:3: schedule 'neither' needs 'cron' or 'every'",
    "F:29:11: bad cron '61 3 * * *': Bad minute",
    "F:30:15: unknown timezone 'Europe/Warsow' (did you mean 'Europe/Warsaw'?)",
    "F:31:15: argument 'x' is not a valid int: Input should be a valid integer",
    "F:31:27: argument 'color' is not a valid Color: Input should be 'red' or 'green'",
    "F:31:33: unknown argument 'colr' of task 'square' (did you mean 'color'?)",
    "F:34:12: every must be at least 1ms",
    "F:35:5: timezone applies to cron only; every counts from the Unix epoch (UTC)",
    "F:36:11: missing argument 'label' of task 'report' (it has no default)",
    "F:36:25: argument 'box' is not a valid Box: ['size'] Input should be a valid integer",
    "F:38:11: task must be a string",
    "F:39:12: bad every: not a duration: 'soon' (write e.g. 30s, 10m, 1h30m, 500ms, 2d)",
    "F:40:5: schedule 'odd' has both 'cron' and 'every'",
    'F:40:11: cron must be a string (five fields, e.g. "0 3 * * *")',
    "F:41:11: args of schedule 'odd' must be a mapping",
    "F:42:5: unknown key 'colour' in schedule 'odd'; expected one of: doc, task, cron, every, timezone, args",
    "F:45:11: bad cron '0 3 31 2 *': Bad day-of-month",
    "F:46:15: timezone must not be empty",
    "F:47:27: argument 'label' is not a valid str: Input should be a valid string",
    "F:47:30: unknown argument 'x' of task 'report'",
    "F:48:14: schedule 'bad_value' must be a mapping",
    "F:51:11: cron must have five fields (minute hour day-of-month month day-of-week), not 6",
    "F:52:15: a schedule argument must be representable in JSON (no nan or infinity)",
]


def test_every_schedule_error_at_once_with_positions() -> None:
    assert errors(BAD) == BAD_EXPECTED


def test_schedules_must_be_a_mapping_of_names() -> None:
    source = """\
        taskell: 1
        package: shop
        schedules: [tick]
        """
    assert errors(source) == ["F:3:12: schedules must be a mapping"]
    source = """\
        taskell: 1
        package: shop
        tasks:
          ping: {}
        schedules:
          tick: {task: ping, every: 1s}
          tick: {task: ping, every: 2s}
          3: {task: ping, every: 1s}
          class: {task: ping, every: 1s}
          _x: {task: ping, every: 1s}
        """
    assert errors(source) == [
        "F:7:3: duplicate key 'tick' in schedules",
        "F:8:3: keys of schedules must be names",
        "F:9:3: schedule name 'class' is a Python keyword",
        "F:10:3: schedule name '_x' must not start with '_'",
    ]


def test_a_schedule_needs_a_task() -> None:
    source = """\
        taskell: 1
        package: shop
        tasks:
          ping: {}
        schedules:
          tick: {every: 1s}
          tock: {task: pong, every: 1s}
        """
    assert errors(source) == [
        "F:6:3: schedule 'tick' needs 'task'",
        "F:7:16: unknown task 'pong' (did you mean 'ping'?)",
    ]


def test_timezones() -> None:
    source = """\
        taskell: 1
        package: shop
        tasks:
          ping: {}
        schedules:
          a: {task: ping, cron: "0 3 * * *", timezone: Mars/Olympus}
          b: {task: ping, cron: "0 3 * * *", timezone: Warsaw}
          c: {task: ping, cron: "0 3 * * *", timezone: 3}
          d: {task: ping, cron: "0 3 * * *", timezone: America/New_York}
          e: {task: ping, cron: "0 3 * * *", timezone: UTC}
        """
    assert errors(source) == [
        "F:6:48: unknown timezone 'Mars/Olympus' (an IANA name such as Europe/Warsaw or UTC)",
        "F:7:48: unknown timezone 'Warsaw' (did you mean 'Europe/Warsaw'?)",
        "F:8:48: timezone must be a string",
    ]


def test_missing_args_without_an_args_key_point_at_the_schedule() -> None:
    source = """\
        taskell: 1
        package: shop
        tasks:
          add: {args: {a: int, b: int, c: {type: int, default: 0}}}
        schedules:
          sum:
            task: add
            every: 1h
        """
    assert errors(source) == [
        "F:6:3: missing argument 'a' of task 'add' (it has no default)",
        "F:6:3: missing argument 'b' of task 'add' (it has no default)",
    ]


def test_an_argument_of_a_bad_type_is_not_checked_again() -> None:
    # The unknown type is the one error: the schedule's value for it is not judged.
    source = """\
        taskell: 1
        package: shop
        tasks:
          paint: {args: {color: Colr}}
        schedules:
          daily: {task: paint, cron: "0 9 * * *", args: {color: red}}
        """
    assert errors(source) == ["F:4:25: unknown type 'Colr'"]


def test_schedules_is_a_reserved_name() -> None:
    source = """\
        taskell: 1
        package: shop
        types:
          SCHEDULES: {enum: [a]}
        """
    assert errors(source) == ["F:4:3: type name 'SCHEDULES' is reserved by the generated package"]
    source = source.replace("types:", "errors:").replace("{enum: [a]}", "{}")
    assert errors(source) == ["F:4:3: error name 'SCHEDULES' is reserved by the generated package"]


# --- valid schedules -------------------------------------------------------------------------

SCHEMA = """\
taskell: 1
package: timetable
types:
  Window:
    fields:
      start: datetime
      days: {type: int, default: 1}
tasks:
  square:
    args: {x: int}
    result: int
  report:
    queue: timetable.reports
    args:
      window: Window
      label: {type: str, default: daily}
      coupon: {type: bytes, default: ""}
      price: {type: decimal | None, default: null}
  ping: {}
schedules:
  tick:
    task: square
    every: 1m
    args: {x: 7}
  nightly_report:
    doc: |-
      The report of the day before,
      at 03:00 in Warsaw.
    task: report
    cron: "0 3 * * *"
    timezone: Europe/Warsaw
    args:
      window: {start: 2026-01-01T00:00:00+01:00}
      coupon: AP8=
      price: "12.50"
  hourly:
    task: report
    cron: 0 * * * *
    args: {window: {start: "2026-01-01T00:00:00Z", days: 2}, label: hourly}
  heartbeat:
    task: ping
    every: 1h30m
"""

RENDERED = '''\
SCHEDULES: tuple[_taskell.Schedule, ...] = (
    _taskell.Schedule(name="tick", task=SQUARE, args={"x": 7}, every=60.0),
    # The report of the day before,
    # at 03:00 in Warsaw.
    _taskell.Schedule(
        name="nightly_report",
        task=REPORT,
        args={
            "window": {"start": "2026-01-01T00:00:00+01:00", "days": 1},
            "coupon": "AP8=",
            "price": "12.50",
        },
        cron="0 3 * * *",
        timezone="Europe/Warsaw",
    ),
    _taskell.Schedule(
        name="hourly",
        task=REPORT,
        args={"window": {"start": "2026-01-01T00:00:00Z", "days": 2}, "label": "hourly"},
        cron="0 * * * *",
        timezone="UTC",
    ),
    _taskell.Schedule(name="heartbeat", task=PING, args={}, every=5400.0),
)
"""The schedules of package ``timetable``, in schema order; ``taskell scheduler`` fires them."""
'''


def test_the_ir() -> None:
    schema = parse_schema(SCHEMA, "F")
    assert schema.schedules == (
        Schedule("tick", "square", None, 60.0, "UTC", {"x": 7}),
        Schedule(
            "nightly_report",
            "report",
            "0 3 * * *",
            None,
            "Europe/Warsaw",
            {"window": {"start": "2026-01-01T00:00:00+01:00", "days": 1}, "coupon": "AP8=", "price": "12.50"},
            "The report of the day before,\nat 03:00 in Warsaw.",
        ),
        Schedule(
            "hourly",
            "report",
            "0 * * * *",
            None,
            "UTC",
            {"window": {"start": "2026-01-01T00:00:00Z", "days": 2}, "label": "hourly"},
        ),
        Schedule("heartbeat", "ping", None, 5400.0),
    )


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("schedules")
    (directory / "timetable.schema.yaml").write_text(SCHEMA)
    generate(str(directory / "timetable.schema.yaml"), str(directory / "out"))
    return directory / "out"


@pytest.fixture(scope="module")
def generated(out: Path) -> ModuleType:
    return import_package(out, "timetable")


def test_rendered(out: Path) -> None:
    source = (out / "timetable" / "models.py").read_text()
    assert source.endswith("\n\n\n" + RENDERED)
    init = (out / "timetable" / "__init__.py").read_text()
    assert "    SCHEDULES,\n" in init
    assert '    "SCHEDULES",\n' in init


def test_values_at_runtime(generated: ModuleType) -> None:
    tick, nightly, hourly, heartbeat = generated.SCHEDULES
    assert all(isinstance(s, taskell.Schedule) for s in generated.SCHEDULES)
    assert [s.name for s in generated.SCHEDULES] == ["tick", "nightly_report", "hourly", "heartbeat"]
    assert [s.task for s in generated.SCHEDULES] == [
        generated.SQUARE,
        generated.REPORT,
        generated.REPORT,
        generated.PING,
    ]
    assert (tick.every, tick.cron, tick.timezone, tick.args) == (60.0, None, "UTC", {"x": 7})
    assert (nightly.every, nightly.cron, nightly.timezone) == (None, "0 3 * * *", "Europe/Warsaw")
    assert (heartbeat.every, heartbeat.args) == (5400.0, {})
    # The args are the task's arguments in JSON form: its args model takes them as they are.
    args = nightly.task.args.model_validate_json(json.dumps(nightly.args))
    assert args == generated.ReportArgs(
        window=generated.Window(start=datetime(2025, 12, 31, 23, tzinfo=UTC)),
        coupon=b"\x00\xff",
        price=__import__("decimal").Decimal("12.50"),
    )
    assert hourly.task.args.model_validate_json(json.dumps(hourly.args)).label == "hourly"
    after = datetime(2026, 7, 1, 12, tzinfo=UTC)
    assert list(islice(nightly.due_after(after), 2)) == [
        datetime(2026, 7, 2, 1, tzinfo=UTC),
        datetime(2026, 7, 3, 1, tzinfo=UTC),
    ]
    assert next(tick.due_after(after)) == datetime(2026, 7, 1, 12, 1, tzinfo=UTC)


def test_no_schedules_is_an_empty_tuple(tmp_path: Path) -> None:
    (tmp_path / "bare.schema.yaml").write_text("taskell: 1\npackage: bare\ntasks:\n  ping: {}\n")
    generate(str(tmp_path / "bare.schema.yaml"), str(tmp_path / "out"))
    source = (tmp_path / "out" / "bare" / "models.py").read_text()
    assert "\nSCHEDULES: tuple[_taskell.Schedule, ...] = ()\n" in source
    assert import_package(tmp_path / "out", "bare").SCHEDULES == ()


def test_schedules_leave_the_fingerprints_alone() -> None:
    bare = SCHEMA.split("schedules:")[0]
    with_schedules, without = parse_schema(SCHEMA, "F"), parse_schema(bare, "F")
    assert without.schedules == ()
    assert [fingerprint(with_schedules, t) for t in with_schedules.tasks] == [
        fingerprint(without, t) for t in without.tasks
    ]


def test_deterministic_across_hash_seeds(out: Path, tmp_path: Path) -> None:
    schema = str(out.parent / "timetable.schema.yaml")
    script = "from taskell.codegen import generate; generate({!r}, {!r})"
    for seed in ("1", "2"):
        target = tmp_path / seed
        command = [sys.executable, "-P", "-c", script.format(schema, str(target))]
        subprocess.run(command, check=True, env={"PYTHONHASHSEED": seed, "PATH": ""}, cwd=ROOT)
        for file in sorted((out / "timetable").glob("*.py")):
            assert (target / "timetable" / file.name).read_bytes() == file.read_bytes(), file.name


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
            str(ROOT / ".mypy_cache" / "codegen-schedules"),
            "--no-pretty",
            str(out / "timetable"),
        ]
    )
    assert status == 0, stdout + stderr
