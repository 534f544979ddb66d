"""Tests for taskell._observe and taskell._metrics without a broker: the outcome names, the
queue wait a message tells, the fan-out of observers, and a worker's own metrics registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from taskell import _observe, _wire
from taskell._metrics import Metrics
from taskell._observe import Observer, Observers, outcome_of, queue_wait
from taskell.transport import Delivery, Message


def delivery(**headers: Any) -> Delivery:
    return Delivery(Message(b"{}", type="demo.square", message_id="t", headers=headers), 1, False, "q")


def test_outcomes_are_named_as_replies_but_time_limits() -> None:
    assert [outcome_of(kind) for kind in (_wire.RESULT, _wire.FAILED, _wire.ABORTED, _wire.REJECTED)] == [
        "result",
        "failed",
        "aborted",
        "rejected",
    ]
    assert outcome_of(_wire.FAILED, time_limit=True) == "time_limit"
    assert set(_observe.OUTCOMES) >= {"result", "failed", "aborted", "time_limit", "retrying", "rejected"}


def test_queue_wait_counts_from_submission_or_from_when_due() -> None:
    now = 1_000_000
    assert queue_wait(delivery(**{_wire.SUBMITTED_HEADER: now - 250}).message, now) == 0.25
    due = {_wire.SUBMITTED_HEADER: now - 60_000, _wire.DUE_HEADER: now - 40}
    assert queue_wait(delivery(**due).message, now) == 0.04  # delayed: its wait began when due
    assert queue_wait(delivery(**{_wire.SUBMITTED_HEADER: now + 5}).message, now) == 0  # clock skew
    assert queue_wait(delivery().message, now) is None  # another publisher: not counted
    assert queue_wait(delivery(**{_wire.SUBMITTED_HEADER: True}).message, now) is None
    assert queue_wait(delivery(**{_wire.SUBMITTED_HEADER: "soon"}).message, now) is None


class Recorder(Observer):
    def __init__(self, name: str, heard: list[str]) -> None:
        self.name, self.heard = name, heard

    def started(self, delivery: Delivery, task: str) -> _observe.Outcome:
        self.heard.append(f"{self.name} started {task}")
        return lambda outcome: self.heard.append(f"{self.name} {outcome}")

    def ended(self, delivery: Delivery, task: str, outcome: str) -> None:
        self.heard.append(f"{self.name} ended {outcome}")


def test_observers_hear_in_turn_and_finish_in_reverse() -> None:
    heard: list[str] = []
    both = Observers([Recorder("a", heard), Recorder("b", heard)])
    both.started(delivery(), "demo.square")("result")
    both.ended(delivery(), "demo.square", "rejected")
    assert heard == [
        "a started demo.square",
        "b started demo.square",
        "b result",
        "a result",
        "a ended rejected",
        "b ended rejected",
    ]


def test_each_worker_has_a_registry_of_its_own() -> None:
    first, second = Metrics(["demo.square"]), Metrics(["demo.square"])  # no duplicate series
    first.started(delivery(), "demo.square")("result")
    first.ended(delivery(), "demo.nothing", "rejected")
    assert first.registry.get_sample_value("taskell_tasks_started_total", {"task": "demo.square"}) == 1
    assert second.registry.get_sample_value("taskell_tasks_started_total", {"task": "demo.square"}) == 0
    assert (
        first.registry.get_sample_value(
            "taskell_tasks_finished_total", {"task": "demo.nothing", "outcome": "rejected"}
        )
        == 1
    )
    assert REGISTRY.get_sample_value("taskell_tasks_started_total", {"task": "demo.square"}) is None
