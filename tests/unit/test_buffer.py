"""The worker's local buffer (``taskell._buffer``): waiting deliveries go to pool threads highest
priority first, then in arrival order; closing it hands out what waits, then stops."""

from __future__ import annotations

import threading

from taskell._buffer import PriorityBuffer, priority_of
from taskell.transport import Delivery, Message


def delivery(name: str, priority: int | None = None) -> Delivery:
    return Delivery(
        Message(body=b"{}", message_id=name, priority=priority), tag=0, redelivered=False, queue="q"
    )


def drain(buffer: PriorityBuffer) -> list[str | None]:
    buffer.close()
    names: list[str | None] = []
    while (item := buffer.get()) is not None:
        names.append(item.message.message_id)
    return names


def test_highest_priority_first_then_arrival_order() -> None:
    buffer = PriorityBuffer()
    for name, priority in [("a", 0), ("b", 5), ("c", None), ("d", 9), ("e", 5), ("f", 1), ("g", 9)]:
        assert buffer.put(delivery(name, priority))
    assert len(buffer) == 7
    assert drain(buffer) == ["d", "g", "b", "e", "f", "a", "c"]


def test_no_priority_counts_as_zero_and_out_of_range_is_clamped() -> None:
    assert [priority_of(delivery("x", p)) for p in (None, 0, -3, 4, 9, 200)] == [0, 0, 0, 4, 9, 9]
    buffer = PriorityBuffer()
    for name, priority in [("none", None), ("neg", -1), ("zero", 0), ("huge", 255), ("nine", 9)]:
        buffer.put(delivery(name, priority))
    assert drain(buffer) == ["huge", "nine", "none", "neg", "zero"]


def test_a_later_high_priority_delivery_overtakes_waiting_ones() -> None:
    buffer = PriorityBuffer()
    buffer.put(delivery("low-1", 1))
    buffer.put(delivery("low-2", 1))
    first = buffer.get()
    assert first is not None and first.message.message_id == "low-1"
    buffer.put(delivery("urgent", 8))
    assert drain(buffer) == ["urgent", "low-2"]


def test_closed_buffer_hands_out_what_waits_then_refuses() -> None:
    buffer = PriorityBuffer()
    buffer.put(delivery("waiting"))
    buffer.close()
    assert not buffer.put(delivery("late"))
    item = buffer.get()
    assert item is not None and item.message.message_id == "waiting"
    assert buffer.get() is None
    assert buffer.get() is None


def test_blocked_readers_wake_for_each_delivery_and_for_close() -> None:
    buffer = PriorityBuffer()
    got: list[str | None] = []
    lock = threading.Lock()

    def read() -> None:
        while (item := buffer.get()) is not None:
            with lock:
                got.append(item.message.message_id)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for reader in readers:
        reader.start()
    names = [f"t{n}" for n in range(1000)]
    for n, name in enumerate(names):
        buffer.put(delivery(name, n % 10))
    buffer.close()
    for reader in readers:
        reader.join(10)
    assert not any(reader.is_alive() for reader in readers)
    assert sorted(got, key=str) == sorted(names)  # each delivery exactly once


def test_every_delivery_accepted_before_a_concurrent_close_is_handed_out() -> None:
    for _ in range(200):
        buffer = PriorityBuffer()
        got: list[str | None] = []
        accepted: list[str] = []
        threads = [
            threading.Thread(target=read_all, args=(buffer, got)),
            threading.Thread(target=read_all, args=(buffer, got)),
            threading.Thread(target=put_many, args=(buffer, accepted)),
        ]
        for thread in threads:
            thread.start()
        buffer.close()  # races with the writer
        for thread in threads:
            thread.join(10)
        assert sorted(got, key=str) == sorted(accepted)


def read_all(buffer: PriorityBuffer, got: list[str | None]) -> None:
    while (item := buffer.get()) is not None:
        got.append(item.message.message_id)


def put_many(buffer: PriorityBuffer, accepted: list[str]) -> None:
    for n in range(50):
        if buffer.put(delivery(f"t{n}", n % 3)):
            accepted.append(f"t{n}")
