"""``LightFuture`` behaves as a ``concurrent.futures.Future`` (callbacks, results, errors,
``wait``, threads blocked on it), though it builds its condition only for a waiting thread."""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, InvalidStateError, wait

import pytest

from taskell.transport._future import LightFuture


def test_callbacks_run_once_on_settling_and_at_once_when_added_later() -> None:
    future: LightFuture[int] = LightFuture()
    seen: list[object] = []
    future.add_done_callback(lambda f: seen.append(f.result()))
    assert not future.done() and seen == []
    future.set_result(7)
    future.add_done_callback(lambda f: seen.append(("late", f.result())))
    assert future.done() and seen == [7, ("late", 7)]
    assert "_made_condition" not in future.__dict__  # nobody waited: no condition was built


def test_an_exception_is_raised_by_result_and_given_by_exception() -> None:
    future: LightFuture[None] = LightFuture()
    error = ValueError("refused")
    future.set_exception(error)
    assert future.exception() is error
    with pytest.raises(ValueError, match="refused"):
        future.result()


def test_a_failing_callback_does_not_stop_the_others() -> None:
    future: LightFuture[None] = LightFuture()
    seen: list[str] = []

    def failing(f: object) -> None:
        raise RuntimeError("bug in a callback")

    future.add_done_callback(failing)
    future.add_done_callback(lambda f: seen.append("second"))
    future.set_result(None)
    assert seen == ["second"]


def test_settling_twice_is_refused() -> None:
    future: LightFuture[int] = LightFuture()
    future.set_result(1)
    with pytest.raises(InvalidStateError):
        future.set_result(2)
    with pytest.raises(InvalidStateError):
        future.set_exception(ValueError())


def test_a_thread_blocked_on_result_wakes_when_another_settles_it() -> None:
    future: LightFuture[str] = LightFuture()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(future.result(timeout=10)))
    waiter.start()
    deadline = time.monotonic() + 5
    while "_made_condition" not in future.__dict__ and time.monotonic() < deadline:
        time.sleep(0.001)  # until the waiter built the condition it blocks on
    future.set_result("ok")
    waiter.join(5)
    assert got == ["ok"]


def test_result_times_out_while_pending() -> None:
    future: LightFuture[None] = LightFuture()
    with pytest.raises(TimeoutError):
        future.result(timeout=0.01)


def test_concurrent_futures_wait_sees_it_complete() -> None:
    pending: LightFuture[int] = LightFuture()
    settled: LightFuture[int] = LightFuture()
    settled.set_result(1)
    done, not_done = wait([pending, settled], timeout=0)
    assert done == {settled} and not_done == {pending}
    timer = threading.Timer(0.05, lambda: pending.set_result(2))
    timer.start()
    done, not_done = wait([pending], timeout=10, return_when=FIRST_COMPLETED)
    timer.join()
    assert done == {pending} and not not_done
