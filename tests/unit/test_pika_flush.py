"""``CoalescingConnection.flush_frames`` on pika's real plaintext transport over a socket pair:
a batch leaves at once when pika's buffer is empty (no extra loop turn for writability), what
the socket does not take goes to pika's buffer, and the byte order holds either way. Frames
worth sending only along others (acks) join a batch that is written anyway. On the read side,
confirms and deliveries bypass pika's callback lookup, but not for a channel no longer open."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from pika import frame, spec  # type: ignore[import-untyped]
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport  # type: ignore[import-untyped]
from pika.callback import CallbackManager  # type: ignore[import-untyped]

from taskell.transport.pika_connection import CoalescingConnection


class FakeLoop:
    """The two calls pika's transport makes on the loop here; the writer is run by hand."""

    def __init__(self) -> None:
        self.writer: Callable[[], None] | None = None

    def set_reader(self, fd: int, on_readable: Callable[[], None]) -> None:
        pass

    def set_writer(self, fd: int, on_writable: Callable[[], None]) -> None:
        self.writer = on_writable

    def remove_writer(self, fd: int) -> bool:
        self.writer = None
        return True


def connection(sock: socket.socket, loop: FakeLoop, before_flush: Callable[[], None] | None = None) -> Any:
    conn: Any = object.__new__(CoalescingConnection)  # no broker: only the write path is used
    conn._frames_out = []
    conn._before_flush = before_flush
    conn._transport = _AsyncPlaintextTransport(sock, None, loop)
    return conn


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        try:
            chunks.append(sock.recv(1 << 20))
        except BlockingIOError:
            return b"".join(chunks)


def test_a_batch_leaves_in_the_flush_itself() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    loop = FakeLoop()
    conn = connection(ours, loop)
    conn._frames_out.extend([b"frame-1;", b"frame-2;"])
    conn.flush_frames()
    assert read_all(theirs) == b"frame-1;frame-2;"
    assert loop.writer is None  # nothing left for a later loop turn
    ours.close()
    theirs.close()


def test_what_before_flush_adds_leaves_with_the_batch_and_only_with_one() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    added: list[int] = []

    def add_ack() -> None:  # as AmqpTransport adds the acks not written yet
        added.append(1)
        conn._frames_out.append(b"ack;")

    conn = connection(ours, FakeLoop(), add_ack)
    conn.flush_frames()  # nothing to write: no ack written alone
    assert added == [] and read_all(theirs) == b""
    conn._frames_out.append(b"event;")
    conn.flush_frames()
    assert read_all(theirs) == b"event;ack;"  # written together, the event first
    assert added == [1]
    ours.close()
    theirs.close()


def test_what_the_socket_does_not_take_is_buffered_in_order() -> None:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.setblocking(False)
    loop = FakeLoop()
    conn = connection(ours, loop)
    big = bytes(range(256)) * 40_000  # 10 MB: more than the socket buffers hold
    conn._frames_out.append(big)
    conn.flush_frames()
    assert conn._transport.get_write_buffer_size() > 0 and loop.writer is not None
    conn._frames_out.append(b"after")  # pika's buffer is not empty: this one queues behind
    conn.flush_frames()
    received = b""
    for _ in range(10_000):
        received += read_all(theirs)
        if loop.writer is None:
            break
        loop.writer()
    received += read_all(theirs)
    assert received == big + b"after"
    ours.close()
    theirs.close()


class FakeChannel:
    def __init__(self, is_open: bool) -> None:
        self.is_open = is_open


def reading_connection(channels: dict[int, FakeChannel]) -> tuple[Any, list[Any], list[Any]]:
    """A connection for the read path only: what reaches the confirm callback, and what pika's
    own dispatch hands to a channel (its callback manager is empty, as nothing registered)."""
    confirmed: list[Any] = []
    to_channel: list[Any] = []
    conn: Any = object.__new__(CoalescingConnection)
    conn._on_confirm = confirmed.append
    conn._channels = channels
    conn.callbacks = CallbackManager()
    conn.frames_received = 0
    conn._heartbeat_checker = None
    conn._deliver_frame_to_channel = to_channel.append
    return conn, confirmed, to_channel


def test_confirms_and_deliveries_skip_pikas_callback_lookup() -> None:
    conn, confirmed, to_channel = reading_connection({1: FakeChannel(is_open=True)})
    ack = frame.Method(1, spec.Basic.Ack(7, multiple=True))
    nack = frame.Method(1, spec.Basic.Nack(8))
    deliver = frame.Method(1, spec.Basic.Deliver("ctag", 1, False, "", "q"))
    for each in (ack, nack, deliver):
        conn._process_frame(each)
    assert confirmed == [ack, nack]
    assert to_channel == [deliver]
    assert conn.frames_received == 3


def test_a_confirm_on_a_channel_no_longer_open_is_left_to_pika() -> None:
    conn, confirmed, to_channel = reading_connection({1: FakeChannel(is_open=False)})
    ack = frame.Method(1, spec.Basic.Ack(7))
    conn._process_frame(ack)
    assert confirmed == []  # pika dropped that channel's confirm callback when it closed
    assert to_channel == [ack]
