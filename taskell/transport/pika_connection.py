"""pika's connection as taskell uses it: parameters from the config, pika's own failure logs
silenced, and a ``SelectConnection`` that writes the frames of one I/O-loop turn at once.

``CoalescingConnection`` overrides a private method of pika's ``Connection``
(``_output_marshaled_frames``) and uses more (``_adapter_emit_data``, ``_transport``, the
plaintext transport's ``_sock`` and ``_state``), which is why pyproject.toml bounds pika to the
versions where they are known to be the same.
"""

from __future__ import annotations

import logging
import select
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import pika  # type: ignore[import-untyped]
from pika.adapters.select_connection import (  # type: ignore[import-untyped]
    EPollPoller,
    IOLoop,
    SelectConnection,
)
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport  # type: ignore[import-untyped]

from ..config import Config

__all__ = ["CoalescingConnection", "LockedIOLoop", "pika_parameters"]

# pika logs every connection failure at ERROR with a traceback; taskell reports them itself.
for _name in (
    "pika.adapters.base_connection",
    "pika.adapters.blocking_connection",
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
):
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def pika_parameters(url: str, config: Config) -> pika.URLParameters:
    """Connection parameters for ``url`` with the config's heartbeat, timeout and TLS files."""
    params = pika.URLParameters(url)
    params.heartbeat = config.heartbeat
    params.socket_timeout = config.connect_timeout
    params.stack_timeout = config.connect_timeout
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.client_properties = {"connection_name": "taskell"}
    mq = config.rabbitmq
    if url.startswith("amqps://") and (mq.ca_file or mq.cert_file):
        context = ssl.create_default_context(cafile=mq.ca_file)
        if mq.cert_file:
            context.load_cert_chain(mq.cert_file, mq.key_file)
        params.ssl_options = pika.SSLOptions(context, server_hostname=params.host)
    return params


class CoalescingConnection(SelectConnection):  # type: ignore[misc]  # pika ships no type information
    """pika writes every frame with its own ``send`` (three per message); this connection
    collects the frames of one I/O-loop turn and writes them in one ``send``, which saves
    system calls here and wake-ups in the broker."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._frames_out: list[bytes] = []
        self._loop_thread = threading.current_thread()  # made on its I/O loop's thread
        super().__init__(*args, **kwargs)

    # Overrides pika's private Connection._output_marshaled_frames, which writes each frame at
    # once (the same in pika 1.3.0 to 1.4.4): the reason for the pika bound in pyproject.toml.
    def _output_marshaled_frames(self, marshaled_frames: Sequence[bytes]) -> None:
        if not self._frames_out and threading.current_thread() is self._loop_thread:
            # A zero-delay timer runs after this turn's callbacks and socket events. Another
            # thread holding a LockedIOLoop's lock flushes before it lets go instead.
            self.ioloop.call_later(0, self.flush_frames)
        for frame in marshaled_frames:
            self.bytes_sent += len(frame)
            self.frames_sent += 1
            self._frames_out.append(frame)

    def flush_frames(self) -> None:
        """Write the frames collected so far (I/O thread only); the timer then finds none."""
        if not self._frames_out:
            return
        data = b"".join(self._frames_out)
        self._frames_out.clear()
        # pika's private socket transport (None once closed) and writer: see the pika bound.
        transport = self._transport
        if transport is None:  # the socket closed since: nothing to write to
            return
        if (
            type(transport) is _AsyncPlaintextTransport
            and transport._state == transport._STATE_ACTIVE
            and not transport.get_write_buffer_size()
        ):
            # Send at once: pika's write only buffers and asks the loop for writability, which
            # costs one more poll (and two epoll_ctl) before the bytes leave, on every turn.
            try:
                sent = transport._sock.send(data)
            except OSError:  # would block, or broken: pika's writer below retries or reports it
                sent = 0
            data = data[sent:]
            if not data:
                return
        self._adapter_emit_data(data)


class LockedIOLoop(IOLoop):  # type: ignore[misc]  # pika ships no type information
    """pika's I/O loop, run while holding ``lock`` except while it waits in ``epoll``.

    Another thread that takes the lock without waiting (``lock.acquire(blocking=False)``) may
    then use pika itself, say publish its own message and write it, instead of handing it to the
    loop's thread, which costs a wake-up and a thread switch. Such a thread must not set pika
    timers (the loop computed its wait without them) and must write the frames it made before
    it lets go. Linux only (epoll); elsewhere ``locking`` is False and the loop is pika's own.
    """

    locking = hasattr(select, "epoll")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        super().__init__()

    def _get_poller(self, get_wait_seconds: Any, process_timeouts: Any) -> Any:
        if not self.locking:
            return IOLoop._get_poller(get_wait_seconds, process_timeouts)
        return _LockedEPollPoller(self._lock, get_wait_seconds, process_timeouts)


class _LockedEPollPoller(EPollPoller):  # type: ignore[misc]
    def __init__(self, lock: threading.Lock, get_wait_seconds: Any, process_timeouts: Any) -> None:
        self._lock = lock
        super().__init__(get_wait_seconds, process_timeouts)

    def _create_poller(self) -> Any:
        return _UnlockedWhileWaiting(select.epoll(), self._lock)


class _UnlockedWhileWaiting:
    """An ``epoll`` object whose ``poll`` lets go of ``lock`` while it waits."""

    def __init__(self, epoll: Any, lock: threading.Lock) -> None:
        self._epoll = epoll
        self._lock = lock

    def poll(self, timeout: float) -> Any:
        self._lock.release()
        try:
            return self._epoll.poll(timeout)
        finally:
            self._lock.acquire()

    def __getattr__(self, name: str) -> Any:  # register, modify, unregister, close
        return getattr(self._epoll, name)
