"""``LightFuture``: a ``concurrent.futures.Future`` for the transport's hot path.

Every publish returns a future (its confirm), several per task. A standard ``Future`` builds a
``threading.Condition`` in ``__init__`` and notifies it on every ``set_result``, though almost
all of these futures are only ever observed through ``add_done_callback``. This one guards its
state with a plain lock and builds the condition only when a thread waits (``result``,
``exception`` or ``concurrent.futures.wait`` on a future not done yet).

It keeps the attributes ``concurrent.futures.wait`` and the inherited methods use (``_state``,
``_waiters``, ``_done_callbacks``, ``_condition``), so it is a ``Future`` in every respect.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, InvalidStateError
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED, LOGGER, PENDING, RUNNING
from typing import Any, TypeVar

__all__ = ["LightFuture"]

T = TypeVar("T")

_DONE = (FINISHED, CANCELLED, CANCELLED_AND_NOTIFIED)


class LightFuture(Future[T]):
    def __init__(self) -> None:  # no super().__init__(): it would build the condition
        self._lock = threading.Lock()
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._waiters: list[Any] = []
        self._done_callbacks: list[Any] = []

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]  # made on demand
        condition: threading.Condition | None = self.__dict__.get("_made_condition")
        if condition is None:  # setdefault is atomic: two threads at once get the same one
            condition = self.__dict__.setdefault("_made_condition", threading.Condition(self._lock))
        return condition

    def _settle(self, result: Any, exception: BaseException | None) -> None:
        with self._lock:
            settled_before = self._state != PENDING and self._state != RUNNING
            if not settled_before:
                self._result, self._exception, self._state = result, exception, FINISHED
                for waiter in self._waiters:
                    if exception is None:
                        waiter.add_result(self)
                    else:
                        waiter.add_exception(self)
                condition = self.__dict__.get("_made_condition")
                if condition is not None:  # a thread waits, or did
                    condition.notify_all()
        if settled_before:  # worded as Future does; not under the lock, which repr takes
            raise InvalidStateError(f"{self._state}: {self!r}")
        for callback in self._done_callbacks:
            self._call(callback)

    def set_result(self, result: T) -> None:
        self._settle(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._settle(None, exception)

    def add_done_callback(self, fn: Any) -> None:
        with self._lock:
            if self._state == PENDING or self._state == RUNNING:
                self._done_callbacks.append(fn)
                return
        self._call(fn)  # done already: call it now, as Future does

    def _call(self, callback: Any) -> None:
        try:
            callback(self)
        except Exception:  # as Future does: one failing callback does not stop the others
            LOGGER.exception("exception calling callback for %r", self)

    def done(self) -> bool:
        return self._state in _DONE

    def result(self, timeout: float | None = None) -> T:
        if self._state == FINISHED:
            if self._exception is not None:
                raise self._exception
            result: T = self._result
            return result
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)
