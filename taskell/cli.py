"""The ``taskell`` command: gen, worker, scheduler, call, abort, dead-letters, inspect, dashboard.

Exit status, for every subcommand: 0 success; 1 task failed, aborted or timed out, or bad
input; 2 usage error (``gen`` and ``call`` without the extra ``taskell[gen]`` included); 3 broker
unavailable.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from .config import Config
from .durations import parse_duration
from .errors import BrokerUnavailable, ConfigError, PayloadError, SchemaError, TaskellError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BROKER = 0, 1, 2, 3


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    command: Callable[[argparse.Namespace], int] = args.command
    try:
        return command(args)
    except BrokerUnavailable as exc:
        print(f"taskell: broker unavailable: {exc}", file=sys.stderr)
        return EXIT_BROKER
    except (ConfigError, PayloadError, SchemaError) as exc:
        print(f"taskell: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TaskellError as exc:
        print(f"taskell: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except TimeoutError as exc:
        print(f"taskell: timed out: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


_EXIT_STATUS = """\
exit status: 0 success; 1 task failed, aborted or timed out, or bad input; 2 usage error;
3 broker unavailable"""

_SETTINGS = """\
settings, highest precedence first:
  1. flags: the worker's --parallelism, --queue and --metrics-port
  2. environment: TASKELL_URL=amqp://user:password@host:5672/vhost (amqps:// for TLS) sets the
     broker; TASKELL_<KEY> sets a [taskell] key (TASKELL_PARALLELISM=4, TASKELL_QUEUES=a,b) and
     TASKELL_RABBITMQ_<KEY> a [taskell.rabbitmq] key
  3. the [taskell] table of the config file: -c FILE, else ./taskell.toml if present
  4. the defaults (the broker amqp://guest:guest@localhost:5672/)"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskell",
        description="Typed task distribution over RabbitMQ.",
        epilog=f"{_SETTINGS}\n\n{_EXIT_STATUS}\n\nRun 'taskell COMMAND --help' for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, summary: str, run: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        uses_broker = name != "gen"
        epilog = f"{_SETTINGS}\n\n{_EXIT_STATUS}" if uses_broker else _EXIT_STATUS
        cmd = sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.set_defaults(command=run)
        if uses_broker:
            cmd.add_argument(
                "-c", "--config", metavar="FILE", help="config file (default: ./taskell.toml if present)"
            )
        return cmd

    gen = command("gen", "compile a schema into a typed Python package", _gen)
    gen.add_argument("schema", metavar="SCHEMA", help="the schema file (YAML)")
    gen.add_argument(
        "-o", "--outdir", default="generated", help="write OUTDIR/<package>/ (default: %(default)s)"
    )
    gen.add_argument(
        "--check", action="store_true", help="write nothing; list the stale files and exit 1 if any"
    )

    worker = command("worker", "run a worker for the tasks of MODULE:ATTR", _worker)
    worker.add_argument(
        "target",
        metavar="MODULE:ATTR",
        type=_target,
        help="a taskell.Registry, or a callable returning one (e.g. myapp.tasks:registry); "
        "the current directory is on the import path",
    )
    worker.add_argument(
        "--parallelism",
        type=_positive_int,
        metavar="N",
        help="tasks run at once (default: from the settings, 1)",
    )
    worker.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="Q",
        help="consume queue Q instead of the configured ones (repeat for several)",
    )
    worker.add_argument(
        "--metrics-port",
        type=_port,
        metavar="PORT",
        help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics (the host: metrics_host); "
        "0 picks a free port (default: from the settings, none)",
    )
    worker.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=_LOG_LEVELS,
        metavar="LEVEL",
        help=f"{', '.join(_LOG_LEVELS)} (default: %(default)s)",
    )

    scheduler = command(
        "scheduler",
        "submit the tasks of PACKAGE's schedules when due (any number may run; one leads)",
        _scheduler,
    )
    scheduler.add_argument(
        "package",
        metavar="PACKAGE",
        help="a generated package's import path, e.g. generated.demo (its SCHEDULES are fired); "
        "the current directory is on the import path",
    )
    scheduler.add_argument(
        "--list",
        action="store_true",
        help="print each schedule and its next 3 due times, and exit (no broker needed)",
    )
    scheduler.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=_LOG_LEVELS,
        metavar="LEVEL",
        help=f"{', '.join(_LOG_LEVELS)} (default: %(default)s)",
    )

    call = command("call", "submit one task and print its result as JSON", _call)
    call.add_argument("schema", metavar="SCHEMA", help="the schema file declaring TASK")
    call.add_argument("task", metavar="TASK", help="the task's name in the schema")
    call.add_argument(
        "json_args", metavar="JSON_ARGS", help="the task's arguments as a JSON object, e.g. '{\"x\": 4}'"
    )
    call.add_argument("--follow", action="store_true", help="draw a progress bar on stderr")
    call.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help="stop waiting after S seconds and exit 1 (the task goes on; default: wait until it ends)",
    )
    call.add_argument("--no-wait", action="store_true", help="print the task id and exit at once")
    when = call.add_mutually_exclusive_group()
    when.add_argument(
        "--delay",
        type=_delay,
        metavar="DURATION",
        help="the broker holds the task this long before it is queued (e.g. 30s, 10m, 1h30m)",
    )
    when.add_argument(
        "--eta",
        type=_eta,
        metavar="TIME",
        help="the broker holds the task until then: ISO 8601 with an offset, e.g. 2030-01-31T09:00:00+01:00",
    )
    call.add_argument(
        "--priority",
        type=_priority,
        metavar="N",
        help="0 (lowest) to 9; workers start waiting tasks of higher priority first (default: the schema's)",
    )
    call.add_argument(
        "--expires",
        type=_expires,
        metavar="DURATION",
        help="not started this long after it is due: the task never runs and the call fails "
        "(default: the schema's)",
    )

    abort = command("abort", "abort a queued or running task by id", _abort)
    abort.add_argument("task_id", metavar="TASK_ID", type=_task_id, help="the task id (a UUID)")
    abort.add_argument(
        "--wait",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds to collect the workers' answers (default: %(default)s)",
    )

    dead = command("dead-letters", "list dead-lettered messages as JSON lines, or requeue one", _dead_letters)
    dead.add_argument(
        "--requeue",
        metavar="TASK_ID",
        help="send this message back to the queue it came from (once) instead of listing",
    )
    dead.add_argument(
        "--limit",
        type=_positive_int,
        default=100,
        metavar="N",
        help="look at the first N messages only (default: %(default)s)",
    )

    inspect = command(
        "inspect", "list live workers, their running tasks and progress, and the schedulers", _inspect
    )
    inspect.add_argument(
        "--wait",
        type=_seconds,
        default=1.0,
        metavar="S",
        help="seconds to collect the workers' answers (default: %(default)s)",
    )

    dashboard = command(
        "dashboard",
        "serve a live web page of workers, running tasks, queues, dead letters and schedulers",
        _dashboard,
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    dashboard.add_argument("--port", type=int, default=8080, help="port to bind (default: %(default)s)")
    dashboard.add_argument(
        "--token",
        default=None,
        help="require this token (also env TASKELL_DASHBOARD_TOKEN); required off loopback",
    )
    return parser


# Argument types: a bad value is a usage error (exit 2) naming the option.

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MAX_DELAY_S = (2**38 - 1) / 1000  # transport.delays.MAX_DELAY_MS, without importing the transport


def _positive_int(text: str) -> int:
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _port(text: str) -> int:
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}")
    return value


