"""The ``taskell`` command: gen, worker, call, abort, inspect.

Exit status, for every subcommand: 0 success; 1 task failed, aborted or timed out, or bad
input; 2 usage error; 3 broker unavailable.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import Config
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskell", description="Typed task distribution over RabbitMQ.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    gen = sub.add_parser("gen", help="compile a schema into typed Python")
    gen.add_argument("schema")
    gen.add_argument("-o", "--outdir", default="generated")
    gen.add_argument("--check", action="store_true", help="write nothing; exit 1 if the output is stale")
    gen.set_defaults(command=_gen)

    worker = sub.add_parser("worker", help="run a worker for MODULE:ATTR (a taskell.Registry)")
    worker.add_argument("target", metavar="MODULE:ATTR")
    _config_option(worker)
    worker.add_argument("--parallelism", type=int)
    worker.add_argument("--queue", action="append", dest="queues", metavar="Q")
    worker.add_argument("--log-level", default="INFO")
    worker.set_defaults(command=_worker)

    call = sub.add_parser("call", help="submit one task and print its result as JSON")
    call.add_argument("schema")
    call.add_argument("task")
    call.add_argument("json_args", metavar="JSON_ARGS")
    call.add_argument("--follow", action="store_true", help="draw a progress bar on stderr")
    call.add_argument("--timeout", type=float)
    call.add_argument("--no-wait", action="store_true", help="print the task id and exit")
    _config_option(call)
    call.set_defaults(command=_call)

    abort = sub.add_parser("abort", help="abort a queued or running task by id")
    abort.add_argument("task_id")
    abort.add_argument("--wait", type=float, default=1.0, help="seconds to collect workers' answers")
    _config_option(abort)
    abort.set_defaults(command=_abort)

    dead = sub.add_parser("dead-letters", help="list dead-lettered messages (JSON lines); --requeue one")
    dead.add_argument("--requeue", metavar="TASK_ID", help="send this message back to its queue")
    dead.add_argument("--limit", type=int, default=100)
    _config_option(dead)
    dead.set_defaults(command=_dead_letters)

    inspect = sub.add_parser("inspect", help="list live workers, their running tasks and progress")
    inspect.add_argument("--wait", type=float, default=1.0)
    _config_option(inspect)
    inspect.set_defaults(command=_inspect)
    return parser


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="taskell.toml (default: ./taskell.toml if present)")


def _load_config(args: argparse.Namespace, **overrides: Any) -> Config:
    path = args.config
    if path is None and os.path.exists("taskell.toml"):
        path = "taskell.toml"
    return Config.load(path, **overrides)


def _gen(args: argparse.Namespace) -> int:
    from .codegen import run_gen

    return run_gen(args.schema, args.outdir, check=args.check)


def _worker(args: argparse.Namespace) -> int:
    from .registry import Registry
    from .worker import Worker

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = _load_config(args, parallelism=args.parallelism, queues=args.queues)
    module_name, _, attr = args.target.partition(":")
    if not module_name or not attr:
        print("taskell worker: expected MODULE:ATTR, e.g. myworker:handlers", file=sys.stderr)
        return EXIT_USAGE
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


def _call(args: argparse.Namespace) -> int:
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
    with Connection(config) as conn:
        handle = conn.submit_json(spec, args.json_args)
        if args.no_wait:
            conn.flush(config.connect_timeout)
            print(handle.id)
            return EXIT_OK
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        if args.follow:
            from ._progress_bar import follow

            follow(handle, args.timeout)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        value = handle.result(timeout=remaining)
        print(spec.result.dump_json(value).decode())
    return EXIT_OK


def _abort(args: argparse.Namespace) -> int:
    from .connection import Connection

    with Connection(_load_config(args)) as conn:
        answers = conn.abort(args.task_id, wait=args.wait)
    if any(a.get("state") == "aborting" for a in answers):
        print(f"aborting {args.task_id}")
    elif any(a.get("state") == "finished" for a in answers):
        print(f"{args.task_id} already finished: nothing to abort")
    elif not answers:
        print(
            f"no live worker answered: the abort of {args.task_id} reached nobody, so a queued copy "
            "will still run when a worker starts"
        )
    else:
        print(
            f"{args.task_id} is not running on any of {len(answers)} live worker(s): it is finished, "
            "unknown, or still queued (then it will not start while these workers are up)"
        )
    return EXIT_OK


def _inspect(args: argparse.Namespace) -> int:
    from .connection import Connection

    with Connection(_load_config(args)) as conn:
        answers = conn.inspect(wait=args.wait)
    print(json.dumps(sorted(answers, key=lambda a: str(a.get("worker"))), indent=2))
    return EXIT_OK


def _dead_letters(args: argparse.Namespace) -> int:
    from ._dead_letters import dead_letters, format_entries

    entries = dead_letters(_load_config(args), limit=args.limit, requeue=args.requeue)
    if entries:
        print(format_entries(entries))
    return EXIT_OK
