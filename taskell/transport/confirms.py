"""Publisher confirms: which publish a confirm (or a nack, or a return) settles.

A confirm-mode channel numbers its publishes 1, 2, 3, ...; the broker confirms them by number,
one at a time or all up to a number (``multiple``). A ``mandatory`` publish that reaches no
queue is returned first, then confirmed: it fails as unroutable. After a reconnect, what was
not confirmed is published again on the new channel, numbered from 1 (at-least-once).
"""

from __future__ import annotations

import itertools
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from ..errors import BrokerUnavailable

__all__ = ["Confirms", "Publish"]


@dataclass(slots=True)
class Publish:
    """One ``basic.publish``; ``properties`` is pika's ``BasicProperties``."""

    future: Future[None]
    exchange: str
    routing_key: str
    body: bytes
    properties: Any
    mandatory: bool
    replay: bool = True  # False: never published again on a new connection

    @property
    def message_id(self) -> str | None:
        """The id a return is matched by (only mandatory publishes can be returned)."""
        return self.properties.message_id if self.mandatory else None


class Confirms:
    """The publishes of one channel awaiting the broker's confirm, used on one thread."""

    def __init__(self) -> None:
        self._unconfirmed: dict[int, Publish] = {}  # in publish order
        self._next = 1
        self._returned: set[str] = set()

    def sent(self, publish: Publish) -> None:
        """Note ``publish``, just written to the channel."""
        self._unconfirmed[self._next] = publish
        self._next += 1

    def returned(self, message_id: str | None) -> None:
        """The broker returned the message (unroutable); its confirm follows."""
        if message_id is not None:
            self._returned.add(message_id)

    def confirmed(self, number: int, *, multiple: bool, ok: bool) -> None:
        """Settle publish ``number`` (and every earlier one, with ``multiple``): resolved, or
        failed when ``ok`` is False (a nack) or the message was returned."""
        numbers = [number]
        if multiple:
            numbers = list(itertools.takewhile(lambda n: n <= number, self._unconfirmed))
        for n in numbers:
            publish = self._unconfirmed.pop(n, None)
            if publish is None:
                continue
            message_id = publish.message_id
            if message_id is not None and message_id in self._returned:
                self._returned.discard(message_id)
                error = BrokerUnavailable(f"message {message_id} is unroutable (no such queue)")
                publish.future.set_exception(error)
            elif ok:
                publish.future.set_result(None)
            else:
                publish.future.set_exception(BrokerUnavailable(f"the broker refused message {message_id}"))

    def restart(self) -> list[Publish]:
        """For a new channel: numbering starts over; returns what was not confirmed, in the
        order it was published, to publish again."""
        pending = list(self._unconfirmed.values())
        self._unconfirmed.clear()
        self._next = 1
        self._returned.clear()
        return pending

    def fail(self, error: BaseException) -> None:
        """Fail every unconfirmed publish (the transport gave up)."""
        for publish in self.restart():
            if not publish.future.done():
                publish.future.set_exception(error)