def _delay(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds > _MAX_DELAY_S:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than the longest delay (about 8.7 years)")
    return seconds


def _expires(text: str) -> float:
    seconds = _delay(text)
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration > 0, got {text!r}")
    return seconds


def _eta(text: str) -> datetime:
    try:
        eta = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time, e.g. 2030-01-31T09:00:00+01:00: {text!r}"
        ) from None
    if eta.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time's offset (e.g. +00:00 or Z): {text!r}")
    if (eta - datetime.now(UTC)).total_seconds() > _MAX_DELAY_S:
        raise argparse.ArgumentTypeError(f"{text!r} is further away than the longest delay (about 8.7 years)")
    return eta


def _priority(text: str) -> int:
    try:
        value: int | None = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= 9:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to 9, got {text!r}")
    return value


def _task_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a task id (task ids are UUIDs): {text!r}") from None


def _target(text: str) -> str:
    module, _, attr = text.partition(":")
    if not module or not attr:
        raise argparse.ArgumentTypeError(f"expected MODULE:ATTR, e.g. myworker:handlers, got {text!r}")
    return text


def _duration(seconds: float) -> str:
    """``0.49999898`` as ``0.5 s``, ``1234.5`` as ``1234 s``."""
    return f"{seconds:.3g} s" if seconds < 100 else f"{seconds:.0f} s"


