"""Which publish a confirm, a nack or a return settles, and what a new channel publishes again."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

import pytest

from taskell.errors import BrokerUnavailable
from taskell.transport.confirms import Confirms, Publish


def publish(message_id: str, *, mandatory: bool = True) -> Publish:
    properties = SimpleNamespace(message_id=message_id)  # what is read of pika's BasicProperties
    return Publish(Future(), "", "q", message_id.encode(), properties, mandatory)


def sent(confirms: Confirms, *message_ids: str) -> list[Publish]:
    publishes = [publish(message_id) for message_id in message_ids]
    for p in publishes:
        confirms.sent(p)
    return publishes


def test_a_single_confirm_settles_only_its_publish() -> None:
    confirms = Confirms()
    a, b = sent(confirms, "a", "b")
    confirms.confirmed(2, multiple=False, ok=True)
    assert b.future.result(0) is None and not a.future.done()


def test_a_multiple_confirm_settles_every_publish_up_to_its_number() -> None:
    confirms = Confirms()
    a, b, c = sent(confirms, "a", "b", "c")
    confirms.confirmed(2, multiple=True, ok=True)
    assert a.future.done() and b.future.done() and not c.future.done()
    confirms.confirmed(3, multiple=True, ok=True)
    assert c.future.result(0) is None


def test_a_nack_fails_the_publish() -> None:
    confirms = Confirms()
    a, b = sent(confirms, "a", "b")
    confirms.confirmed(2, multiple=True, ok=False)
    for p in (a, b):
        with pytest.raises(BrokerUnavailable, match="refused"):
            p.future.result(0)


def test_a_returned_mandatory_publish_fails_as_unroutable_when_confirmed() -> None:
    confirms = Confirms()
    a, b = sent(confirms, "a", "b")
    confirms.returned("a")
    confirms.confirmed(2, multiple=True, ok=True)  # the broker confirms returned messages too
    with pytest.raises(BrokerUnavailable, match="message a is unroutable"):
        a.future.result(0)
    assert b.future.result(0) is None


def test_a_return_matches_only_mandatory_publishes() -> None:
    confirms = Confirms()
    plain = publish("x", mandatory=False)
    confirms.sent(plain)
    confirms.returned("x")
    confirms.confirmed(1, multiple=False, ok=True)
    assert plain.future.result(0) is None


def test_unknown_and_repeated_confirms_are_ignored() -> None:
    confirms = Confirms()
    [a] = sent(confirms, "a")
    confirms.confirmed(1, multiple=False, ok=True)
    confirms.confirmed(1, multiple=False, ok=False)  # no second outcome, no error
    confirms.confirmed(9, multiple=False, ok=True)
    assert a.future.result(0) is None


def test_restart_returns_the_unconfirmed_in_order_and_numbers_from_one() -> None:
    confirms = Confirms()
    a, b, _c, d = sent(confirms, "a", "b", "c", "d")
    confirms.confirmed(3, multiple=False, ok=True)
    confirms.returned("b")  # a return of the old channel does not carry over
    pending = confirms.restart()
    assert pending == [a, b, d]
    for p in pending:  # published again on the new channel: numbered 1, 2, 3
        confirms.sent(p)
    confirms.confirmed(2, multiple=True, ok=True)
    assert a.future.result(0) is None and b.future.result(0) is None and not d.future.done()


def test_fail_fails_every_unconfirmed_publish() -> None:
    confirms = Confirms()
    a, b = sent(confirms, "a", "b")
    confirms.confirmed(1, multiple=False, ok=True)
    confirms.fail(BrokerUnavailable("connection closed"))
    assert a.future.result(0) is None
    with pytest.raises(BrokerUnavailable, match="connection closed"):
        b.future.result(0)
    assert confirms.restart() == []
