"""A ``TaskHandle`` wakes the threads that sleep on it (``result``, ``progress``), and makes
the condition they sleep on only when one does."""

from __future__ import annotations

import threading

import taskell
from generated.demo import SUM
from taskell import _wire
from taskell.handle import deliver_outcome, deliver_progress
from tests.support import wait_until


def test_a_handle_nobody_sleeps_on_makes_no_condition() -> None:
    with taskell.connect("memory://handle-no-waiter") as conn:
        handle = conn._new_handle(SUM)
        deliver_progress(handle, b"10")
        deliver_outcome(handle, b"7", (_wire.RESULT, b"7"))
        assert handle.result(timeout=1) == 7 and list(handle.progress()) == [10]
        assert handle._waiting is None


def test_sleeping_threads_wake_on_progress_and_on_the_outcome() -> None:
    with taskell.connect("memory://handle-waiters") as conn:
        handle = conn._new_handle(SUM)
        results: list[int] = []
        seen: list[int] = []
        waiter = threading.Thread(target=lambda: results.append(handle.result(timeout=10)))
        follower = threading.Thread(target=lambda: seen.extend(handle.progress()))
        waiter.start()
        follower.start()
        wait_until(lambda: handle._waiting is not None, 5, "a thread sleeps on the handle")
        deliver_progress(handle, b"50")
        wait_until(lambda: seen == [50], 5, "the follower woke for the progress value")
        assert waiter.is_alive() and follower.is_alive()
        deliver_outcome(handle, b"7", (_wire.RESULT, b"7"))
        waiter.join(5)
        follower.join(5)
        assert results == [7] and seen == [50]
        assert not waiter.is_alive() and not follower.is_alive()
