"""Schema errors: every kind, reported all at once as exact FILE:LINE:COL lines."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from taskell.codegen import run_gen
from taskell.codegen.model import Retry
from taskell.codegen.schema import parse_schema
from taskell.codegen.types import TypeSyntaxError, parse_type
from taskell.errors import SchemaError

HERE = Path(__file__).parent

BAD_EXPECTED = """\
F:1:10: unsupported schema format version; 'taskell:' must be 1
F:2:10: package name 'Demo' must be a lowercase identifier ([a-z][a-z0-9_]*)
F:3:1: unknown key 'colour' in the schema; expected one of: taskell, package, types, errors, tasks, schedules
F:8:7: duplicate key 'width' in fields of 'Image'
F:9:7: field name 'json' would shadow the pydantic BaseModel attribute 'json'
F:10:7: field name 'model_x' would shadow the pydantic BaseModel attribute 'model_x'
F:11:7: field name 'class' is a Python keyword
F:12:7: field name '_x' must not start with '_'
F:13:7: field name 'match' is a Python soft keyword
F:14:12: unknown type 'bytez' (did you mean 'bytes'?)
F:15:39: default of 'when' is not a valid datetime: Input should be a valid datetime
F:16:22: bad type 'list[int': expected ']', found end of type
F:17:20: bad type 'dict[int, int]': dict keys must be str
F:18:7: field name 'self' is reserved by generated stubs
F:19:3: type name 'image' must be PascalCase ([A-Z][A-Za-z0-9]*)
F:20:18: duplicate enum member 'a' in 'image'
F:20:21: enum member 'mro' would shadow an enum.Enum attribute
F:23:13: record 'Node' contains itself without list, dict, tuple or '| None' (Node -> Node)
F:26:5: type 'Both' has both 'fields' and 'enum'
F:27:3: type name 'Client' is reserved by the generated package
F:31:12: queue must not be empty
F:33:21: unknown type 'Imag' (did you mean 'Image'?)
F:34:7: argument name 'after' is reserved by generated stubs
F:35:34: default of 'size' is not a valid int: Input should be a valid integer
F:35:41: unknown key 'typo' in argument 'size' (did you mean 'type'?); expected one of: type, default, doc
F:36:21: bad type 'int | str': only 'T | None' unions are supported
F:37:13: unknown type 'Colr'
F:38:3: duplicate key 'sum' in tasks
F:40:3: task name 'fooBar' must be a lowercase identifier ([a-z][a-z0-9_]*)
"""


def errors(source: str, file: str = "F") -> list[str]:
    with pytest.raises(SchemaError) as info:
        parse_schema(textwrap.dedent(source), file)
    return info.value.errors


def test_every_error_at_once_with_positions() -> None:
    source = (HERE / "bad.schema.yaml").read_text()
    assert errors(source) == BAD_EXPECTED.splitlines()


def test_cli_prints_errors_exits_1_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(HERE)
    assert run_gen("bad.schema.yaml", str(tmp_path / "out"), False) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == BAD_EXPECTED.replace("F:", "bad.schema.yaml:")
    assert not (tmp_path / "out").exists()


def test_missing_version_at_1_1() -> None:
    assert errors("package: demo\n") == ["F:1:1: missing 'taskell:' (the schema format version, 1)"]


def test_empty_file() -> None:
    assert errors("") == ["F:1:1: missing 'taskell:' (the schema format version, 1)"]


def test_missing_package() -> None:
    assert errors("taskell: 1\n") == ["F:1:1: missing 'package:' (the generated package name)"]


def test_yaml_syntax_error() -> None:
    # The wording comes from the YAML parser (libyaml or PyYAML's own); the position is ours.
    [error] = errors("taskell: 1\npackage: [demo\n")
    assert error.startswith("F:3:1: invalid YAML: ") and "expected ',' or ']'" in error


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "nope.yaml")
    assert run_gen(missing, str(tmp_path / "out"), False) == 1
    assert capsys.readouterr().err == f"{missing}:1:1: cannot read schema: No such file or directory\n"


def test_root_not_a_mapping() -> None:
    assert errors("- a\n") == [
        "F:1:1: the schema must be a mapping",
        "F:1:1: missing 'taskell:' (the schema format version, 1)",
        "F:1:1: missing 'package:' (the generated package name)",
    ]


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("{type: bytes, default: 'not base64!'}", "default of 'a' is not a valid bytes: invalid base64"),
        ("{type: uuid, default: 12}", "default of 'a' is not a valid uuid: UUID input should be a string"),
        (
            "{type: date, default: '2024-13-01'}",
            "default of 'a' is not a valid date: Input should be a valid date",
        ),
        (
            "{type: datetime, default: '2024-01-01T00:00:00'}",
            "default of 'a' is not a valid datetime: Input should have timezone info",
        ),
        (
            "{type: 'list[int]', default: [1, x]}",
            "default of 'a' is not a valid list[int]: [1] Input should be a valid integer",
        ),
        (
            "{type: Color, default: purple}",
            "default of 'a' is not a valid Color: Input should be 'red' or 'green'",
        ),
        (
            "{type: Rec, default: {x: 1, y: 2}}",
            "default of 'a' is not a valid Rec: ['y'] Extra inputs are not permitted",
        ),
        ("{type: int | None, default: .nan}", "a default must be representable in JSON (no nan or infinity)"),
        ("{type: str, default: 1}", "default of 'a' is not a valid str: Input should be a valid string"),
    ],
)
def test_bad_defaults(arg: str, message: str) -> None:
    source = f"""\
        taskell: 1
        package: demo
        types:
          Color: {{enum: [red, green]}}
          Rec: {{fields: {{x: int}}}}
        tasks:
          t:
            args:
              a: {arg}
        """
    found = errors(source)
    assert len(found) == 1
    assert found[0].startswith("F:9:"), found
    assert message in found[0], found


def test_indirect_cycle_and_collisions() -> None:
    source = """\
        taskell: 1
        package: demo
        types:
          A: {fields: {b: B}}
          B: {fields: {a: A}}
          SumArgs: {fields: {x: int}}
          Ok: {fields: {children: 'list[Ok]', parent: Ok | None, more: 'dict[str, Ok]', t: 'tuple[Ok, ...]'}}
        tasks:
          sum: {}
          a_b: {}
          a__b: {}
        """
    assert errors(source) == [
        "F:5:19: record 'A' contains itself without list, dict, tuple or '| None' (A -> B -> A)",
        "F:9:3: the args model of task 'sum' is generated as 'SumArgs', which is already type 'SumArgs'",
        (
            "F:11:3: the args model of task 'a__b' is generated as 'ABArgs', which is already the args"
            " model of task 'a_b'"
        ),
    ]


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("int | str", "only 'T | None' unions are supported", 6),
        ("dict[int, int]", "dict keys must be str", 5),
        ("list[int", "expected ']', found end of type", 8),
        ("tuple[int]", "expected ', ...' (only tuple[T, ...] is supported), found ']'", 9),
        ("int[str]", "'int' takes no type arguments", 3),
        ("list", "'list' needs type arguments", 0),
        ("x$y", "unexpected character '$' in type", 1),
        ("", "expected a type name, found end of type", 0),
        ("int | None | None", "only 'T | None' unions are supported", 13),
        ("__import__('os')", "unexpected character '(' in type", 10),
    ],
)
def test_type_syntax_errors(text: str, message: str, offset: int) -> None:
    with pytest.raises(TypeSyntaxError) as info:
        parse_type(text)
    assert (info.value.message, info.value.offset) == (message, offset)


def test_types_parse_and_print_canonically() -> None:
    for text, canonical in [
        ("int", "int"),
        ("None | int", "int | None"),
        ("dict[ str ,list[Image|None] ]", "dict[str, list[Image | None]]"),
        ("tuple[ tuple[int, ...] , ...]", "tuple[tuple[int, ...], ...]"),
    ]:
        assert str(parse_type(text)[0]) == canonical


def test_errors_and_raises() -> None:
    source = """\
        taskell: 1
        package: shop
        types:
          Sku: {fields: {code: str}}
        errors:
          OutOfStock:
            doc: Not enough items left.
            fields:
              sku: Sku
              available: {type: int, default: 0}
          Sku: {fields: {n: int}}
          Bad:
            fields:
              message: str
              where: Skuu
              tags: {type: 'list[str]', default: []}
            retry: 3
          OutOfStockFields: {}
          lower: {}
        tasks:
          place:
            raises: [OutOfStok, OutOfStock, OutOfStock, Sku]
          other:
            raises: OutOfStock
        """
    assert errors(source) == [
        "F:11:3: error 'Sku' has the name of type 'Sku': types and errors share names",
        "F:14:7: field name 'message' would shadow the attribute 'message' of taskell.TaskFailed",
        "F:15:14: unknown type 'Skuu' (did you mean 'Sku'?)",
        "F:16:42: a default of an error field must be a single value",
        "F:17:5: unknown key 'retry' in error 'Bad'; expected one of: doc, fields",
        (
            "F:18:3: error 'OutOfStockFields' is generated as 'OutOfStockFields', which is already"
            " the fields model of error 'OutOfStock'"
        ),
        "F:19:3: error name 'lower' must be PascalCase ([A-Z][A-Za-z0-9]*)",
        "F:22:14: unknown error 'OutOfStok' (did you mean 'OutOfStock'?)",
        "F:22:37: duplicate error 'OutOfStock' in raises of 'place'",
        "F:24:13: raises of 'other' must be a list of error names",
    ]


def test_an_error_is_not_a_type() -> None:
    source = """\
        taskell: 1
        package: shop
        errors:
          OutOfStock: {fields: {available: int}}
        tasks:
          place:
            result: OutOfStock
        """
    assert errors(source) == ["F:7:13: unknown type 'OutOfStock'"]


def test_task_policies() -> None:
    source = """\
        taskell: 1
        package: shop
        errors:
          OutOfStock: {fields: {available: int}}
          Busy: {}
        tasks:
          place:
            raises: [OutOfStock]
            retry:
              attempts: 0
              backoff: exponental
              delay: soon
              max_delay: 10ms
              on: [OutOfStok, Busy, TimeLimitExceeded, OutOfStock, OutOfStock, 3]
              jitter: 1
            expires: -1m
            priority: 10
          other:
            retry: {attempts: 2.5, backoff: 1, delay: 2s, max_delay: 1500ms, on: []}
            time_limit: 1h
            expires: {a: 1}
            priority: high
          third:
            retry: 3
            time_limit: '1:30'
            priority: true
          fourth:
            retry: {}
            time_limit: 0s
            expires: 0
          fifth:
            retry: {attempts: 2, on: Busy, delay: -1}
            time_limit:
        """
    assert errors(source) == [
        "F:10:17: retry.attempts must be an integer of at least 1",
        "F:11:16: retry.backoff must be 'fixed' or 'exponential' (did you mean 'exponential'?)",
        "F:12:14: bad retry.delay: not a duration: 'soon' (write e.g. 30s, 10m, 1h30m, 500ms, 2d)",
        "F:14:12: unknown error 'OutOfStok' (did you mean 'OutOfStock'?)",
        "F:14:23: error 'Busy' is not in raises of 'place'; add it there to retry on it",
        "F:14:29: retry on 'TimeLimitExceeded' needs a time_limit on task 'place'",
        "F:14:60: duplicate error 'OutOfStock' in retry.on of 'place'",
        "F:14:72: an error name in retry.on must be a string",
        (
            "F:15:7: unknown key 'jitter' in retry of 'place'; expected one of: attempts, backoff, delay,"
            " max_delay, on"
        ),
        "F:16:14: bad expires: not a duration: '-1m' (write e.g. 30s, 10m, 1h30m, 500ms, 2d)",
        "F:17:15: priority must be an integer from 0 (lowest) to 9",
        "F:19:23: retry.attempts must be an integer of at least 1",
        "F:19:37: retry.backoff must be 'fixed' or 'exponential'",
        "F:19:62: retry.max_delay (1.5s) is shorter than retry.delay (2s)",
        "F:19:74: retry.on must not be empty (leave it out to retry on any failure)",
        "F:21:14: expires must be a duration (e.g. 30s, 10m, 1h30m, 500ms, 2d)",
        "F:22:15: priority must be an integer from 0 (lowest) to 9",
        "F:24:12: retry of 'third' must be a mapping",
        "F:25:17: bad time_limit: not a duration: '1:30' (write e.g. 30s, 10m, 1h30m, 500ms, 2d)",
        "F:26:15: priority must be an integer from 0 (lowest) to 9",
        "F:28:12: retry of 'fourth' needs 'attempts' (all attempts, the first included)",
        "F:29:17: time_limit must be longer than 0",
        "F:30:14: expires must be longer than 0",
        "F:32:30: retry.on of 'fifth' must be a list of error names",
        "F:32:43: bad retry.delay: a duration cannot be negative: -1.0",
        "F:33:16: time_limit must be a duration (e.g. 30s, 10m, 1h30m, 500ms, 2d)",
    ]


def test_task_policies_that_are_valid() -> None:
    source = """\
        taskell: 1
        package: shop
        errors:
          Busy: {}
        tasks:
          place:
            raises: [Busy]
            retry: {attempts: 1, backoff: fixed, delay: 0, max_delay: 0s, on: [Busy, TimeLimitExceeded]}
            time_limit: 1.5
            expires: 1d
            priority: 0
          other:
            retry: {attempts: 4}
            priority: 9
        """
    schema = parse_schema(textwrap.dedent(source), "F")
    place, other = schema.tasks
    assert place.retry == Retry(1, "fixed", 0.0, 0.0, ("Busy", "TimeLimitExceeded"))
    assert (place.time_limit, place.expires, place.priority) == (1.5, 86400.0, 0)
    assert other.retry == Retry(4, "exponential", 1.0, None, None)
    assert (other.time_limit, other.expires, other.priority) == (None, None, 9)


def test_explicit_tags_that_do_not_fit_their_text() -> None:
    source = """\
        taskell: 1
        package: shop
        tasks:
          place:
            args:
              a: {type: int, default: !!int x}
              b: {type: bool, default: !!bool maybe}
            priority: !!int high
            time_limit: 0
            retry: {attempts: 2, on: [TimeLimitExceeded]}
        """
    assert errors(source) == [
        "F:6:31: bad default: not a valid int: 'x'",
        "F:7:32: bad default: not a valid bool: 'maybe'",
        "F:8:15: priority must be an integer from 0 (lowest) to 9",
        "F:9:17: time_limit must be longer than 0",
    ]
