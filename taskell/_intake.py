"""Intake: the checks a delivered task passes before it may run, as one decision per delivery.

``Intake.check`` looks at a delivery and decides, without touching the broker:

- ``Run``: the task is known, fits the limits and its args validate; run it.
- ``DeadLetter``: it never can run (unknown type, too large, no id, poison, bad args).
- ``Finish``: end it now with this final reply, without running it (aborted before it started,
  or expired: its ``taskell-expires-at`` header is in the past).
- ``Recount``: a classic queue redelivered it; republish this copy, which carries the count.

The worker carries out the decision (``_settle``). A new check on incoming tasks goes here.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from . import _wire
from .config import Config
from .registry import Binding, Registry
from .transport import Delivery, Message

__all__ = ["DeadLetter", "Decision", "Finish", "Hold", "Intake", "Recount", "Run"]

log = logging.getLogger("taskell.worker")


@dataclass(frozen=True)
class Run:
    """Run the task: its handler and its validated args."""

    binding: Binding
    args: Any


@dataclass(frozen=True)
class DeadLetter:
    """Move the message to the dead-letter queue (and tell its client) for ``reason``."""

    reason: str


@dataclass(frozen=True)
class Finish:
    """End the task with this final reply without running it."""

    kind: str
    body: bytes


@dataclass(frozen=True)
class Hold:
    """A delayed task the broker handed over before it was due: hold it ``delay`` s more."""

    delay: float


@dataclass(frozen=True)
class Recount:
    """Replace the delivery by ``copy`` (same task, redelivery count in a header)."""

    copy: Message


Decision = Run | DeadLetter | Finish | Hold | Recount


class Intake:
    """Checks deliveries for one worker; ``check`` runs on pool threads.

    Args:
        registry: the tasks the worker serves.
        config: ``max_payload_bytes`` and ``delivery_limit`` come from here.
        is_aborted: whether an abort for this task id was received.
    """

    def __init__(self, registry: Registry, config: Config, is_aborted: Callable[[str], bool]) -> None:
        self._registry = registry
        self._config = config
        self._is_aborted = is_aborted
        self._fingerprint_warned: set[tuple[str, str]] = set()
        self._expiry_warned = False

    def check(self, delivery: Delivery) -> Decision:
        """The decision for ``delivery`` (checks in order; the first that applies wins)."""
        message = delivery.message
        task_id = message.message_id or ""
        binding = self._registry.get(message.type or "")
        if binding is None:
            return DeadLetter(f"unknown task type {message.type!r}")
        spec = binding.spec
        if len(message.body) > self._config.max_payload_bytes:
            return DeadLetter(f"{spec.name}: payload of {len(message.body)} bytes over max_payload_bytes")
        if not task_id:
            return DeadLetter(f"{spec.name}: message has no message_id (task id)")
        if self._is_aborted(task_id):
            return Finish(_wire.ABORTED, _wire.error_body(_wire.TASK_ABORTED, "aborted before it started"))
        early = _early_by(message)
        if early > 0:
            return Hold(early)
        expired = self._expired(message, spec.name)
        if expired is not None:
            return expired
        poisoned = self._poisoned(delivery, spec.name)
        if poisoned is not None:
            return poisoned
        try:
            args = spec.args.model_validate_json(message.body)
        except ValidationError as exc:
            return DeadLetter(f"{spec.name}: args do not validate: {_wire.describe(exc)}")
        self._check_fingerprint(spec.name, spec.fingerprint, message)
        return Run(binding, args)

    def _expired(self, message: Message, name: str) -> Finish | None:
        """A task whose ``taskell-expires-at`` has passed is never run: it fails with
        ``TaskExpired``. A header that does not parse counts as no expiry (warned once)."""
        value = message.headers.get(_wire.EXPIRES_HEADER)
        if value is None:
            return None
        expires_at = _parse_utc(value)
        if expires_at is None:
            if not self._expiry_warned:
                self._expiry_warned = True
                log.warning("%s: ignoring malformed %s header %r", name, _wire.EXPIRES_HEADER, value)
            return None
        now = datetime.datetime.now(datetime.UTC)
        if expires_at > now:
            return None
        log.info("%s [%s] expired at %s: not run", name, message.message_id, expires_at.isoformat())
        text = f"expired at {expires_at.isoformat()} before it started"
        return Finish(_wire.FAILED, _wire.error_body(_wire.TASK_EXPIRED, text))

    def _poisoned(self, delivery: Delivery, name: str) -> DeadLetter | Recount | None:
        """Enforce ``delivery_limit``: a task whose worker died on it that many times is
        dead-lettered instead of started again.

        Quorum queues count deliveries themselves (``x-delivery-count``). A classic queue does
        not, so a redelivered task is first republished with the count in a header (and the
        redelivery acked right behind it); the copy is what runs.
        """
        message = delivery.message
        limit = self._config.delivery_limit
        count = message.headers.get(_wire.DELIVERY_COUNT_HEADER)
        if count is None:
            count = message.headers.get(_wire.DELIVERIES_HEADER, 0)
            if delivery.redelivered:
                count = int(count) + 1
                if count < limit:
                    headers = {**message.headers, _wire.DELIVERIES_HEADER: count}
                    return Recount(dataclasses.replace(message, headers=headers))
        if int(count) < limit:
            return None
        return DeadLetter(
            f"{name}: delivered {int(count) + 1} times, over delivery_limit ({limit}): its worker died on it each time"
        )

    def _check_fingerprint(self, name: str, expected: str, message: Message) -> None:
        got = message.headers.get(_wire.FINGERPRINT_HEADER)
        if got != expected and (name, str(got)) not in self._fingerprint_warned:
            self._fingerprint_warned.add((name, str(got)))
            log.warning(
                "%s: fingerprint %s differs from this worker's %s (schema versions differ)",
                name,
                got,
                expected,
            )


def _parse_utc(value: object) -> datetime.datetime | None:
    """An ISO 8601 time (a naive one is UTC), or None if ``value`` is not one."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)


def _early_by(message: Message) -> float:
    """Seconds until a delayed message is due (its ``taskell-due-ms``), 0 if it is due or not
    delayed. "Never early" is kept here too: a broker that loses a delay level's TTL (seen
    after a node restart) hands messages over early."""
    due = message.headers.get(_wire.DUE_HEADER)
    if not isinstance(due, int) or isinstance(due, bool):
        return 0.0
    return max(0.0, due / 1000 - time.time())
