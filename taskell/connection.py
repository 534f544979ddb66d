"""Placeholder being written now by the lead: the real Connection lands shortly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from .handle import Ref, TaskHandle
from .spec import TaskSpec

P = TypeVar("P")
R = TypeVar("R")


class Connection:
    def submit(
        self, spec: TaskSpec[Any, P, R], args: Mapping[str, object], *, after: Sequence[Ref[object]] = ()
    ) -> TaskHandle[P, R]:
        raise NotImplementedError

    def abort(self, task_id: str) -> None:
        raise NotImplementedError
