"""The worker process of the fault suite: ``taskell.Worker.run()`` over the demo tasks.

Configured like any worker by ``TASKELL_*`` variables (URL, hosts, heartbeat, queue type...).
``square`` sleeps ``FAULT_TASK_SLEEP`` seconds, then appends ``TASK_ID REDELIVERED PID`` to
``FAULT_EXEC_LOG`` with one unbuffered ``O_APPEND`` write, so the suite can count executions
(and so duplicates) even of workers it SIGKILLs. Logs go to stderr at INFO. Run with the
repository root on ``PYTHONPATH`` (``Workers`` in ``_support.py`` does).

It also serves ``faults.flaky`` (``FLAKY``): ``square`` with a retry policy (3 attempts, 0.2 s
apart), whose attempts 1 and 2 fail for every x divisible by 10. Each attempt appends
``TASK_ID ATTEMPT PID ok|failed`` to ``FAULT_EXEC_LOG.attempts``; a success is also an execution.

With ``FAULT_ASYNC=1`` the same handlers are ``async def`` ones (``AsyncHandlers``), run on the
worker's event loop; ``square`` then awaits ``asyncio.sleep`` instead of sleeping.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import sys
import time

import taskell
from examples.async_worker import AsyncImpl
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


class Recorder:
    """Appends executions and attempts to the logs (one unbuffered write each)."""

    def __init__(self, exec_log: str | None) -> None:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._fd = os.open(exec_log, flags, 0o644) if exec_log else None
        self._attempts_fd = os.open(f"{exec_log}.attempts", flags, 0o644) if exec_log else None
        self._pid = os.getpid()

    def executed(self, ctx: taskell.Context[None]) -> None:
        if self._fd is not None:
            os.write(self._fd, f"{ctx.task_id} {int(ctx.redelivered)} {self._pid}\n".encode())

    def attempt(self, ctx: taskell.Context[None], x: int) -> None:
        """Record an attempt of ``flaky``; raises ``Transient`` if this one fails."""
        fails = x % 10 == 0 and ctx.attempt <= 2
        if self._attempts_fd is not None:
            line = f"{ctx.task_id} {ctx.attempt} {self._pid} {'failed' if fails else 'ok'}\n"
            os.write(self._attempts_fd, line.encode())
        if fails:
            raise Transient(f"attempt {ctx.attempt} of {x} fails on purpose")
        self.executed(ctx)


class FaultImpl(Impl):
    """The demo handlers; ``square`` is slowed down and records each execution."""

    def __init__(self, recorder: Recorder, sleep: float) -> None:
        super().__init__()
        self._recorder = recorder
        self._sleep = sleep

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        if self._sleep:
            time.sleep(self._sleep)
        self._recorder.executed(ctx)
        return x * x

    def flaky(self, ctx: taskell.Context[None], args: SquareArgs) -> int:
        if self._sleep:
            time.sleep(self._sleep)
        self._recorder.attempt(ctx, args.x)
        return args.x * args.x


class AsyncFaultImpl(AsyncImpl):
    """``FaultImpl`` with ``async def`` handlers."""

    def __init__(self, recorder: Recorder, sleep: float) -> None:
        super().__init__()
        self._recorder = recorder
        self._sleep = sleep

    async def square(self, ctx: taskell.Context[None], x: int) -> int:
        if self._sleep:
            await asyncio.sleep(self._sleep)
        self._recorder.executed(ctx)
        return x * x

    async def flaky(self, ctx: taskell.Context[None], args: SquareArgs) -> int:
        if self._sleep:
            await asyncio.sleep(self._sleep)
        self._recorder.attempt(ctx, args.x)
        return args.x * args.x


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    recorder = Recorder(os.environ.get("FAULT_EXEC_LOG"))
    sleep = float(os.environ.get("FAULT_TASK_SLEEP", "0"))
    flaky = taskell.Registry()
    if os.environ.get("FAULT_ASYNC") == "1":
        async_impl = AsyncFaultImpl(recorder, sleep)
        reg = registry(async_impl)
        flaky.add_async(FLAKY, async_impl.flaky)
    else:
        impl = FaultImpl(recorder, sleep)
        reg = registry(impl)
        flaky.add(FLAKY, impl.flaky)
    worker = taskell.Worker(reg | flaky, taskell.Config.load(None))
    status = worker.run()
    logging.getLogger("fault_worker").info("worker.run() returned %s", status)
    return status


if __name__ == "__main__":
    sys.exit(main())
