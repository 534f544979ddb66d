"""The worker process of the fault suite: ``taskell.Worker.run()`` over the demo tasks.

Configured like any worker by ``TASKELL_*`` variables (URL, hosts, heartbeat, queue type...).
``square`` sleeps ``FAULT_TASK_SLEEP`` seconds, then appends ``TASK_ID REDELIVERED PID`` to
``FAULT_EXEC_LOG`` with one unbuffered ``O_APPEND`` write, so the suite can count executions
(and so duplicates) even of workers it SIGKILLs. Logs go to stderr at INFO. Run with the
repository root on ``PYTHONPATH`` (``Workers`` in ``_support.py`` does).
"""

from __future__ import annotations

import logging
import os
import sys
import time

import taskell
from examples.worker import Impl
from generated.demo import registry


class FaultImpl(Impl):
    """The demo handlers; ``square`` is slowed down and records each execution."""

    def __init__(self, exec_log: str | None, sleep: float) -> None:
        super().__init__()
        self._fd = os.open(exec_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if exec_log else None
        self._sleep = sleep
        self._pid = os.getpid()

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        if self._sleep:
            time.sleep(self._sleep)
        if self._fd is not None:
            os.write(self._fd, f"{ctx.task_id} {int(ctx.redelivered)} {self._pid}\n".encode())
        return x * x


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    impl = FaultImpl(os.environ.get("FAULT_EXEC_LOG"), float(os.environ.get("FAULT_TASK_SLEEP", "0")))
    worker = taskell.Worker(registry(impl), taskell.Config.load(None))
    status = worker.run()
    logging.getLogger("fault_worker").info("worker.run() returned %s", status)
    return status


if __name__ == "__main__":
    sys.exit(main())
