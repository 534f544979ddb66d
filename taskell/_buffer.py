"""The worker's local buffer: deliveries received (prefetched) but not started yet, handed to the
pool threads highest priority first, then in arrival order.

The broker orders a priority queue only among the messages it still holds; with a deep
prefetch most waiting tasks sit here, so this buffer must order them too.
"""

from __future__ import annotations

import heapq
import itertools
import threading

from . import _wire
from .transport import Delivery

__all__ = ["PriorityBuffer", "priority_of"]


def priority_of(delivery: Delivery) -> int:
    """The delivery's AMQP priority within 0..MAX_PRIORITY; none counts as 0. Like RabbitMQ, a
    value above the maximum counts as the maximum."""
    priority = delivery.message.priority
    if priority is None or priority <= 0:
        return 0
    return min(priority, _wire.MAX_PRIORITY)


class PriorityBuffer:
    """A blocking buffer of deliveries: ``put`` from the I/O thread, ``get`` from pool threads
    (``pop`` from an async worker's event loop)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Delivery]] = []
        self._arrival = itertools.count()
        self._ready = threading.Condition(threading.Lock())
        self._closed = False

    def put(self, delivery: Delivery) -> bool:
        """Add ``delivery``; False (and not added) once the buffer is closed."""
        entry = (-priority_of(delivery), next(self._arrival), delivery)
        with self._ready:
            if self._closed:
                return False
            heapq.heappush(self._heap, entry)
            self._ready.notify()
        return True

    def get(self) -> Delivery | None:
        """The waiting delivery of highest priority (the earliest of those), blocking while the
        buffer is empty; None once it is closed and empty."""
        with self._ready:
            while not self._heap:
                if self._closed:
                    return None
                self._ready.wait()
            return heapq.heappop(self._heap)[2]

    def pop(self) -> Delivery | None:
        """Like ``get``, but None at once when no delivery waits (for the event loop)."""
        with self._ready:
            return heapq.heappop(self._heap)[2] if self._heap else None

    def idle(self) -> bool:
        """Nothing waits and the buffer is open: ``get`` would block."""
        return not self._heap and not self._closed

    def has_work(self) -> bool:
        """``get`` would return at once (a delivery waits, or the buffer is closed)."""
        return bool(self._heap) or self._closed

    def close(self) -> None:
        """Take no more deliveries; ``get`` still hands out those waiting, then returns None."""
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        return len(self._heap)
