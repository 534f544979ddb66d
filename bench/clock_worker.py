"""A worker for the delay benchmark: the example handlers, with ``square`` answering the wall
clock time (in microseconds) at which it started, instead of its square."""

from __future__ import annotations

import time

import taskell
from examples.worker import Impl
from generated.demo import registry


class Clock(Impl):
    def square(self, ctx: taskell.Context[None], x: int) -> int:
        return time.time_ns() // 1000


handlers = registry(Clock())
