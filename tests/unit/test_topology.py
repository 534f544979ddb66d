"""What a transport declares again after a reconnect: order, no repeats, removals, consumers last."""

from __future__ import annotations

from typing import Any

from taskell.transport.base import Delivery
from taskell.transport.topology import Binding, Consumer, Exchange, ExchangeBinding, Prefetch, Queue, Topology


class Recorder:
    """A replay target that lists what it was asked to declare, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def declare_queue(self, queue: Queue) -> None:
        self.calls.append(("queue", queue))

    def declare_exchange(self, exchange: Exchange) -> None:
        self.calls.append(("exchange", exchange))

    def bind(self, binding: Binding) -> None:
        self.calls.append(("bind", binding))

    def bind_exchange(self, binding: ExchangeBinding) -> None:
        self.calls.append(("bind_exchange", binding))

    def set_prefetch(self, prefetch: Prefetch) -> None:
        self.calls.append(("prefetch", prefetch))

    def start_consumer(self, consumer: Consumer) -> None:
        self.calls.append(("consumer", consumer.tag))


def replayed(topology: Topology) -> list[tuple[str, Any]]:
    target = Recorder()
    topology.replay(target)
    return target.calls


def ignore(delivery: Delivery) -> None:
    pass


def test_declarations_replay_in_the_order_they_were_recorded() -> None:
    topology = Topology()
    queue = Queue("tasks", arguments={"x-queue-type": "quorum"})
    topology.add(Exchange("outcomes", "direct"))
    topology.add(queue)
    topology.add(Binding("tasks", "outcomes", "t1"))
    topology.add(Prefetch(8, channel_wide=False))
    assert replayed(topology) == [
        ("exchange", Exchange("outcomes", "direct")),
        ("queue", queue),
        ("bind", Binding("tasks", "outcomes", "t1")),
        ("prefetch", Prefetch(8, channel_wide=False)),
    ]


def test_a_repeated_declaration_is_kept_once_at_its_first_place() -> None:
    topology = Topology()
    topology.add(Queue("a", arguments={"x-queue-type": "classic"}))
    topology.add(Queue("b"))
    topology.add(Queue("a", arguments={"x-queue-type": "classic"}))  # equal arguments: the same
    topology.add(Binding("b", "x"))
    topology.add(Binding("b", "x"))
    assert [kind for kind, _ in replayed(topology)] == ["queue", "queue", "bind"]
    assert [d.name for kind, d in replayed(topology) if kind == "queue"] == ["a", "b"]


def test_queues_that_differ_in_any_field_are_both_kept() -> None:
    topology = Topology()
    topology.add(Queue("a", arguments={"x-queue-type": "classic"}))
    topology.add(Queue("a", arguments={"x-queue-type": "quorum"}))
    topology.add(Queue("a", durable=False))
    assert len(replayed(topology)) == 3


def test_queue_arguments_are_copied_when_recorded() -> None:
    arguments: dict[str, Any] = {"x-expires": 1000}
    topology = Topology()
    topology.add(Queue("a", arguments=arguments))
    arguments["x-expires"] = 5
    [(_, queue)] = replayed(topology)
    assert queue.arguments == {"x-expires": 1000}


def test_a_new_prefetch_replaces_the_old_one_and_moves_last() -> None:
    topology = Topology()
    topology.add(Prefetch(4, channel_wide=True))
    topology.add(Queue("a"))
    topology.add(Prefetch(16, channel_wide=False))
    assert replayed(topology) == [("queue", Queue("a")), ("prefetch", Prefetch(16, channel_wide=False))]


def test_unbind_forgets_only_that_binding() -> None:
    topology = Topology()
    topology.add(Binding("q", "outcomes", "t1"))
    topology.add(Binding("q", "outcomes", "t2"))
    topology.unbind(Binding("q", "outcomes", "t1"))
    topology.unbind(Binding("q", "outcomes", "never-bound"))  # no error
    assert replayed(topology) == [("bind", Binding("q", "outcomes", "t2"))]


def test_delete_queue_forgets_the_queue_and_its_bindings_only() -> None:
    topology = Topology()
    topology.add(Queue("a"))
    topology.add(Queue("b"))
    topology.add(Exchange("a", "fanout"))  # an exchange of the same name stays
    topology.add(Binding("a", "x"))
    topology.add(Binding("b", "a"))  # a binding *to* exchange "a" stays
    topology.delete_queue("a")
    assert replayed(topology) == [
        ("queue", Queue("b")),
        ("exchange", Exchange("a", "fanout")),
        ("bind", Binding("b", "a")),
    ]


def test_consumers_replay_after_every_declaration_in_start_order() -> None:
    topology = Topology()
    topology.add(Queue("a"))
    topology.add_consumer(Consumer("c1", "a", ignore))
    topology.add(Queue("b"))
    topology.add_consumer(Consumer("c2", "b", ignore, auto_ack=True))
    topology.add(Prefetch(2, channel_wide=False))  # applies to consumers started after it
    assert [kind for kind, _ in replayed(topology)] == ["queue", "queue", "prefetch", "consumer", "consumer"]
    assert [tag for kind, tag in replayed(topology) if kind == "consumer"] == ["c1", "c2"]


def test_cancel_forgets_a_consumer() -> None:
    topology = Topology()
    topology.add_consumer(Consumer("c1", "a", ignore))
    topology.add_consumer(Consumer("c2", "a", ignore))
    topology.cancel("c1")
    topology.cancel("unknown")  # no error: the broker may have cancelled it already
    assert replayed(topology) == [("consumer", "c2")]


def test_replay_can_be_repeated_for_every_reconnect() -> None:
    topology = Topology()
    topology.add(Queue("a"))
    topology.add_consumer(Consumer("c1", "a", ignore))
    assert replayed(topology) == replayed(topology) == [("queue", Queue("a")), ("consumer", "c1")]


def test_exchange_bindings_replay_in_order_once() -> None:
    topology = Topology()
    topology.add(Exchange("a", "topic"))
    topology.add(Exchange("b", "topic"))
    topology.add(ExchangeBinding("b", "a", "*.0.#"))
    topology.add(ExchangeBinding("b", "a", "*.0.#"))
    topology.delete_queue("b")  # a queue of that name: the exchange binding stays
    assert replayed(topology) == [
        ("exchange", Exchange("a", "topic")),
        ("exchange", Exchange("b", "topic")),
        ("bind_exchange", ExchangeBinding("b", "a", "*.0.#")),
    ]
