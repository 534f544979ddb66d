"""The delay ladder (taskell/transport/delays.py): rounding, routing keys, and a walk of the
declared topology under RabbitMQ's topic matching rules, proving a message waits in exactly the
levels of its 1 digits and ends in its own queue only."""

from __future__ import annotations

import pytest

from taskell.transport import delays
from taskell.transport.topology import Binding, Exchange, ExchangeBinding, Queue


def topic_match(pattern: str, key: str) -> bool:
    """RabbitMQ's topic rule: ``*`` is one word, ``#`` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] == "*" or p[0] == k[0]) and match(p[1:], k[1:])

    return match(pattern.split("."), key.split("."))


class Ladder:
    """The declared topology, walked the way the broker routes and dead-letters."""

    def __init__(self, destinations: list[str]) -> None:
        declared = delays.declarations() + [delays.destination_binding(q) for q in destinations]
        self.exchanges = {d.name: d for d in declared if isinstance(d, Exchange)}
        self.queues = {d.name: d for d in declared if isinstance(d, Queue)}
        self.bindings = [d for d in declared if isinstance(d, Binding)]
        self.links = [d for d in declared if isinstance(d, ExchangeBinding)]
        for b in self.bindings:
            assert b.exchange in self.exchanges
        for link in self.links:
            assert {link.source, link.destination} <= set(self.exchanges)

    def route(self, exchange: str, key: str) -> set[str]:
        declared = self.exchanges[exchange]

        def match(pattern: str) -> bool:
            return declared.kind == "fanout" or topic_match(pattern, key)

        queues = {b.queue for b in self.bindings if b.exchange == exchange and match(b.routing_key)}
        for link in self.links:
            if link.source == exchange and match(link.routing_key):
                queues |= self.route(link.destination, key)
        alternate = (declared.arguments or {}).get("alternate-exchange")
        if not queues and alternate:
            queues = self.route(alternate, key)
        return queues

    def levels(self) -> set[str]:
        return {name for name, q in self.queues.items() if "x-message-ttl" in (q.arguments or {})}

    def walk(self, exchange: str, key: str) -> tuple[list[str], int, set[str]]:
        """The level queues a message published to ``exchange`` with ``key`` waits in, the
        total wait (ms), and the queues it finally reaches."""
        waited, total = [], 0
        reached = self.route(exchange, key)
        while len(reached) == 1 and (name := next(iter(reached))) in self.levels():
            arguments = self.queues[name].arguments or {}
            waited.append(name)
            total += arguments["x-message-ttl"]
            reached = self.route(arguments["x-dead-letter-exchange"], key)
        return waited, total, reached


def test_delays_round_up_to_whole_milliseconds() -> None:
    assert delays.delay_ms(0.29) == 290  # not 291 from 0.29 * 1000 = 290.00000000000006
    assert delays.delay_ms(0.0001) == 1
    assert delays.delay_ms(1.2341) == 1235
    assert delays.delay_ms(0) == 0
    assert delays.delay_ms(delays.MAX_DELAY_MS / 1000) == delays.MAX_DELAY_MS


def test_a_delay_over_the_longest_is_refused() -> None:
    with pytest.raises(ValueError, match=r"8\.7 years"):
        delays.delay_ms(delays.MAX_DELAY_MS / 1000 + 0.001)
    with pytest.raises(ValueError, match="finite"):
        delays.delay_ms(float("inf"))


def test_the_routing_key_is_the_digits_most_significant_first_then_the_queue() -> None:
    key = delays.routing_key(5, "taskell.q1")
    words = key.split(".")
    assert len(words) == delays.LEVELS + 2
    assert words[: delays.LEVELS] == ["0"] * (delays.LEVELS - 3) + ["1", "0", "1"]
    assert words[delays.LEVELS :] == ["taskell", "q1"]
    assert delays.routing_key(delays.MAX_DELAY_MS, "q").startswith("1." * delays.LEVELS)


@pytest.mark.parametrize("ms", [1, 2, 5, 1000, 1234, 86_400_000, 2**31 + 7, delays.MAX_DELAY_MS])
def test_a_message_waits_in_the_levels_of_its_one_digits_then_reaches_its_queue(ms: int) -> None:
    ladder = Ladder(["taskell.q1", "q1", "other.taskell.q1"])
    key = delays.routing_key(ms, "taskell.q1")
    levels = sorted((n for n in range(delays.LEVELS) if ms >> n & 1), reverse=True)
    assert delays.entry(ms) == f"taskell.delay.{levels[0]}"
    # the entry level, or any level above it (they pass the message on), gives the same walk
    for exchange in (delays.entry(ms), f"taskell.delay.{delays.LEVELS - 1}"):
        waited, total, reached = ladder.walk(exchange, key)
        assert total == ms
        assert [int(name.rsplit(".", 1)[1]) for name in waited] == levels
        # exactly its own queue: not "q1" (a suffix of its name) nor one whose name ends with it
        assert reached == {"taskell.q1"}


def test_a_message_for_a_queue_not_bound_goes_to_the_unroutable_queue() -> None:
    ladder = Ladder(["taskell.q1"])
    _, total, reached = ladder.walk(delays.entry(1500), delays.routing_key(1500, "taskell.gone"))
    assert total == 1500
    assert reached == {"taskell.delay.unroutable"}


def test_no_delay_passes_straight_to_the_queue() -> None:
    ladder = Ladder(["taskell.q1"])
    assert delays.entry(0) == "taskell.delay.0"
    assert ladder.walk(delays.entry(0), delays.routing_key(0, "taskell.q1")) == ([], 0, {"taskell.q1"})


def test_every_level_is_a_quorum_queue_that_dead_letters_at_least_once() -> None:
    queues = [d for d in delays.declarations() if isinstance(d, Queue) and d.name != delays.UNROUTABLE]
    assert [q.name for q in queues] == [f"taskell.delay.{n}" for n in range(delays.LEVELS)]
    for n, queue in enumerate(queues):
        assert queue.durable
        assert queue.arguments == {
            "x-queue-type": "quorum",
            "x-message-ttl": 2**n,
            "x-dead-letter-exchange": f"taskell.delay.{n - 1}" if n else "taskell.delay.deliver",
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }


def test_each_exchange_is_declared_before_anything_refers_to_it() -> None:
    seen: set[str] = set()
    for d in delays.declarations():
        if isinstance(d, Exchange):
            assert (d.arguments or {}).get("alternate-exchange", delays.UNROUTABLE) in seen | {d.name}
            seen.add(d.name)
        elif isinstance(d, Queue):
            assert (d.arguments or {}).get("x-dead-letter-exchange", delays.UNROUTABLE) in seen
        elif isinstance(d, Binding):
            assert d.exchange in seen
        elif isinstance(d, ExchangeBinding):
            assert {d.source, d.destination} <= seen


@pytest.mark.parametrize("name", ["", "a.*.b", "#", "x" * 180])
def test_a_queue_the_ladder_cannot_route_to_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="cannot be delayed to"):
        delays.routing_key(1000, name)
    with pytest.raises(ValueError, match="cannot be delayed to"):
        delays.destination_binding(name)


def test_the_longest_queue_name_fits_a_routing_key() -> None:
    key = delays.routing_key(delays.MAX_DELAY_MS, "x" * 179)
    assert len(key.encode()) == 255


def test_a_message_held_again_leaves_its_dead_letter_history_behind() -> None:
    headers = {
        "x-death": [{"queue": "taskell.delay.3", "reason": "expired", "count": 1}],
        "x-first-death-queue": "taskell.delay.3",
        "x-first-death-reason": "expired",
        "x-first-death-exchange": "taskell.delay.3",
        "x-last-death-queue": "taskell.delay.0",
        "x-last-death-reason": "expired",
        "x-last-death-exchange": "taskell.delay.0",
        "taskell-due-ms": 1,
        "x-deathly-custom": "kept",  # only RabbitMQ's own dead-letter headers go
    }
    assert delays.without_deaths(headers) == {"taskell-due-ms": 1, "x-deathly-custom": "kept"}
    assert "x-death" in headers  # the caller's dict is left as it was
