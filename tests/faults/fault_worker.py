"""The worker process of the fault suite: ``taskell.Worker.run()`` over the demo tasks.

Configured like any worker by ``TASKELL_*`` variables (URL, hosts, heartbeat, queue type...).
``square`` sleeps ``FAULT_TASK_SLEEP`` seconds, then appends ``TASK_ID REDELIVERED PID`` to
``FAULT_EXEC_LOG`` with one unbuffered ``O_APPEND`` write, so the suite can count executions
(and so duplicates) even of workers it SIGKILLs. Logs go to stderr at INFO. Run with the
repository root on ``PYTHONPATH`` (``Workers`` in ``_support.py`` does).

It also serves ``faults.flaky`` (``FLAKY``): ``square`` with a retry policy (3 attempts, 0.2 s
apart), whose attempts 1 and 2 fail for every x divisible by 10. Each attempt appends
``TASK_ID ATTEMPT PID ok|failed`` to ``FAULT_EXEC_LOG.attempts``; a success is also an execution.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time

import taskell
from examples.worker import Impl
from generated.demo import registry
from generated.demo.models import SQUARE, SquareArgs

FLAKY = dataclasses.replace(
    SQUARE,
    name="faults.flaky",
    retry=taskell.RetryPolicy(attempts=3, backoff="fixed", delay=0.2),
)


class Transient(Exception):
    """What a flaky attempt fails with."""


class FaultImpl(Impl):
    """The demo handlers; ``square`` is slowed down and records each execution."""

    def __init__(self, exec_log: str | None, sleep: float) -> None:
        super().__init__()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fd = os.open(exec_log, flags, 0o644) if exec_log else None
        self._attempts_fd = os.open(f"{exec_log}.attempts", flags, 0o644) if exec_log else None
        self._sleep = sleep
        self._pid = os.getpid()

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        if self._sleep:
            time.sleep(self._sleep)
        if self._fd is not None:
            os.write(self._fd, f"{ctx.task_id} {int(ctx.redelivered)} {self._pid}\n".encode())
        return x * x

    def flaky(self, ctx: taskell.Context[None], args: SquareArgs) -> int:
        if self._sleep:
            time.sleep(self._sleep)
        fails = args.x % 10 == 0 and ctx.attempt <= 2
        if self._attempts_fd is not None:
            line = f"{ctx.task_id} {ctx.attempt} {self._pid} {'failed' if fails else 'ok'}\n"
            os.write(self._attempts_fd, line.encode())
        if fails:
            raise Transient(f"attempt {ctx.attempt} of {args.x} fails on purpose")
        if self._fd is not None:
            os.write(self._fd, f"{ctx.task_id} {int(ctx.redelivered)} {self._pid}\n".encode())
        return args.x * args.x


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    impl = FaultImpl(os.environ.get("FAULT_EXEC_LOG"), float(os.environ.get("FAULT_TASK_SLEEP", "0")))
    flaky = taskell.Registry()
    flaky.add(FLAKY, impl.flaky)
    worker = taskell.Worker(registry(impl) | flaky, taskell.Config.load(None))
    status = worker.run()
    logging.getLogger("fault_worker").info("worker.run() returned %s", status)
    return status


if __name__ == "__main__":
    sys.exit(main())
