"""pika's connection as taskell uses it: parameters from the config, pika's own failure logs
silenced, and a ``SelectConnection`` that writes the frames of one I/O-loop turn at once and
hands confirms and deliveries on without pika's callback lookup.

``CoalescingConnection`` overrides private methods of pika's ``Connection``
(``_output_marshaled_frames``, ``_process_frame``) and uses more (``_adapter_emit_data``,
``_transport``, ``_channels``, ``_deliver_frame_to_channel``, the plaintext transport's ``_sock``
and ``_state``), which is why pyproject.toml bounds pika to the versions where they are known to
be the same.
"""

from __future__ import annotations

import logging
import select
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika  # type: ignore[import-untyped]
from pika.adapters.select_connection import (  # type: ignore[import-untyped]
    EPollPoller,
    IOLoop,
    SelectConnection,
)
from pika.adapters.utils.io_services_utils import _AsyncPlaintextTransport  # type: ignore[import-untyped]
from pika.spec import Basic  # type: ignore[import-untyped]

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

log = logging.getLogger("taskell.amqp")

Ack, Nack, Deliver = Basic.Ack, Basic.Nack, Basic.Deliver

HOME_CHECK = 0.005  # seconds between two looks of the loop's thread at a borrowed loop
# A borrower that held the loop longer than this wakes the loop's thread when it gives it back
# (a wake-up is cheap next to such a wait); the loop's thread then looks only every SAFETY_CHECK.
LONG_BORROW = 0.02
SAFETY_CHECK = 1.0
LINGER = 0.001  # seconds the loop's thread stays aside after a borrower gave the loop back
LOOK_EVERY = 0.05  # default seconds between a borrower's looks at what it waits for


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

    def __init__(
        self,
        *args: Any,
        before_flush: Callable[[], None] | None = None,
        on_confirm: Callable[[pika.frame.Method], None] | None = None,
        **kwargs: Any,
    ) -> None:
        self._frames_out: list[bytes] = []
        self._before_flush = before_flush  # adds frames that are worth sending only along others
        self._on_confirm = on_confirm  # takes every Basic.Ack / Basic.Nack of an open channel
        super().__init__(*args, **kwargs)

    # Overrides pika's private Connection._process_frame (see the pika bound) for the frames
    # every task brings. pika looks each method frame up in its callback manager: about 5 µs
    # for a publisher confirm, 2 µs to find nothing for a delivery, per frame.
    def _process_frame(self, frame_value: Any) -> None:
        if type(frame_value) is pika.frame.Method:
            kind = type(frame_value.method)
            if kind is Deliver:  # no callback is ever registered for it: to its channel
                self.frames_received += 1
                self._deliver_frame_to_channel(frame_value)
                return
            if (kind is Ack or kind is Nack) and self._on_confirm is not None:
                channel = self._channels.get(frame_value.channel_number)
                if channel is not None and channel.is_open:  # else pika dropped its callbacks
                    self.frames_received += 1
                    self._on_confirm(frame_value)
                    return
        super()._process_frame(frame_value)

    # Overrides pika's private Connection._output_marshaled_frames, which writes each frame at
    # once (the same in pika 1.3.0 to 1.4.4): the reason for the pika bound in pyproject.toml.
    def _output_marshaled_frames(self, marshaled_frames: Sequence[bytes]) -> None:
        if not self._frames_out and threading.current_thread() is self.ioloop.runner:
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
        if self._before_flush is not None:
            self._before_flush()
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
    it lets go.

    A thread about to wait for something the loop will bring (a reply) can also borrow the
    loop (``run_borrowed``): the loop's own thread steps aside and the borrower runs the loop
    until what it waits for has come, so it is woken by the socket itself rather than by the
    loop's thread after it handled the frames. ``runner`` is the thread running the loop now.

    A borrower gives the loop back without waking the loop's thread (on a virtual machine a
    wake-up costs tens of microseconds, on the borrower's way to its result): that thread looks
    every ``HOME_CHECK`` seconds, then stays aside ``LINGER`` more in case the loop is borrowed
    again (the next call, the next task), and only then polls again itself. It is woken at once
    when another thread found the loop borrowed meanwhile (and so waits for the loop's thread
    to bring what it waits for), by ``call_home``, and by a borrower that held the loop longer
    than ``LONG_BORROW``: after that long it stops looking every ``HOME_CHECK``, so an idle
    worker or a caller waiting for a long task does not wake it 200 times a second. Linux only
    (epoll); elsewhere ``locking`` is False and the loop is pika's own.
    """

    locking = hasattr(select, "epoll")

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._turns = threading.Condition(lock)  # hands the loop between its thread and a borrower
        self.runner: threading.Thread | None = None  # set by the thread that starts the loop
        self._borrower: threading.Thread | None = None
        self._borrowed_at = 0.0  # time.monotonic() when the borrower took the loop
        self._borrow_wait = 0.0  # longest the borrower waits in one poll (seconds)
        self._stepped_aside = False  # the loop's own thread waits for the borrower to finish
        self._home_needed = False  # the loop's thread must come back (without lingering)
        super().__init__()

    def start(self) -> None:
        self.runner = threading.current_thread()
        super().start()

    def run_borrowed(
        self, done: Callable[[], bool], timeout: float | None, look_every: float = LOOK_EVERY
    ) -> bool:
        """Run the loop on this thread until ``done()`` or ``timeout`` seconds passed.

        ``done()`` is checked after each turn of the loop, and at least every ``look_every``
        seconds in case another thread made it true (which can also ``wake`` the loop).
        Returns False at once, without running it, when the loop cannot be lent: another
        thread borrows it already, the loop is not running, or this is the loop's thread.
        """
        me = threading.current_thread()
        if not self.locking or me is self.runner:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._turns:  # the loop's thread lets go within one turn
            home = self.runner
            if self._borrower is not None:
                self._home_needed = True
                return False
            if not self._is_running() or home is None:
                return False
            self._borrower = me
            self._borrowed_at = time.monotonic()
            try:
                if not self._stepped_aside:  # it waits in epoll: wake it
                    self._poller.wake_threadsafe()
                while not self._stepped_aside:  # it leaves epoll for us (two never poll at once)
                    if not self._is_running():
                        return False
                    self._turns.wait(0.1)
                self.runner = me
                self._run_until(done, deadline, look_every)
            finally:
                self.runner = home
                self._borrower = None
                # Others wait for the loop's thread (no lingering), or it looks rarely now.
                if self._home_needed or time.monotonic() - self._borrowed_at > LONG_BORROW:
                    self._turns.notify_all()
        return True

    def wake(self) -> None:
        """Make the thread waiting in ``epoll`` (the loop's own, or a borrower) look again now."""
        self._poller.wake_threadsafe()

    def call_home(self) -> None:
        """The last borrower will not borrow again soon (it has work queued): the loop's
        thread, if it stays aside, takes the loop back now rather than after ``HOME_CHECK``."""
        if not self._stepped_aside:
            return
        with self._turns:
            if self._stepped_aside:
                self._home_needed = True
                self._turns.notify_all()

    def _run_until(self, done: Callable[[], bool], deadline: float | None, look_every: float) -> None:
        while not done() and self._is_running():
            # Look at done() at least every look_every: another thread may settle what we wait for.
            wait = look_every if deadline is None else min(look_every, deadline - time.monotonic())
            if wait <= 0:
                return
            self._borrow_wait = wait
            try:
                self.poll()
                self.process_timeouts()  # every turn: timers and queued callbacks must not wait
            except Exception:  # as the loop's thread would, but the caller is not the place
                log.exception("taskell I/O loop: error while run by a waiting thread")
                return

    def _is_running(self) -> bool:
        poller = self._poller
        return bool(poller._running and not poller._stopping)

    def _get_poller(self, get_wait_seconds: Any, process_timeouts: Any) -> Any:
        if not self.locking:
            return IOLoop._get_poller(get_wait_seconds, process_timeouts)
        return _LockedEPollPoller(self, get_wait_seconds, process_timeouts)

    def _polled(self, timeout: float, epoll: Any) -> Any:
        """One ``epoll.poll`` without the lock: the borrower's waits are capped; the loop's
        thread, once a borrower asked for the loop, steps aside until it is given back."""
        me = threading.current_thread()
        if me is self._borrower:
            timeout = min(timeout, self._borrow_wait)
        self._lock.release()
        try:
            events = epoll.poll(timeout)
        finally:
            self._lock.acquire()
        if self._borrower is None or me is self._borrower:
            return events
        self._step_aside()
        return []  # the borrower handled them; what is still ready shows on the next poll

    def _step_aside(self) -> None:
        """On the loop's own thread, lock held: wait while borrowers run the loop."""
        self._stepped_aside = True
        self._turns.notify_all()
        while self._is_running():
            while self._borrower is not None and not self._home_needed:
                self._turns.wait(self._check_interval())
            if self._home_needed:
                break
            # Given back. The same thread often borrows again soon (its next call, its next
            # task): staying aside a moment spares this thread a full turn and the caller a
            # hand-off of the GIL. Meanwhile threads that publish take the lock themselves.
            if not self._turns.wait_for(lambda: self._borrower is not None or self._home_needed, LINGER):
                break
        while self._borrower is not None:  # a thread missed the loop: take it back after this turn
            self._turns.wait(self._check_interval())
        self._home_needed = False
        self._stepped_aside = False

    def _check_interval(self) -> float:
        """How long the loop's thread waits before it looks again whether the borrower is done.
        A borrower does not wake it, unless it held the loop long (an idle pool thread waiting
        for a task, a caller waiting for a long task) or others wait for the loop's thread."""
        held = time.monotonic() - self._borrowed_at
        return HOME_CHECK if held <= LONG_BORROW and not self._home_needed else SAFETY_CHECK


class _LockedEPollPoller(EPollPoller):  # type: ignore[misc]
    def __init__(self, loop: LockedIOLoop, get_wait_seconds: Any, process_timeouts: Any) -> None:
        self._loop = loop
        super().__init__(get_wait_seconds, process_timeouts)

    def _create_poller(self) -> Any:
        return _UnlockedWhileWaiting(select.epoll(), self._loop)


class _UnlockedWhileWaiting:
    """An ``epoll`` object whose ``poll`` lets go of the loop's lock while it waits."""

    def __init__(self, epoll: Any, loop: LockedIOLoop) -> None:
        self._epoll = epoll
        self._loop = loop

    def poll(self, timeout: float) -> Any:
        return self._loop._polled(timeout, self._epoll)

    def __getattr__(self, name: str) -> Any:  # register, modify, unregister, close
        return getattr(self._epoll, name)
