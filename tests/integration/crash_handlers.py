"""Handlers for the reliability tests: ``fail(message="crash")`` kills its worker process
(a poison message); everything else is the example implementation."""

from __future__ import annotations

import os

import taskell
from examples.worker import Impl
from generated.demo import registry


class Crashing(Impl):
    def fail(self, ctx: taskell.Context[None], message: str = "boom") -> None:
        if message == "crash":
            os._exit(3)  # the worker dies mid-task, as a segfaulting extension would
        super().fail(ctx, message)


handlers = registry(Crashing())
