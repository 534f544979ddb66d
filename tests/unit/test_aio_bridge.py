"""The asyncio bridge (``taskell.aio._handle``) with real sync handles filled from another
thread, as the connection's I/O thread fills them: no broker is involved, the replies are
handed to the handles directly (``deliver_progress`` / ``deliver_outcome``).

The broker-side behaviour is in tests/integration/test_rmq_aio_client.py.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import taskell
import taskell.aio
from generated.demo import SUM
from taskell.aio._handle import TaskHandle, Waker
from taskell.handle import HandleOwner, deliver_outcome, deliver_progress
from taskell.handle import TaskHandle as SyncTaskHandle

OWNER = HandleOwner(
    abort=lambda _id: None, sync_replies=lambda _timeout: None, run_loop_until=lambda _done, _timeout: False
)


def test_public_names_exist_and_are_documented() -> None:
    for name in taskell.aio.__all__:
        assert getattr(taskell.aio, name).__doc__, f"taskell.aio.{name} has no docstring"


def test_a_burst_of_replies_wakes_the_loop_once_per_turn_and_loses_nothing() -> None:
    """5,000 progress values and the result, delivered from a thread while the loop is busy,
    reach ``async for`` in order through far fewer loop wake-ups than values."""
    count = 5000

    async def main() -> tuple[list[int], int, int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        original = loop.call_soon_threadsafe

        def counting(callback: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        made: SyncTaskHandle[int, int] = SyncTaskHandle(OWNER, SUM, "task-1")
        handle = TaskHandle(Waker(loop), made)

        def io_thread() -> None:
            for n in range(count):
                deliver_progress(made, str(n).encode())
            deliver_outcome(made, b"42", ("result", b"42"))

        values = []
        thread = threading.Thread(target=io_thread)
        thread.start()
        async for value in handle.progress():
            values.append(value)
        thread.join()
        return values, await handle, wakeups

    values, result, wakeups = asyncio.run(main())
    assert values == list(range(count))
    assert result == 42
    print(f"{wakeups} wake-ups for {count} values")
    assert 1 <= wakeups < count // 10, f"{wakeups} loop wake-ups for {count} values"


def test_result_waits_without_blocking_and_times_out() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        made: SyncTaskHandle[int, int] = SyncTaskHandle(OWNER, SUM, "task-2")
        handle = TaskHandle(Waker(loop), made)
        with pytest.raises(TimeoutError, match="task-2"):
            await handle.result(timeout=0.05)
        loop.call_later(
            0.05, lambda: threading.Thread(target=deliver_outcome, args=(made, b"7", None)).start()
        )
        ticks = 0
        waiting = asyncio.ensure_future(handle.result(timeout=5))
        while not waiting.done():  # the loop keeps running while the result is awaited
            ticks += 1
            await asyncio.sleep(0.001)
        assert await waiting == 7 and ticks > 5
        failed: SyncTaskHandle[int, int] = SyncTaskHandle(OWNER, SUM, "task-3")
        deliver_outcome(failed, taskell.TaskAborted("task-3", "aborted"), None)
        with pytest.raises(taskell.TaskAborted):
            await TaskHandle(Waker(loop), failed)

    asyncio.run(main())


def test_an_async_handle_is_a_ref_to_its_sync_handle() -> None:
    async def main() -> None:
        made: SyncTaskHandle[int, int] = SyncTaskHandle(OWNER, SUM, "task-4")
        handle = TaskHandle(Waker(asyncio.get_running_loop()), made)
        assert isinstance(handle, taskell.Ref) and handle.id == "task-4"
        assert handle._task_handle() is made
        assert not handle.done() and handle.latest_progress is None and handle.retries == []

    asyncio.run(main())