def _load_config(args: argparse.Namespace, **overrides: Any) -> Config:
    path = args.config
    if path is None and os.path.exists("taskell.toml"):
        path = "taskell.toml"
    return Config.load(path, **overrides)


# The schema tools' dependencies, from the extra taskell[gen]: import name -> distribution.
_GEN_EXTRA = {"jinja2": "Jinja2", "yaml": "PyYAML", "ruff": "ruff"}


def _has_gen_extra(command: str, modules: Sequence[str]) -> bool:
    """True if ``modules`` can be imported; else say which distributions to install."""
    missing = [_GEN_EXTRA[name] for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"taskell {command}: needs {', '.join(missing)}, from the extra taskell[gen]: "
            "pip install 'taskell[gen]'",
            file=sys.stderr,
        )
    return not missing


def _gen(args: argparse.Namespace) -> int:
    if not _has_gen_extra("gen", list(_GEN_EXTRA)):
        return EXIT_USAGE
    from .codegen import run_gen

    return run_gen(args.schema, args.outdir, check=args.check)


def _worker(args: argparse.Namespace) -> int:
    from .registry import Registry
    from .worker import Worker

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = _load_config(
        args, parallelism=args.parallelism, queues=args.queues, metrics_port=args.metrics_port
    )
    module_name, _, attr = args.target.partition(":")
    sys.path.insert(0, os.getcwd())
    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        print(f"taskell worker: cannot import {args.target}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    registry = target if isinstance(target, Registry) else target() if callable(target) else None
    if not isinstance(registry, Registry):
        print(f"taskell worker: {args.target} is not a taskell.Registry", file=sys.stderr)
        return EXIT_FAILED
    return Worker(registry, config).run()


def _scheduler(args: argparse.Namespace) -> int:
    from .schedule import Schedule

    sys.path.insert(0, os.getcwd())
    try:
        schedules = importlib.import_module(args.package).SCHEDULES
    except (ImportError, AttributeError) as exc:
        print(f"taskell scheduler: cannot import {args.package}.SCHEDULES: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if not isinstance(schedules, (tuple, list)) or not all(isinstance(s, Schedule) for s in schedules):
        print(
            f"taskell scheduler: {args.package}.SCHEDULES is not a tuple of taskell.Schedule", file=sys.stderr
        )
        return EXIT_FAILED
    if args.list:
        now = datetime.now(UTC)
        for s in schedules:
            when = f"cron {s.cron!r} ({s.timezone})" if s.cron is not None else f"every {s.every:g} s"
            print(f"{s.name}: task {s.task.name}, {when}")
            due = s.due_after(now)
            for _ in range(3):
                print(f"  {next(due).isoformat()}")
        return EXIT_OK
    from .scheduler import Scheduler

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not schedules:
        print(f"taskell scheduler: {args.package} declares no schedules", file=sys.stderr)
        return EXIT_FAILED
    return Scheduler(schedules, _load_config(args)).run()


def _call(args: argparse.Namespace) -> int:
    if not _has_gen_extra("call", ["jinja2", "yaml"]):
        return EXIT_USAGE
    from .codegen import load_specs
    from .connection import Connection

    specs = load_specs(args.schema)  # SchemaError: reported by main(), exit 1
    spec = specs.get(args.task)
    if spec is None:
        print(
            f"taskell call: no task {args.task!r} in {args.schema} (tasks: {', '.join(specs)})",
            file=sys.stderr,
        )
        return EXIT_FAILED
    config = _load_config(args)
    options = {
        name: getattr(args, name)
        for name in ("delay", "eta", "priority", "expires")
        if getattr(args, name) is not None
    }
    with Connection(config) as conn:
        handle = (conn.options(**options) if options else conn).submit_json(spec, args.json_args)
        if args.no_wait:
            conn.flush(config.connect_timeout)
            print(handle.id)
            return EXIT_OK
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        if args.follow:
            from ._progress_bar import follow

            follow(handle, args.timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            value = handle.result(timeout=remaining)
        except TimeoutError:
            print(
                f"taskell call: timed out after {_duration(args.timeout)}: task {handle.id} ({spec.name}) "
                f"is not done; it goes on (taskell abort {handle.id} stops it)",
                file=sys.stderr,
            )
            return EXIT_FAILED
        print(spec.result.dump_json(value).decode())
    return EXIT_OK


def _abort(args: argparse.Namespace) -> int:
    from .connection import Connection

    config = _load_config(args)
    with Connection(config) as conn:
        answers = conn.abort(args.task_id, wait=args.wait)
    recorded = config.abort_retention > 0
    if any(a.get("state") == "aborting" for a in answers):
        print(f"aborting {args.task_id}")
    elif any(a.get("state") == "finished" for a in answers):
        print(f"{args.task_id} already finished: nothing to abort")
    elif not answers and recorded:
        print(
            f"no live worker answered; the abort is kept on the broker for {config.abort_retention:g} s "
            f"(abort_retention), so a queued {args.task_id} will not start on a worker started meanwhile"
        )
    elif not answers:
        print(
            f"no live worker answered and abort_retention is 0: the abort of {args.task_id} reached "
            "nobody, so a queued copy will still run when a worker starts"
        )
    else:
        print(
            f"{args.task_id} is not running on any of {len(answers)} live worker(s): it is finished, "
            f"unknown, or still queued (then it will not start{'' if recorded else ' on these workers'})"
        )
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from .connection import Connection

    with Connection(_load_config(args)) as conn:
        answers = conn.inspect(wait=args.wait)
    # Workers first (by name), then schedulers: the leader, then the standbys.
    answers.sort(
        key=lambda a: (
            (1, a.get("role") != "leader", str(a["scheduler"]))
            if "scheduler" in a
            else (0, False, str(a.get("worker")))
        )
    )
    print(json.dumps(answers, indent=2))
    return EXIT_OK


def _dashboard(args: argparse.Namespace) -> int:
    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"taskell dashboard: needs {', '.join(missing)}, from the extra taskell[dashboard]: "
            "pip install 'taskell[dashboard]'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    import uvicorn

    from .dashboard.app import TOKEN_ENV, create_app, is_loopback
    from .dashboard.poller import Poller

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(args.host):
        print(
            f"taskell dashboard: binding to {args.host} (not loopback) needs a token: "
            f"--token TOKEN or {TOKEN_ENV}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    poller = Poller(_load_config(args))
    poller.start()
    try:
        uvicorn.run(create_app(poller, token=token), host=args.host, port=args.port, log_level="warning")
    finally:
        poller.stop()
    return EXIT_OK


def _dead_letters(args: argparse.Namespace) -> int:
    from ._dead_letters import RequeueError, dead_letters, format_entries, requeue

    config = _load_config(args)
    if args.requeue is not None:
        try:
            entry = requeue(config, args.requeue, limit=args.limit)
        except RequeueError as exc:
            print(f"taskell dead-letters: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"requeued {args.requeue} to queue {entry['queue']}")
        return EXIT_OK
    entries = dead_letters(config, limit=args.limit)
    if entries:
        print(format_entries(entries))
    return EXIT_OK
