"""Async handlers without a broker: how ``registry()`` tells ``AsyncHandlers`` from ``Handlers``,
what a worker refuses, and the async worker on the in-memory broker (what users' own unit tests
run on). The behaviour on RabbitMQ is proven in tests/integration/test_rmq_aio_worker.py."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

import taskell
from examples.async_worker import AsyncImpl
from examples.worker import Impl
from generated.demo import SQUARE, SUM, Client, registry

_names = itertools.count()


def memory_config(**settings: Any) -> taskell.Config:
    return taskell.Config.load(None, env={}, url=f"memory://aio-unit-{next(_names)}", **settings)


def test_registry_binds_async_handlers_as_async_and_sync_ones_as_sync() -> None:
    assert all(binding.is_async for binding in registry(AsyncImpl()))
    assert not any(binding.is_async for binding in registry(Impl()))
    merged = registry(AsyncImpl()) | taskell.Registry()
    assert all(binding.is_async for binding in merged) and len(merged) == 8


def test_an_impl_mixing_def_and_async_def_is_refused_naming_them() -> None:
    class Mixed(AsyncImpl):
        def square(self, ctx: taskell.Context[None], x: int) -> int:  # type: ignore[override]
            return x * x

    with pytest.raises(TypeError, match=r"Mixed mixes async def \(sum, total, .*\) and def \(square\)"):
        registry(Mixed())  # type: ignore[arg-type]  # mypy refuses it too


def test_a_worker_refuses_a_registry_of_both_kinds() -> None:
    reg = taskell.Registry()
    reg.add(SQUARE, lambda ctx, args: args.x)

    async def total(ctx: taskell.Context[int], args: Any) -> int:
        return 0

    reg.add_async(SUM, total)
    with pytest.raises(taskell.ConfigError, match=r"async demo\.sum; sync demo\.square") as info:
        taskell.Worker(reg, memory_config())
    assert info.value.key == "registry"


def test_a_worker_refuses_async_handlers_in_a_process_pool() -> None:
    with pytest.raises(taskell.ConfigError, match=r"async handlers run on the worker.s event loop") as info:
        taskell.Worker(registry(AsyncImpl()), memory_config(pool="process"))
    assert info.value.key == "pool"
    taskell.Worker(registry(Impl()), memory_config(pool="process"))  # sync ones may


def test_async_handlers_on_the_memory_broker() -> None:
    config = memory_config(parallelism=10)
    with taskell.Worker(registry(AsyncImpl()), config) as worker, taskell.connect(config=config) as conn:
        assert worker.is_async
        demo = Client(conn)
        handles = [demo.sleep(seconds=0.2) for _ in range(10)]
        summed = demo.sum(numbers=[1, 2, 3])
        assert summed.result(timeout=10) == 6 and list(summed.progress())[-1] == 100
        assert [h.result(timeout=10) for h in handles] == [0.2] * 10
        with pytest.raises(taskell.TaskFailed, match="boom"):
            demo.fail().result(timeout=10)
