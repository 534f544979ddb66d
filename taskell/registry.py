"""``Registry``: the tasks a worker can run, each bound to a concrete handler function."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
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
    """One task's spec and the function that runs it on decoded args (a coroutine function
    when ``is_async``)."""

    spec: TaskSpec[Any, Any, Any]
    run: Callable[[Context[Any], Any], Any]
    is_async: bool = False


class Registry:
    """Maps wire names (``<package>.<task>``) to handlers; built by generated ``registry(impl)``.

    Several registries (of several packages) can be merged with ``|``.
    """

    def __init__(self) -> None:
        self._bindings: dict[str, Binding] = {}

    def add(self, spec: TaskSpec[A, P, R], run: Callable[[Context[P], A], R]) -> None:
        """Bind ``spec`` to ``run``; a wire name may be bound once."""
        self._add(Binding(spec, run))

    def add_async(self, spec: TaskSpec[A, P, R], run: Callable[[Context[P], A], Awaitable[R]]) -> None:
        """Bind ``spec`` to the coroutine function ``run``; the worker runs it on its event loop."""
        self._add(Binding(spec, run, is_async=True))

    def _add(self, binding: Binding) -> None:
        if binding.spec.name in self._bindings:
            raise ValueError(f"task {binding.spec.name} is already registered")
        self._bindings[binding.spec.name] = binding

    @staticmethod
    def is_async_impl(impl: object, methods: Sequence[str]) -> bool:
        """Whether ``impl`` implements ``methods`` with ``async def`` (generated ``registry``
        asks, to bind either ``Handlers`` or ``AsyncHandlers``); a missing method counts as a
        ``def`` one.

        Raises:
            TypeError: some of the methods are ``async def`` and some are not.
        """
        kinds = {name: inspect.iscoroutinefunction(getattr(impl, name, None)) for name in methods}
        if all(kinds.values()) and kinds:
            return True
        if any(kinds.values()):
            sync = ", ".join(name for name, is_async in kinds.items() if not is_async)
            coro = ", ".join(name for name, is_async in kinds.items() if is_async)
            raise TypeError(
                f"{type(impl).__name__} mixes async def ({coro}) and def ({sync}) handlers: "
                "implement every method of AsyncHandlers with async def, or every method of Handlers with def"
            )
        return False

    def get(self, name: str) -> Binding | None:
        """The binding for wire name ``name``, or None for an unknown task."""
        return self._bindings.get(name)

    def __or__(self, other: Registry) -> Registry:
        merged = Registry()
        for binding in [*self, *other]:
            merged._add(binding)
        return merged

    def __iter__(self) -> Iterator[Binding]:
        return iter(self._bindings.values())

    def __len__(self) -> int:
        return len(self._bindings)

    @property
    def queues(self) -> list[str]:
        """The queues of all registered tasks, in registration order without repeats."""
        return list(dict.fromkeys(b.spec.queue for b in self))
