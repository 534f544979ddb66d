"""Abort records: aborts kept on the broker, so a worker that starts later still refuses the task.

``Connection.abort`` appends a record (the task id and when it was aborted) to a stream named
after the abort exchange (``taskell.abort.log``) before it broadcasts the live abort. A worker,
before it takes any task, reads the records of the last ``abort_retention`` seconds into its
table of aborted ids (the same bounded table live aborts fill), then follows new records for
as long as it runs. The table is checked when a task is delivered, so a recorded task is refused
there with an ``aborted`` reply, however it came to the worker. A record only fills the table:
stopping a running task (or a held join record) is the live abort's job, so the worker doing
it is the one that answers ``aborting``.

Why none is missed: the worker binds its live abort queue before it starts reading, so an
abort is either in the stream already (its record is confirmed before the broadcast) or heard
live; and it takes no task before it has read every record up to its marker (below).

Why a stream and not a queue: reading a stream consumes nothing, so every worker, and every
restart, reads the same records from a point in time; a queue hands each record to one
consumer, and reading one without consuming it (get, then requeue) races with other workers.

Catching up: AMQP tells a stream consumer nothing about where the end is. So the worker, once
it consumes, appends a marker of its own; when the marker comes back it has read every record
before it.

Retention: the broker drops whole segments once all their records are older than
``abort_retention`` (or the stream is over ``MAX_BYTES``), and a consumer that starts at a time
may get a few older records of the same chunk; the worker ignores records older than
``abort_retention`` itself, so the retention holds to the second (clocks of clients and
workers agreeing).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from typing import Any

from . import _wire
from .config import Config
from .errors import BrokerUnavailable
from .transport import Delivery, Message, Transport

__all__ = ["AbortLog", "append", "declare", "stream_name"]

log = logging.getLogger("taskell.worker")

RECORD, MARKER = "abort", "marker"  # AMQP types of the stream's messages
MAX_BYTES = 20_000_000  # the stream's size limit: about 70,000 records
SEGMENT_BYTES = 2_000_000  # the unit the broker drops old records by
PREFETCH = 1_000  # unacknowledged records in flight (a stream consumer must set a limit)
CATCH_UP_TIMEOUT = 60.0  # seconds a starting worker may take to read the retained records


def stream_name(config: Config) -> str:
    """The stream holding the abort records: the abort exchange's name plus ``.log``."""
    return f"{config.abort_exchange}.log"


def declare(transport: Transport, config: Config) -> Future[str]:
    """Declare the stream, with the same arguments on clients and workers."""
    arguments: dict[str, Any] = {
        "x-queue-type": "stream",
        "x-max-age": f"{math.ceil(config.abort_retention)}s",
        "x-max-length-bytes": MAX_BYTES,
        "x-stream-max-segment-size-bytes": SEGMENT_BYTES,
    }
    return transport.declare_queue(stream_name(config), durable=True, arguments=arguments)


def append(transport: Transport, config: Config, task_id: str) -> Future[None]:
    """Publish the record of an abort of ``task_id`` (the stream must be declared)."""
    body = json.dumps({"task_id": task_id, "at": time.time()}).encode()
    record = Message(body=body, type=RECORD, message_id=task_id, content_type=_wire.JSON, persistent=True)
    return transport.publish("", stream_name(config), record, mandatory=True)


class AbortLog:
    """A worker's reader of the abort records, on a connection of its own (a stream consumer
    needs a prefetch limit, which the control channel's joiner must not have).

    Args:
        transport: the connection to read on; closed by ``close``.
        config: the abort exchange (hence the stream) and ``abort_retention``.
        on_abort: called with each recorded task id, on ``deliver_on``'s thread (the worker's
            control thread, where live aborts arrive too).
    """

    def __init__(
        self,
        transport: Transport,
        config: Config,
        on_abort: Callable[[str], None],
        *,
        deliver_on: Transport,
    ) -> None:
        self.transport = transport
        self._config = config
        self._on_abort = on_abort
        self._deliver_on = deliver_on
        self._marker = uuid.uuid4().hex
        self._caught_up = threading.Event()

    def start(self) -> None:
        """Read every retained record (handed to ``on_abort``), then keep following new ones.

        Raises:
            BrokerUnavailable: the stream cannot be read, or not within ``CATCH_UP_TIMEOUT``.
        """
        transport, name = self.transport, stream_name(self._config)
        declare(transport, self._config).result()
        transport.set_prefetch(PREFETCH, per_consumer=True).result()
        since = datetime.now(UTC) - timedelta(seconds=self._config.abort_retention)
        transport.consume(name, self._on_message, arguments={"x-stream-offset": since}).result()
        marker = Message(body=b"", type=MARKER, message_id=self._marker)
        transport.publish("", name, marker, mandatory=True).result(CATCH_UP_TIMEOUT)
        if not self._caught_up.wait(CATCH_UP_TIMEOUT):
            raise BrokerUnavailable(f"the abort records in {name} were not read within {CATCH_UP_TIMEOUT} s")
        # Only a broker cancel (the stream deleted, or its node gone) ends the reading: live
        # aborts still arrive, so the worker goes on.
        transport.add_on_lost(
            lambda error: log.error("no longer following the abort records in %s: %s", name, error)
        )

    def close(self) -> None:
        self.transport.close()

    def _on_message(self, delivery: Delivery) -> None:  # on the transport's thread
        self.transport.ack(delivery.tag)
        message = delivery.message
        if message.type == MARKER:
            if message.message_id == self._marker:  # after the records before it, on that thread
                self._deliver_on.call_soon(self._caught_up.set)
            return
        if message.type != RECORD:
            return
        try:
            record = json.loads(message.body)
            task_id, at = str(record["task_id"]), float(record["at"])
        except (ValueError, TypeError, KeyError):
            log.warning("ignoring a malformed abort record %r", message.body[:100])
            return
        if time.time() - at <= self._config.abort_retention:
            self._deliver_on.call_soon(lambda: self._on_abort(task_id))
