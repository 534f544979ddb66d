"""The ``taskell`` command line without a broker: help texts, usage errors (exit 2)."""

from __future__ import annotations

import argparse
import importlib.util
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taskell import cli
from taskell.transport.delays import MAX_DELAY_MS
from tests.support import ROOT


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_argument_of_every_subcommand_has_a_help_text() -> None:
    commands = _subcommands(cli._parser())
    assert set(commands) == {
        "gen",
        "worker",
        "scheduler",
        "call",
        "abort",
        "dead-letters",
        "inspect",
        "dashboard",
    }
    missing = [
        f"{name} {action.option_strings or action.dest}"
        for name, parser in commands.items()
        for action in parser._actions
        if not action.help
    ]
    assert missing == []


def test_help_names_the_broker_variable_and_the_precedence(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--help"], ["worker", "--help"], ["call", "--help"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "TASKELL_URL" in out, argv
        assert "precedence" in out, argv
        assert "taskell.toml" in out, argv
        assert "2 usage error" in out, argv


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "COMMAND"),
        (["frobnicate"], "frobnicate"),
        (["abort", "not-an-id"], "not a task id"),
        (["abort", "123"], "UUID"),
        (["worker", "examples.worker"], "MODULE:ATTR"),
        (["worker", "m:a", "--parallelism", "0"], "--parallelism"),
        (["worker", "m:a", "--log-level", "loud"], "--log-level"),
        (["call", "s.yaml", "sum", "{}", "--timeout", "-1"], "--timeout"),
        (["call", "s.yaml", "sum", "{}", "--timeout", "nan"], "--timeout"),
        (["call", "s.yaml", "sum", "{}", "--delay", "soon"], "--delay"),
        (["call", "s.yaml", "sum", "{}", "--delay", "-5s"], "--delay"),
        (["call", "s.yaml", "sum", "{}", "--delay", "4000d"], "--delay"),
        (["call", "s.yaml", "sum", "{}", "--delay", "1s", "--eta", "2030-01-01T00:00:00Z"], "--eta"),
        (["call", "s.yaml", "sum", "{}", "--eta", "2030-01-01T00:00:00"], "--eta"),
        (["call", "s.yaml", "sum", "{}", "--eta", "tomorrow"], "--eta"),
        (["call", "s.yaml", "sum", "{}", "--priority", "10"], "--priority"),
        (["call", "s.yaml", "sum", "{}", "--priority", "high"], "--priority"),
        (["call", "s.yaml", "sum", "{}", "--expires", "0s"], "--expires"),
        (["call", "s.yaml", "sum", "{}", "--expires", "1x"], "--expires"),
        (["inspect", "--wait", "soon"], "--wait"),
        (["dead-letters", "--limit", "0"], "--limit"),
        (["worker", "m:a", "--metrics-port", "65536"], "--metrics-port"),
        (["worker", "m:a", "--metrics-port", "http"], "--metrics-port"),
    ],
)
def test_bad_arguments_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_call_reads_the_submission_options() -> None:
    args = cli._parser().parse_args(
        ["call", "s.yaml", "sum", "{}", "--delay", "1m30s", "--priority", "7", "--expires", "500ms"]
    )
    assert (args.delay, args.eta, args.priority, args.expires) == (90.0, None, 7, 0.5)
    args = cli._parser().parse_args(["call", "s.yaml", "sum", "{}", "--eta", "2030-01-31T09:00:00+01:00"])
    assert args.eta == datetime(2030, 1, 31, 8, 0, tzinfo=UTC)
    assert cli._MAX_DELAY_S == MAX_DELAY_MS / 1000


def test_abort_takes_the_canonical_form_of_a_task_id() -> None:
    args = cli._parser().parse_args(["abort", "6F9619FF-8B86-D011-B42D-00C04FC964FF"])
    assert args.task_id == "6f9619ff-8b86-d011-b42d-00c04fc964ff"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.49999898900000517, "0.5 s"),
        (30.0, "30 s"),
        (2.25, "2.25 s"),
        (0.001, "0.001 s"),
        (1234.5, "1234 s"),
    ],
)
def test_durations_read_well(seconds: float, text: str) -> None:
    assert cli._duration(seconds) == text


def test_gen_says_what_it_wrote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(ROOT)
    out = tmp_path / "out"
    files = [out / "demo" / name for name in ("__init__.py", "client.py", "models.py", "worker.py")]
    assert cli.main(["gen", "tasks.schema.yaml", "-o", str(out)]) == 0
    assert sorted(capsys.readouterr().out.splitlines()) == [f"wrote {path}" for path in files]

    assert cli.main(["gen", "tasks.schema.yaml", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"{out} is up to date with tasks.schema.yaml (nothing written)\n"

    assert cli.main(["gen", "tasks.schema.yaml", "-o", str(out), "--check"]) == 0
    assert capsys.readouterr().out == f"{out} is up to date with tasks.schema.yaml\n"

    files[1].write_text("# edited\n")
    assert cli.main(["gen", "tasks.schema.yaml", "-o", str(out), "--check"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{files[1]}: stale; run taskell gen tasks.schema.yaml\n"


def test_dashboard_without_its_extra_exits_2_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "starlette" else real(name, *a)
    )
    assert cli.main(["dashboard"]) == 2
    assert "taskell[dashboard]" in capsys.readouterr().err
