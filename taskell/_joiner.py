"""Worker side of task dependencies: the joiner.

Every worker consumes every join partition queue with single-active-consumer, so at any time
each partition has exactly one joiner. A joiner keeps the join records and dependency outcomes
it receives UNACKNOWLEDGED until the record fires: then it publishes the task (with the
dependencies' results substituted) or its failure, waits for the broker's confirm, and only
then acknowledges the record and the outcomes no other record needs. If the joiner dies, the
broker redelivers all of it to the next active consumer, which rebuilds the same state.
See docs/dependencies.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from . import _wire
from .config import Config
from .transport import Delivery, Transport

__all__ = ["Joiner"]

log = logging.getLogger("taskell.joiner")

ORPHAN_TTL = 600.0  # seconds an outcome nobody waits for is kept (a record may still come)
SWEEP_EVERY = 30.0


@dataclass(eq=False)
class _Record:
    delivery: Delivery
    deps: list[str]
    refs: list[tuple[list[str | int], str]]
    fired: bool = False


@dataclass(eq=False)
class _Outcome:
    kind: str
    task: str
    body: bytes
    received: float
    tags: list[int] = field(default_factory=list)


class Joiner:
    """Holds join records and outcomes of the partitions this worker is active on."""

    def __init__(self, transport: Transport, config: Config, is_aborted: Callable[[str], bool]) -> None:
        self._transport = transport
        self._config = config
        self._is_aborted = is_aborted
        self._records: dict[str, _Record] = {}
        self._outcomes: dict[str, _Outcome] = {}
        self._waiting: dict[str, set[str]] = {}  # dependency id -> ids of records waiting on it
        self._bound: dict[str, set[str]] = {}  # dependency id -> partitions bound to its outcome
        self._last_sweep = time.monotonic()

    def start(self) -> None:
        """Declare the outcomes exchange and the partitions, and consume them (no prefetch
        limit: held messages must not block new ones)."""
        for name in _wire.declare_joins(self._transport, self._config):
            self._transport.consume(name, self._on_message).result()

    def reset(self) -> None:
        """Forget everything held: after a reconnect the broker redelivers it all."""
        self._records.clear()
        self._outcomes.clear()
        self._waiting.clear()
        self._bound.clear()

    @property
    def pending(self) -> int:
        """Join records held, not yet fired."""
        return sum(1 for record in self._records.values() if not record.fired)

    # On the transport's thread from here on.

    def _on_message(self, delivery: Delivery) -> None:
        kind = delivery.message.type
        if kind == _wire.JOIN:
            self._on_record(delivery)
        elif kind == _wire.OUTCOME:
            self._on_outcome(delivery)
        else:
            log.warning("dropping a %r message from %s", kind, delivery.queue)
            self._transport.reject(delivery.tag, requeue=False)
        if time.monotonic() - self._last_sweep > SWEEP_EVERY:
            self._sweep()

    def _on_record(self, delivery: Delivery) -> None:
        message = delivery.message
        task_id = message.message_id or ""
        if not task_id or task_id in self._records:
            self._transport.ack(delivery.tag)  # a duplicate of a record held already
            return
        try:
            deps = [str(d) for d in message.headers[_wire.DEPS_HEADER]]
            refs = [(list(path), str(dep)) for path, dep in json.loads(message.headers[_wire.REFS_HEADER])]
        except (KeyError, TypeError, ValueError) as exc:
            log.error("dropping malformed join record %s: %r", task_id, exc)
            self._transport.reject(delivery.tag, requeue=False)
            return
        record = self._records[task_id] = _Record(delivery, deps, refs)
        for dep in deps:
            self._waiting.setdefault(dep, set()).add(task_id)
            self._bound.setdefault(dep, set()).add(delivery.queue)
        if self._is_aborted(task_id):
            self.abort(task_id)
        else:
            self._try_fire(record)

    def _on_outcome(self, delivery: Delivery) -> None:
        message = delivery.message
        dep = message.correlation_id or ""
        outcome = self._outcomes.get(dep)
        if outcome is None:
            kind = str(message.headers.get(_wire.KIND_HEADER, _wire.FAILED))
            task = str(message.headers.get(_wire.TASK_HEADER, ""))
            outcome = self._outcomes[dep] = _Outcome(kind, task, message.body, time.monotonic())
        outcome.tags.append(delivery.tag)  # duplicates are held and acknowledged together
        for record_id in list(self._waiting.get(dep, ())):
            self._try_fire(self._records[record_id])

    def abort(self, task_id: str) -> bool:
        """Abort a held record: its client gets ``aborted``, its dependents fail. True if held."""
        record = self._records.get(task_id)
        if record is None or record.fired:
            return False
        body = _wire.error_body(_wire.TASK_ABORTED, "aborted while waiting for its dependencies")
        self._finish(record, _wire.ABORTED, body)
        return True

    def _try_fire(self, record: _Record) -> None:
        if record.fired:
            return
        outcomes = {dep: self._outcomes.get(dep) for dep in record.deps}
        for dep, outcome in outcomes.items():
            if outcome is not None and outcome.kind != _wire.RESULT:
                body = _wire.dependency_failed_body(dep, outcome.task, outcome.kind, outcome.body)
                self._finish(record, _wire.FAILED, body)
                return
        if any(outcome is None for outcome in outcomes.values()):
            return
        message = record.delivery.message
        args = json.loads(message.body)
        for path, dep in record.refs:
            _put(args, path, json.loads(self._outcomes[dep].body))
        task, delay = _wire.joined_task(message, json.dumps(args, separators=(",", ":")).encode())
        record.fired = True
        queue = str(message.headers.get(_wire.QUEUE_HEADER))
        self._when_confirmed(record, [self._transport.publish_delayed(queue, task, delay)])

    def _finish(self, record: _Record, kind: str, body: bytes) -> None:
        """End a record without running its task: tell its client, then its own dependents
        (the event only once the reply is confirmed, as workers do: docs/dependencies.md)."""
        message = record.delivery.message
        task_id = message.message_id or ""
        event = _wire.outcome(task_id, str(message.headers.get(_wire.TASK_HEADER, "")), kind, body)
        record.fired = True

        def publish_event() -> None:
            future = self._transport.publish(_wire.OUTCOMES_EXCHANGE, task_id, event, mandatory=False)
            self._when_confirmed(record, [future])

        if not message.reply_to:
            publish_event()
            return
        reply = self._transport.publish(
            "", message.reply_to, _wire.reply(kind, task_id, body), mandatory=False
        )

        def on_reply(future: Future[None]) -> None:
            if future.exception() is not None:  # left unacknowledged: fired again after a reconnect
                log.error("reply for join %s not confirmed: %s", task_id, future.exception())
            else:
                self._transport.call_soon(publish_event)

        reply.add_done_callback(on_reply)

    def _when_confirmed(self, record: _Record, futures: list[Future[None]]) -> None:
        remaining = [len(futures)]

        def on_done(future: Future[None]) -> None:
            remaining[0] -= 1
            error = future.exception()
            if error is not None:
                # Left unacknowledged: redelivered (and fired again) after a reconnect.
                log.error("join of %s not confirmed: %s", record.delivery.message.message_id, error)
                remaining[0] = -1
            elif remaining[0] == 0:
                self._transport.call_soon(lambda: self._settle(record))

        for future in futures:
            future.add_done_callback(on_done)

    def _settle(self, record: _Record) -> None:
        task_id = record.delivery.message.message_id or ""
        self._transport.ack(record.delivery.tag)
        self._records.pop(task_id, None)
        for dep in record.deps:
            waiting = self._waiting.get(dep)
            if waiting is not None:
                waiting.discard(task_id)
                if not waiting:
                    del self._waiting[dep]
                    self._release(dep)

    def _release(self, dep: str) -> None:
        # The dependency has ended, so no new outcome event for it will come: drop the bindings.
        outcome = self._outcomes.pop(dep, None)
        if outcome is None:
            return  # not ended (its waiters ended otherwise): a new record may rely on the binding
        for tag in outcome.tags:
            self._transport.ack(tag)
        for queue in sorted(self._bound.pop(dep, ())):
            self._transport.unbind(queue, _wire.OUTCOMES_EXCHANGE, dep)

    def _sweep(self) -> None:
        now = self._last_sweep = time.monotonic()
        for dep, outcome in list(self._outcomes.items()):
            if dep not in self._waiting and now - outcome.received > ORPHAN_TTL:
                self._release(dep)


def _put(args: Any, path: list[str | int], value: Any) -> None:
    target = args
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
