"""Collects what the dashboard shows, once a second, in one background thread.

Workers and schedulers: the ``inspect`` control broadcast (the same answers as ``taskell
inspect``). Queue depths and dead letters: passive queue declares (never creates a queue).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]

from ..config import Config
from ..connection import Connection
from ..transport.pika_connection import pika_parameters


class _MissingQueueFilter(logging.Filter):
    """Drops pika's WARNING for a 404 channel close on the poller's thread: a passive declare
    of a queue that does not exist (yet), which the page shows with ``null``s; the dead-letter
    queue is missing until something is dead-lettered, and it was logged every poll. The
    poller's blocking connection does its I/O on the poller's thread, so another close code, or
    a 404 on any other connection (their I/O threads), is still logged."""

    def __init__(self, thread: threading.Thread) -> None:
        super().__init__()
        self._thread = thread

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.thread == self._thread.ident
            and str(record.msg).startswith("Received remote Channel.Close")
            and isinstance(record.args, tuple)
            and record.args[:1] == (404,)
        )


class Poller:
    """Holds the latest snapshot (as JSON text) and a version that changes with it."""

    def __init__(self, config: Config, *, interval: float = 1.0, wait: float = 0.5) -> None:
        self.config = config
        self._interval = interval
        self._wait = wait
        self._conn = Connection(config)
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self.version = 0
        self.snapshot = json.dumps(self._empty())
        self._thread = threading.Thread(target=self._run, name="taskell-dashboard-poller", daemon=True)
        self._quiet = _MissingQueueFilter(self._thread)

    def _empty(self) -> dict[str, Any]:
        # host and vhost only: the broker URL carries the password
        url = urlsplit(self.config.masked_url())
        broker = f"{url.hostname}:{url.port}/{unquote(url.path[1:]) or '/'}"
        return {"broker": broker, "workers": [], "schedulers": [], "queues": []}

    def start(self) -> None:
        logging.getLogger("pika.channel").addFilter(self._quiet)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._conn.close(flush=False)
        logging.getLogger("pika.channel").removeFilter(self._quiet)

    def abort(self, task_id: str) -> None:
        self._conn.abort(task_id)

    def wait_change(self, version: int, timeout: float) -> int:
        """Block until the snapshot's version differs from ``version`` (or ``timeout``)."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version

    def _run(self) -> None:
        blocking: Any = None
        while not self._stop.is_set():
            started = time.monotonic()
            data = self._empty()
            try:
                answers = self._conn.inspect(wait=self._wait)
                data["workers"] = sorted(
                    (a for a in answers if "worker" in a), key=lambda a: str(a["worker"])
                )
                # The leader first (as ``taskell inspect`` lists them), in an order that holds
                # from one poll to the next.
                data["schedulers"] = sorted(
                    (a for a in answers if "scheduler" in a),
                    key=lambda a: (a.get("role") != "leader", str(a["scheduler"])),
                )
                names = {q for w in data["workers"] for q in w.get("queues") or []}
                names.add(self.config.dead_letter_queue)
                if blocking is None or not blocking.is_open:
                    blocking = pika.BlockingConnection(pika_parameters(self.config.broker_url(), self.config))
                data["queues"], blocking = _depths(blocking, sorted(names), self.config)
                data["dead_letter_queue"] = self.config.dead_letter_queue
            except Exception as exc:  # shown on the page; the next round tries again
                data["error"] = f"{type(exc).__name__}: {exc}"
            text = json.dumps(data)
            with self._changed:
                if text != self.snapshot:
                    self.snapshot = text
                    self.version += 1
                    self._changed.notify_all()
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - started)))
        if blocking is not None and blocking.is_open:
            with contextlib.suppress(Exception):
                blocking.close()


def _depths(connection: Any, names: list[str], config: Config) -> tuple[list[dict[str, Any]], Any]:
    """Messages ready and consumers per queue; a missing queue is listed with ``null``s."""
    out = []
    for name in names:
        channel = connection.channel()
        try:
            ok = channel.queue_declare(name, passive=True).method
            out.append({"queue": name, "messages": ok.message_count, "consumers": ok.consumer_count})
            channel.close()
        except pika.exceptions.ChannelClosedByBroker:  # 404: no such queue (yet)
            out.append({"queue": name, "messages": None, "consumers": None})
    return out, connection
