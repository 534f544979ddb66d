"""The worker's control requests (``taskell._control``): abort answers, the bounded id tables,
and requests and answers over the in-memory broker. Aborting a running task is covered end to
end in test_memory_runtime.py and tests/integration/test_rmq_abort.py."""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from typing import Any

import pytest

from taskell import _wire
from taskell._control import Control, RecentIds
from taskell.transport import Delivery, Message
from taskell.transport.memory import MemoryBroker, MemoryTransport

EXCHANGE = "taskell.abort"


def test_recent_ids_forget_the_oldest_beyond_their_limit() -> None:
    ids = RecentIds(3)
    for n in range(5):
        ids.add(f"t-{n}")
    assert len(ids) == 3
    assert [f"t-{n}" in ids for n in range(5)] == [False, False, True, True, True]


def test_recent_ids_do_not_renew_an_id_added_again() -> None:
    ids = RecentIds(2)
    for task_id in ("a", "b", "a", "c"):
        ids.add(task_id)
    assert "a" not in ids and "b" in ids and "c" in ids


def status() -> dict[str, Any]:
    return {"worker": "w-1", "running": []}


def test_an_abort_is_answered_and_remembered() -> None:
    control = Control("w-1", {}, status)
    assert not control.is_aborted("t-1")
    assert control.abort("t-1") == {"worker": "w-1", "task_id": "t-1", "state": "not running here"}
    assert control.is_aborted("t-1")
    control.finished.add("t-2")
    assert control.abort("t-2")["state"] == "finished"
    assert control.is_aborted("t-2")


def test_the_aborted_ids_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("taskell._control.REMEMBERED_ABORTED", 2)
    control = Control("w-1", {}, status)
    for task_id in ("t-1", "t-2", "t-3"):
        control.abort(task_id)
    assert [control.is_aborted(t) for t in ("t-1", "t-2", "t-3")] == [False, True, True]


@pytest.fixture
def wired() -> Iterator[tuple[Control, MemoryTransport, queue.Queue[Message]]]:
    """A listening ``Control`` and a client transport whose reply queue feeds the queue."""
    broker = MemoryBroker()
    worker_side, client = MemoryTransport(broker), MemoryTransport(broker)
    control = Control("w-1", {}, status)
    control.listen(worker_side, EXCHANGE)
    answers: queue.Queue[Message] = queue.Queue()
    client.declare_queue("replies", exclusive=True).result()

    def on_reply(delivery: Delivery) -> None:
        answers.put(delivery.message)

    client.consume("replies", on_reply, auto_ack=True).result()
    yield control, client, answers
    client.close()
    worker_side.close()


def test_abort_and_inspect_requests_are_answered(
    wired: tuple[Control, MemoryTransport, queue.Queue[Message]],
) -> None:
    control, client, answers = wired
    request = _wire.control_request(_wire.ABORT, "r-1", "replies", {"task_id": "t-9"})
    client.publish(EXCHANGE, "", request, mandatory=True).result()
    answer = answers.get(timeout=5)
    assert (answer.type, answer.correlation_id) == ("abort-reply", "r-1")
    assert json.loads(answer.body) == {"worker": "w-1", "task_id": "t-9", "state": "not running here"}
    assert control.is_aborted("t-9")
    client.publish(EXCHANGE, "", _wire.control_request(_wire.INSPECT, "r-2", "replies", {}), mandatory=True)
    answer = answers.get(timeout=5)
    assert (answer.type, answer.correlation_id) == ("inspect-reply", "r-2")
    assert json.loads(answer.body) == status()


def test_malformed_and_unknown_requests_are_ignored(
    wired: tuple[Control, MemoryTransport, queue.Queue[Message]],
) -> None:
    _, client, answers = wired
    for message in (
        Message(body=b"{not json", type=_wire.ABORT, message_id="r-1", reply_to="replies"),
        Message(body=b'["t-1"]', type=_wire.ABORT, message_id="r-0", reply_to="replies"),  # not an object
        _wire.control_request("shutdown", "r-2", "replies", {}),
        _wire.control_request(_wire.INSPECT, "r-3", "replies", {}),
    ):
        client.publish(EXCHANGE, "", message, mandatory=True).result()
    assert answers.get(timeout=5).correlation_id == "r-3"  # the only one answered, in order
    assert answers.empty()
