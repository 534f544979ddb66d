"""Process mode (``pool = "process"``): each pool thread drives one forked child process that
runs handlers, so an abort can terminate a handler stuck in C code (``time.sleep``, a socket
read) by killing the child. The parent keeps the broker connection; children never touch it.

Children are forked (the registry, with its closures, cannot be pickled). A child only runs
the handler and talks over its pipe: task in; progress (encoded, throttled) and the final
reply out.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from typing import Any

from pydantic import ValidationError

from . import _wire
from .context import Context, task_logger
from .registry import Registry

__all__ = ["Child", "ChildDied"]

_PROGRESS_INTERVAL = 0.005  # seconds between progress messages a child sends to its parent


class ChildDied(Exception):
    """The child process ended while running a task (killed by an abort, or crashed)."""

    def __init__(self, exitcode: int | None) -> None:
        super().__init__(f"task process exited with code {exitcode}")
        self.exitcode = exitcode


class Child:
    """One forked process that runs tasks one at a time for one pool thread."""

    def __init__(self, registry: Registry) -> None:
        context = multiprocessing.get_context("fork")
        self._pipe, child_end = context.Pipe()
        self.process = context.Process(target=_child_main, args=(child_end, registry), daemon=True)
        self.process.start()
        child_end.close()

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def run(
        self,
        name: str,
        task_id: str,
        body: bytes,
        redelivered: bool,
        attempt: int,
        on_progress: Callable[[bytes], None],
    ) -> tuple[str, bytes]:
        """Run one task in the child; returns ``(reply kind, body)``.

        Raises:
            ChildDied: the child ended before replying.
        """
        try:
            self._pipe.send((name, task_id, body, redelivered, attempt))
            while True:
                kind, payload = self._pipe.recv()
                if kind != _wire.PROGRESS:
                    return kind, payload
                on_progress(payload)
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5)
            raise ChildDied(self.process.exitcode) from None

    def kill(self) -> None:
        """Terminate the child at once (an abort)."""
        if self.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)

    def close(self) -> None:
        """Ask the child to exit, kill it if it does not, and reap it."""
        with contextlib.suppress(OSError, BrokenPipeError):
            self._pipe.send(None)
        self.process.join(2)
        if self.process.is_alive():
            self.kill()
            self.process.join(2)
        self._pipe.close()
        self.process.close()


def _child_main(pipe: Pipe, registry: Registry) -> None:
    _die_with_parent()
    # Forked from a process holding broker connections: close every inherited descriptor but
    # the pipe and stdio, or the broker would keep a killed worker's tasks unacknowledged
    # for as long as the child lives.
    keep = pipe.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, _max_fd())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when children stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while (job := pipe.recv()) is not None:
        name, task_id, body, redelivered, attempt = job
        pipe.send(_run_one(pipe, registry, name, task_id, body, redelivered, attempt))


def _run_one(
    pipe: Pipe, registry: Registry, name: str, task_id: str, body: bytes, redelivered: bool, attempt: int
) -> tuple[str, bytes]:
    binding = registry.get(name)
    assert binding is not None  # the parent checked
    spec = binding.spec
    state: dict[str, Any] = {"sent_at": 0.0, "pending": None}

    def send(value: Any) -> None:
        try:
            pipe.send((_wire.PROGRESS, _wire.encode_progress(spec, value)))
        except (ValidationError, ValueError) as exc:
            ctx.logger.error("%s [%s]: progress value does not fit its type: %s", name, task_id, exc)

    def report(value: Any) -> None:
        now = time.monotonic()
        if now - state["sent_at"] >= _PROGRESS_INTERVAL:
            state["sent_at"], state["pending"] = now, None
            send(value)
        else:
            state["pending"] = (value,)

    ctx: Context[Any] = Context(
        task_id,
        report,
        redelivered=redelivered,
        attempt=attempt,
        logger=task_logger(name),
    )
    try:
        value = binding.run(ctx, spec.args.model_validate_json(body))
    except Exception as exc:
        return _wire.FAILED, _wire.failure_body(spec, exc, traceback.format_exc())
    if state["pending"] is not None:
        send(state["pending"][0])  # the last value before the result is always delivered
    return _wire.encode_result(spec, value)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when its parent dies (a SIGKILLed worker included)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)
