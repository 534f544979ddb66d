"""Control: the ``abort`` and ``inspect`` requests every worker receives on its control queue.

Requests arrive on the control connection's thread, also while every pool thread is busy. An
abort stops the task where it is (running here, or held by this worker's joiner) and is
remembered, so a copy of the task that is still queued never starts. The ids remembered are
bounded (``RecentIds``) so a long-lived worker's memory stays flat.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from . import _wire
from ._joiner import Joiner
from ._running import Running
from .transport import Delivery, Transport

__all__ = ["Control", "RecentIds"]

log = logging.getLogger("taskell.worker")

# Task ids kept: aborted ones, so a queued copy never starts; finished ones only to answer an
# abort with "finished" (about 190 bytes each: a small table keeps the worker's memory flat).
REMEMBERED_ABORTED = 100_000
REMEMBERED_FINISHED = 10_000


class RecentIds:
    """The last ``limit`` task ids added; the oldest is forgotten first (adding an id already
    kept does not renew it)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()

    def add(self, task_id: str) -> None:
        self._ids[task_id] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class Control:
    """Answers control requests for one worker.

    Args:
        name: the worker's name, in every answer.
        running: the worker's table of running tasks.
        status: what an ``inspect`` request is answered with.
    """

    def __init__(
        self, name: str, running: Mapping[str, Running], status: Callable[[], dict[str, Any]]
    ) -> None:
        self._name = name
        self._transport: Transport | None = None  # the control connection, once listening
        self._running = running
        self._status = status
        self.joiner: Joiner | None = None  # set once the joiner runs: it holds waiting tasks
        self.aborted = RecentIds(REMEMBERED_ABORTED)
        self.finished = RecentIds(REMEMBERED_FINISHED)

    def listen(self, transport: Transport, exchange: str) -> None:
        """Declare a control queue of this worker's own, bind it to the abort ``exchange``
        (fanout) and consume it; answers go out on ``transport`` too."""
        self._transport = transport
        transport.declare_exchange(exchange, "fanout").result()
        queue = transport.declare_queue(_wire.control_queue(), durable=False, auto_delete=True).result()
        transport.bind(queue, exchange).result()
        transport.consume(queue, self.on_message, auto_ack=True).result()

    def is_aborted(self, task_id: str) -> bool:
        """Whether an abort for ``task_id`` was received (among the last ones)."""
        return task_id in self.aborted

    def on_message(self, delivery: Delivery) -> None:
        """Handle one control request (on the control connection's thread)."""
        message = delivery.message
        try:
            body = json.loads(message.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            log.warning("ignoring malformed control message %r", message.body[:100])
            return
        if message.type == _wire.ABORT:
            answer = self.abort(str(body.get("task_id")))
        elif message.type == _wire.INSPECT:
            answer = self._status()
        else:
            return
        if message.reply_to and self._transport is not None:
            reply = _wire.control_reply(message.type, message.message_id, answer)
            self._transport.publish("", message.reply_to, reply, mandatory=False)

    def abort(self, task_id: str) -> dict[str, Any]:
        """Abort ``task_id`` here, and remember it; returns this worker's answer."""
        running = self._running.get(task_id)
        if running is not None:
            running.abort()
            state = "aborting"
        elif self.joiner is not None and self.joiner.abort(task_id):
            state = "aborting"
        elif task_id in self.finished:
            state = "finished"
        else:
            state = "not running here"
        self.aborted.add(task_id)
        log.info("abort %s: %s", task_id, state)
        return {"worker": self._name, "task_id": task_id, "state": state}
