"""``Registry``: the tasks a worker can run, each bound to a concrete handler function."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel

from .context import Context
from .spec import TaskSpec

__all__ = ["Binding", "Registry"]

A = TypeVar("A", bound=BaseModel)
P = TypeVar("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Binding:
    """One task's spec and the function that runs it on decoded args."""

    spec: TaskSpec[Any, Any, Any]
    run: Callable[[Context[Any], Any], Any]


class Registry:
    """Maps wire names (``<package>.<task>``) to handlers; built by generated ``registry(impl)``.

    Several registries (of several packages) can be merged with ``|``.
    """

    def __init__(self) -> None:
        self._bindings: dict[str, Binding] = {}

    def add(self, spec: TaskSpec[A, P, R], run: Callable[[Context[P], A], R]) -> None:
        """Bind ``spec`` to ``run``; a wire name may be bound once."""
        if spec.name in self._bindings:
            raise ValueError(f"task {spec.name} is already registered")
        self._bindings[spec.name] = Binding(spec, run)

    def get(self, name: str) -> Binding | None:
        """The binding for wire name ``name``, or None for an unknown task."""
        return self._bindings.get(name)

    def __or__(self, other: Registry) -> Registry:
        merged = Registry()
        for binding in [*self, *other]:
            merged.add(binding.spec, binding.run)
        return merged

    def __iter__(self) -> Iterator[Binding]:
        return iter(self._bindings.values())

    def __len__(self) -> int:
        return len(self._bindings)

    @property
    def queues(self) -> list[str]:
        """The queues of all registered tasks, in registration order without repeats."""
        return list(dict.fromkeys(b.spec.queue for b in self))
