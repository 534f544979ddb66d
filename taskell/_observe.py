"""What a worker tells its observers (Prometheus metrics, OpenTelemetry tracing) about tasks.

The worker calls ``started`` just before a task's handler runs and the function it returns once
the outcome is decided, on the same pool thread; a task that ends without running (rejected,
aborted or expired before it started) is only ``ended``. The base ``Observer`` does nothing: it
is what a worker without metrics and tracing calls, at the cost of two calls per task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from . import _wire
from .transport import Delivery, Message

__all__ = ["OUTCOMES", "Observer", "Observers", "Outcome", "outcome_of", "queue_wait"]

# How a task's delivery ended, the ``outcome`` label of ``taskell_tasks_finished_total``.
RESULT, FAILED, ABORTED, TIME_LIMIT = "result", "failed", "aborted", "time_limit"
RETRYING, REJECTED, REQUEUED = "retrying", "rejected", "requeued"
OUTCOMES = (RESULT, FAILED, ABORTED, TIME_LIMIT, RETRYING, REJECTED, REQUEUED)

Outcome = Callable[[str], None]  # called with the outcome of a task that started


def _nothing(outcome: str) -> None:
    pass


class Observer:
    """Hears when tasks start and end; this base hears nothing."""

    def started(self, delivery: Delivery, task: str) -> Outcome:
        """Task ``task`` (its wire name) starts; the result is called with its outcome."""
        return _nothing

    def ended(self, delivery: Delivery, task: str, outcome: str) -> None:
        """Task ``task`` ended with ``outcome`` without having started."""

    def close(self) -> None:
        """The worker stopped."""


class Observers(Observer):
    """Several observers heard in turn."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._observers = list(observers)

    def started(self, delivery: Delivery, task: str) -> Outcome:
        outcomes = [observer.started(delivery, task) for observer in self._observers]

        def finished(outcome: str) -> None:
            for each in reversed(outcomes):
                each(outcome)

        return finished

    def ended(self, delivery: Delivery, task: str, outcome: str) -> None:
        for observer in self._observers:
            observer.ended(delivery, task, outcome)

    def close(self) -> None:
        for observer in self._observers:
            observer.close()


def outcome_of(kind: str, time_limit: bool = False) -> str:
    """The outcome of a final reply of type ``kind`` (``time_limit``: the handler was stopped
    by its time limit)."""
    if kind == _wire.FAILED and time_limit:
        return TIME_LIMIT
    return kind  # result, failed, aborted and rejected are named as their replies


def queue_wait(message: Message, now_ms: int) -> float | None:
    """Seconds task ``message`` waited in its queue until ``now_ms``: since it was submitted
    (``taskell-submitted-ms``), or since it was due when it was delayed; None when the message
    does not say (a publisher that does not set the header)."""
    submitted = message.headers.get(_wire.SUBMITTED_HEADER)
    if not isinstance(submitted, int) or isinstance(submitted, bool):
        return None
    due = message.headers.get(_wire.DUE_HEADER)
    if isinstance(due, int) and not isinstance(due, bool):
        submitted = max(submitted, due)
    return max(0, now_ms - submitted) / 1000
