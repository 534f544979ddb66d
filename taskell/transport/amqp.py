"""``Transport`` over RabbitMQ with pika's ``SelectConnection``, run on one I/O thread.

pika connections are not thread-safe. The I/O thread holds ``_loop_lock`` except while it
waits for the socket (``LockedIOLoop``). An operation from another thread is queued into
``_outbox``; if that thread gets the lock at once, it runs the queue itself and writes the
frames (a caller publishes its own task, a pool thread its own reply: no wake-up and no thread
switch on the way to the socket). Otherwise the I/O thread is woken once per batch
(``add_callback_threadsafe``): many publishes from many threads go out in one loop turn, and
confirms come back with ``multiple``.

When the connection is lost, the transport reconnects by itself (capped, jittered backoff,
trying each configured broker in turn), replays what it declared, bound and consumed, and
republishes every message the broker had not confirmed (at-least-once). Deliveries carry the
connection's generation in their tag, so an ack meant for a dead channel is dropped instead of
acknowledging a different message on the new one (the broker requeued the old ones anyway).

What stands on its own lives beside this module: ``topology`` (what is replayed), ``acks``
(which ack frames to send), ``confirms`` (which publish a confirm settles), ``pika_connection``
(connection parameters, frame coalescing). The rest stays here, over 400 lines, because it is
one state machine: connecting, reconnecting and giving up set the channel, generation and
readiness that every operation reads on the I/O thread.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import pika.frame  # type: ignore[import-untyped]
import pika.spec  # type: ignore[import-untyped]
from pika.channel import Channel  # type: ignore[import-untyped]

from ..errors import BrokerUnavailable
from . import delays
from ._future import LightFuture
from .acks import AckBatcher
from .base import Delivery, Message, OnMessage, Transport
from .confirms import Confirms, Publish
from .pika_connection import LOOK_EVERY, CoalescingConnection, LockedIOLoop
from .topology import (
    Binding,
    Consumer,
    Declaration,
    Exchange,
    ExchangeBinding,
    Prefetch,
    Queue,
    Topology,
    declare,
)

__all__ = ["AmqpTransport"]

log = logging.getLogger("taskell.amqp")

_PERSISTENT = pika.DeliveryMode.Persistent.value
_BACKOFF_FIRST, _BACKOFF_CAP = 0.1, 10.0  # seconds
_STABLE_AFTER = 5.0  # seconds a connection must stay up before backoff starts over


class AmqpTransport(Transport):
    """One pika ``SelectConnection`` with one confirm-mode channel, driven by its own thread.

    Args:
        params: brokers to try in turn (the first that answers is used).
        name: prefix of the I/O thread's name.
        timeout: seconds to wait for the first connection.
        reconnect: reconnect when the connection is lost (else fail everything pending).
    """

    def __init__(
        self,
        params: Sequence[pika.ConnectionParameters],
        *,
        name: str = "taskell",
        timeout: float = 10.0,
        reconnect: bool = True,
    ) -> None:
        self._params = list(params)
        self._reconnect = reconnect
        self._outbox: collections.deque[Callable[[], None]] = collections.deque()
        self._wakeup_pending = False
        self._confirms = Confirms()
        # Acknowledgements: requested from any thread into _acks, sent once per loop turn in
        # the frames the channel's _batcher makes of them.
        self._acks: collections.deque[int] = collections.deque()
        self._acks_scheduled = False
        self._batcher = AckBatcher(0)
        self._rpcs: set[Future[Any]] = set()
        self._generation = 0
        self._attempt = 0  # failed connection attempts in a row
        self._host_index = 0
        self._ready = False  # the channel is open and in confirm mode
        self._ever_opened = False
        self._topology = Topology()  # replayed after a reconnect
        # Delayed delivery: the ladder of delay levels and each destination queue's binding,
        # declared on first use (then replayed like the rest of the topology).
        self._delay_lock = threading.Lock()
        self._delay_levels: Future[None] | None = None
        self._delay_routes: dict[str, Future[None]] = {}
        self._consumer_numbers = itertools.count(1)
        self._on_lost: list[Callable[[BaseException], None]] = []
        self._on_reconnect: list[Callable[[], None]] = []
        self._lost: BaseException | None = None
        self._closing = False
        self._conn: CoalescingConnection | None = None
        self._channel: Channel | None = None
        # Held by the I/O thread except while it waits for the socket; other threads only try it.
        self._loop_lock = threading.Lock()
        self._ioloop = LockedIOLoop(self._loop_lock)
        self._opened: Future[None] = LightFuture()
        self._thread = threading.Thread(target=self._run, name=f"{name}-io", daemon=True)
        self._thread.start()
        try:
            self._opened.result(timeout)
        except TimeoutError:
            self.close()
            raise BrokerUnavailable(f"no answer from {self._describe()} within {timeout} s") from None
        except BrokerUnavailable:
            self._thread.join(timeout)
            raise

    def _describe(self) -> str:
        return ", ".join(f"{p.host}:{p.port}" for p in self._params)

    # I/O thread: connecting, reconnecting

    def _run(self) -> None:
        with self._loop_lock:  # let go only while the loop waits (LockedIOLoop)
            self._connect()
            try:
                self._ioloop.start()
            except Exception as exc:  # pragma: no cover - only if pika itself breaks
                log.exception("taskell I/O thread crashed")
                self._give_up(BrokerUnavailable(f"I/O thread crashed: {exc}"))
            finally:
                self._ioloop.close()

    def _connect(self) -> None:
        if self._closing:
            self._give_up(BrokerUnavailable("connection closed"))
            return
        params = self._params[self._host_index % len(self._params)]
        self._conn = CoalescingConnection(
            params,
            on_open_callback=self._on_connection_open,
            on_open_error_callback=self._on_open_error,
            on_close_callback=self._on_connection_closed,
            custom_ioloop=self._ioloop,
            before_flush=self._acks_along,
            on_confirm=self._on_confirm,
        )

    def _on_connection_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, conn: Any, error: BaseException) -> None:
        params = self._params[self._host_index % len(self._params)]
        reason = f"cannot connect to {params.host}:{params.port}: {str(error) or repr(error)}"
        self._host_index += 1
        if not self._ever_opened:
            if self._host_index < len(self._params):
                self._connect()  # the next configured broker
            else:
                self._give_up(BrokerUnavailable(reason))
            return
        log.warning("%s; retrying", reason)
        self._retry_later()

    def _on_channel_open(self, channel: Channel) -> None:
        self._channel = channel
        self._batcher = AckBatcher(self._generation)  # the old channel's deliveries were requeued
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.add_on_cancel_callback(self._on_broker_cancel)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._on_ready())

    def _on_ready(self) -> None:
        # Back off from scratch only once the connection has stayed up a while: a replay that
        # fails at once (say, a queue whose node is down) must not reconnect in a hot loop.
        generation = self._generation
        self._ioloop.call_later(_STABLE_AFTER, lambda: self._reset_backoff(generation))
        if not self._ever_opened:
            self._ever_opened = True
            self._ready = True
            self._opened.set_result(None)
        else:
            log.warning("reconnected to the broker (generation %d)", self._generation)
            for callback in self._on_reconnect:
                _call_safely(callback)
            self._replay()
            self._ready = True
        self._drain()

    def _reset_backoff(self, generation: int) -> None:
        if generation == self._generation and self._ready:
            self._attempt = 0

    def _replay(self) -> None:
        channel = self._channel
        assert channel is not None
        self._topology.replay(_OnChannel(self, channel))
        for publish in self._confirms.restart():  # the broker may or may not have them
            if publish.replay:
                self._basic_publish(channel, publish)
            elif not publish.future.done():
                publish.future.set_exception(
                    BrokerUnavailable("the connection was lost before it was confirmed")
                )

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        self._channel = None
        self._ready = False
        if not self._closing:
            # The broker closes the channel on an error (e.g. a queue re-declared with other
            # arguments); start over on a fresh connection.
            log.warning("channel closed by the broker: %s", reason)
            self._fail_rpcs(BrokerUnavailable(f"channel closed by the broker: {reason}"))
        if self._conn is not None and self._conn.is_open:
            self._conn.close()

    def _on_connection_closed(self, conn: Any, reason: BaseException) -> None:
        self._channel = None
        self._ready = False
        if self._closing:
            self._give_up(BrokerUnavailable("connection closed"))
            return
        self._generation += 1
        error = BrokerUnavailable(f"connection lost: {reason}")
        if not self._reconnect:
            self._give_up(error)
            return
        log.warning("%s; reconnecting", error)
        self._fail_rpcs(error)
        self._retry_later()

    def _retry_later(self) -> None:
        delay = min(_BACKOFF_CAP, _BACKOFF_FIRST * 2**self._attempt) * random.uniform(0.5, 1.0)
        self._attempt += 1
        self.call_later(delay, self._connect)

    def _fail_rpcs(self, error: BrokerUnavailable) -> None:
        rpcs, self._rpcs = list(self._rpcs), set()
        for future in rpcs:
            if not future.done():
                future.set_exception(error)

    def _give_up(self, error: BrokerUnavailable) -> None:
        first = self._lost is None
        if first:
            self._lost = error
        if not self._opened.done():
            self._opened.set_exception(error)
        self._fail_rpcs(error)
        self._confirms.fail(error)
        self._ioloop.stop()
        if first and not self._closing:
            for callback in self._on_lost:
                _call_safely(functools.partial(callback, error))

    # I/O thread: traffic

    def _drain(self) -> None:
        """Run the queued operations (on the I/O thread, or another holding ``_loop_lock``)."""
        self._wakeup_pending = False
        outbox = self._outbox
        try:
            while outbox and (self._ready or self._lost is not None):
                try:
                    outbox.popleft()()
                except pika.exceptions.AMQPError as exc:
                    # The channel or connection is closing: its close callback takes over.
                    log.debug("dropped an operation on a closing connection: %r", exc)
        finally:
            if self._ready and self._conn is not None:
                # Write this batch now: on the I/O thread the flush timer would run only after
                # one more poll of the loop; another thread must write what it made anyway.
                self._conn.flush_frames()

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        self._confirms.confirmed(method.delivery_tag, multiple=method.multiple, ok=ok)

    def _on_broker_cancel(self, frame: pika.frame.Method) -> None:
        # The broker cancels a consumer when its queue is deleted; consuming silently nothing
        # would be worse than reporting it.
        tag = frame.method.consumer_tag
        self._topology.cancel(tag)
        error = BrokerUnavailable(f"the broker cancelled consumer {tag} (queue deleted?)")
        for callback in self._on_lost:
            _call_safely(functools.partial(callback, error))

    def _on_return(self, channel: Channel, method: Any, properties: Any, body: bytes) -> None:
        self._confirms.returned(properties.message_id)

    def _basic_publish(self, channel: Channel, publish: Publish) -> None:
        channel.basic_publish(
            publish.exchange, publish.routing_key, publish.body, publish.properties, publish.mandatory
        )
        self._confirms.sent(publish)

    def _start_consumer(
        self, channel: Channel, consumer: Consumer, future: Future[Any] | None = None
    ) -> None:
        batcher = self._batcher

        def deliver(channel: Channel, method: Any, props: Any, body: bytes) -> None:
            tag = batcher.delivered(method.delivery_tag, auto_ack=consumer.auto_ack)
            message = Message(
                body=body,
                type=props.type,
                message_id=props.message_id,
                correlation_id=props.correlation_id,
                reply_to=props.reply_to,
                content_type=props.content_type,
                persistent=props.delivery_mode == _PERSISTENT,
                headers=props.headers or {},
                priority=props.priority,
            )
            try:
                consumer.on_message(Delivery(message, tag, method.redelivered, consumer.queue))
            except Exception:  # a bug in a handler of deliveries must not tear the connection down
                log.exception("delivery %s on %s not handled", props.message_id, consumer.queue)

        callback = None if future is None else (lambda _f: future.set_result(consumer.tag))
        channel.basic_consume(
            consumer.queue,
            deliver,
            auto_ack=consumer.auto_ack,
            consumer_tag=consumer.tag,
            arguments=consumer.arguments,
            callback=callback,
        )

    # Any thread

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        if self._on_loop():
            self._ioloop.call_later(delay, fn)
            return
        # pika's timers are not thread-safe: set this one from the I/O thread.
        with contextlib.suppress(Exception):  # the loop is closed: the transport is closed
            self._ioloop.add_callback_threadsafe(lambda: self._ioloop.call_later(delay, fn))

    def call_soon(self, fn: Callable[[], None]) -> None:
        if self._on_loop():
            if self._ready and not self._outbox:
                fn()  # nothing queued before it: no wake-up needed
                return
            self._outbox.append(fn)
        else:
            self._outbox.append(fn)
            # The I/O thread is waiting for the socket: run the queue (fn last) here, now.
            if self._ioloop.locking and self._loop_lock.acquire(blocking=False):
                try:
                    self._drain()
                finally:
                    self._loop_lock.release()
                return  # anything left waits for the channel: _on_ready drains it
        if not self._wakeup_pending:
            self._wakeup_pending = True
            with contextlib.suppress(Exception):  # the loop is closed: the transport is closed
                self._ioloop.add_callback_threadsafe(self._drain)

    def _on_loop(self) -> bool:
        """Whether this thread runs the loop now (the I/O thread, or one that borrowed it)."""
        return threading.current_thread() is self._ioloop.runner

    def run_loop_until(
        self, done: Callable[[], bool], timeout: float | None, *, look_every: float = LOOK_EVERY
    ) -> bool:
        return bool(self._ioloop.run_borrowed(done, timeout, look_every))

    def wake(self) -> None:
        with contextlib.suppress(Exception):  # the loop is closed: nobody waits in it
            self._ioloop.wake()

    def resume_io(self) -> None:
        self._ioloop.call_home()

    def _rpc(self, start: Callable[[Channel, Future[Any]], None]) -> Future[Any]:
        future: Future[Any] = LightFuture()
        if self._lost is not None:
            future.set_exception(self._lost)
            return future

        def run() -> None:
            if self._channel is None:
                future.set_exception(self._lost or BrokerUnavailable("channel is closed"))
                return
            self._rpcs.add(future)
            future.add_done_callback(self._rpcs.discard)
            start(self._channel, future)

        self.call_soon(run)
        return future

    def _declare(self, declaration: Declaration, *, replayed: bool = True) -> Future[Any]:
        """Send ``declaration``; once the broker accepted it, record it for replay (unless not
        ``replayed``) and resolve the future (to the queue's name, for a queue)."""

        def start(channel: Channel, future: Future[Any]) -> None:
            def done(frame: Any) -> None:
                if replayed:
                    self._topology.add(declaration)
                future.set_result(getattr(frame.method, "queue", None))

            declare(_OnChannel(self, channel, done), declaration)

        return self._rpc(start)

    def publish(
        self, exchange: str, routing_key: str, message: Message, *, mandatory: bool, replay: bool = True
    ) -> Future[None]:
        future: Future[None] = LightFuture()
        if self._lost is not None:
            future.set_exception(self._lost)
            return future
        properties = pika.BasicProperties(
            content_type=message.content_type,
            delivery_mode=_PERSISTENT if message.persistent else None,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            type=message.type,
            headers=message.headers or None,
            priority=message.priority,
        )
        publish = Publish(future, exchange, routing_key, message.body, properties, mandatory, replay)
        generation = self._generation if self._ready else -1  # the connection it may go out on

        def run() -> None:
            if self._channel is None:  # lost meanwhile: the outbox is drained once reconnected
                future.set_exception(self._lost or BrokerUnavailable("channel is closed"))
                return
            if not replay and generation != self._generation:
                future.set_exception(BrokerUnavailable("the connection was lost before it was sent"))
                return
            try:
                self._basic_publish(self._channel, publish)
            except pika.exceptions.UnsupportedAMQPFieldException as exc:  # nothing was sent
                future.set_exception(ValueError(f"message {message.message_id} cannot be encoded: {exc!r}"))

        self.call_soon(run)
        return future

    def publish_delayed(self, queue: str, message: Message, delay: float) -> Future[None]:
        if delay <= 0:
            return self.publish("", queue, message, mandatory=True)
        ms = delays.delay_ms(delay)
        key = delays.routing_key(ms, queue)
        future: Future[None] = LightFuture()
        # When it is due, so that a worker can hold it again should the broker hand it over
        # early (seen after a node restart: a level's TTL was not applied).
        due = {delays.DUE_HEADER: int(time.time() * 1000) + ms}
        message = dataclasses.replace(message, headers={**delays.without_deaths(message.headers), **due})

        def send(ready: Future[None]) -> None:
            error = ready.exception()
            if error is not None:
                future.set_exception(error)
                return
            # mandatory: the entry level routes the message into its queue, so a return means
            # the ladder is missing, never a silent loss.
            _chain(self.publish(delays.entry(ms), key, message, mandatory=True), future)

        self._delay_route(queue).add_done_callback(send)
        return future

    def _delay_route(self, queue: str) -> Future[None]:
        """Resolves once the delay levels and ``queue``'s binding to their end are declared
        (on this transport's first delayed message, and its first to ``queue``)."""
        with self._delay_lock:
            levels = self._delay_levels
            if levels is None or (levels.done() and levels.exception() is not None):
                levels = self._delay_levels = _all([self._declare(d) for d in delays.declarations()])
            route = self._delay_routes.get(queue)
            if route is None or (route.done() and route.exception() is not None):
                # Sent after the levels: pika sends a channel's declarations one at a time, in order.
                route = _all([levels, self._declare(delays.destination_binding(queue))])
                self._delay_routes[queue] = route
            return route

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        # Server-named queues cannot be declared again after a reconnect, so are not replayed.
        return self._declare(Queue(name, durable, exclusive, auto_delete, arguments), replayed=bool(name))

    def declare_exchange(
        self, name: str, kind: str, *, arguments: Mapping[str, Any] | None = None
    ) -> Future[None]:
        return self._declare(Exchange(name, kind, arguments))

    def bind(self, queue: str, exchange: str, routing_key: str = "") -> Future[None]:
        return self._declare(Binding(queue, exchange, routing_key))

    def bind_exchange(self, destination: str, source: str, routing_key: str = "") -> Future[None]:
        return self._declare(ExchangeBinding(destination, source, routing_key))

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        def start(channel: Channel, future: Future[Any]) -> None:
            self._topology.unbind(Binding(queue, exchange, routing_key))
            channel.queue_unbind(queue, exchange, routing_key, callback=lambda _f: future.set_result(None))

        self._rpc(start)

    @property
    def supports_leases(self) -> bool:
        return True

    def purge(self, queue: str) -> None:
        def start(channel: Channel, future: Future[Any]) -> None:
            channel.queue_purge(queue, callback=lambda _f: future.set_result(None))

        self._rpc(start)

    def delete_queue(self, queue: str) -> None:
        def start(channel: Channel, future: Future[Any]) -> None:
            self._topology.delete_queue(queue)
            channel.queue_delete(queue, callback=lambda _f: future.set_result(None))

        self._rpc(start)

    def set_prefetch(self, count: int, *, per_consumer: bool = False) -> Future[None]:
        return self._declare(Prefetch(count, channel_wide=not per_consumer))

    def consume(
        self,
        queue: str,
        on_message: OnMessage,
        *,
        auto_ack: bool = False,
        arguments: Mapping[str, Any] | None = None,
    ) -> Future[str]:
        def start(channel: Channel, future: Future[Any]) -> None:
            consumer = Consumer(
                f"taskell-{next(self._consumer_numbers)}", queue, on_message, auto_ack, arguments
            )
            self._topology.add_consumer(consumer)
            self._start_consumer(channel, consumer, future)

        return self._rpc(start)

    def cancel(self, consumer_tag: str) -> None:
        def run() -> None:
            self._topology.cancel(consumer_tag)
            if self._channel is not None and self._channel.is_open:
                self._channel.basic_cancel(consumer_tag)

        self.call_soon(run)

    def ack(self, tag: int) -> None:
        self._acks.append(tag)
        if not self._acks_scheduled:
            self._acks_scheduled = True
            self.call_soon(self._flush_acks_soon)

    def _acks_along(self) -> None:
        """Acks not written yet go with the frames being written: one ``send`` for both (a
        task's outcome event and its ack, say), and one wake-up of the broker."""
        if self._acks and self._ready:
            self._flush_acks()

    def _flush_acks_soon(self) -> None:
        if self._on_loop():
            # After this turn's other work, so the acks of one turn go out as one frame.
            self._ioloop.call_later(0, self._flush_acks)
        else:  # no pika timers off the I/O thread (see LockedIOLoop)
            self._flush_acks()

    def _flush_acks(self) -> None:
        self._acks_scheduled = False  # before draining: an ack added meanwhile schedules anew
        acks = self._acks
        tags = []
        while acks:
            tags.append(acks.popleft())
        channel = self._channel
        if not tags or channel is None or not channel.is_open:
            return
        for frame in self._batcher.ack(tags):
            channel.basic_ack(frame.tag, multiple=frame.multiple)

    def reject(self, tag: int, *, requeue: bool) -> None:
        def run() -> None:
            channel = self._channel
            if channel is not None and channel.is_open:
                frame = self._batcher.reject(tag, requeue=requeue)
                if frame is not None:  # else a delivery of an earlier channel: requeued already
                    channel.basic_reject(frame.tag, requeue=frame.requeue)

        self.call_soon(run)

    def add_on_lost(self, callback: Callable[[BaseException], None]) -> None:
        self._on_lost.append(callback)

    def add_on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the I/O thread after a reconnect, before anything is replayed
        (deliveries of the old connection are void by then: the broker requeued them)."""
        self._on_reconnect.append(callback)

    @property
    def is_open(self) -> bool:
        return self._lost is None and not self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._on_loop():
            raise RuntimeError("close() called from the transport's own thread")

        def shut() -> None:
            self._flush_acks()  # acks requested before close() still go out
            # Reverse order of opening: the channel first, then the connection.
            if self._channel is not None and self._channel.is_open:
                self._channel.close()
            elif self._conn is not None and self._conn.is_open:
                self._conn.close()
            else:
                self._give_up(BrokerUnavailable("connection closed"))

        if self._lost is None:
            self._ready = True  # let queued work fail and the shutdown run, even while reconnecting
            self._wakeup_pending = False
            self.call_soon(shut)
        self._thread.join(10)


class _OnChannel:
    """A ``Topology`` target sending on a pika channel: declarations replayed after a reconnect,
    or a first one, whose caller waits for pika's completion callback ``done``."""

    def __init__(self, transport: AmqpTransport, channel: Channel, done: Callable[[Any], None] | None = None):
        self._transport = transport
        self._channel = channel
        self._done = done

    def declare_queue(self, queue: Queue) -> None:
        self._channel.queue_declare(
            queue.name,
            durable=queue.durable,
            exclusive=queue.exclusive,
            auto_delete=queue.auto_delete,
            arguments=queue.arguments,
            callback=self._done,
        )

    def declare_exchange(self, exchange: Exchange) -> None:
        self._channel.exchange_declare(
            exchange.name, exchange.kind, durable=True, arguments=exchange.arguments, callback=self._done
        )

    def bind(self, binding: Binding) -> None:
        self._channel.queue_bind(
            binding.queue, binding.exchange, binding.routing_key or None, callback=self._done
        )

    def bind_exchange(self, binding: ExchangeBinding) -> None:
        self._channel.exchange_bind(
            binding.destination, binding.source, binding.routing_key, callback=self._done
        )

    def set_prefetch(self, prefetch: Prefetch) -> None:
        self._channel.basic_qos(
            prefetch_count=prefetch.count, global_qos=prefetch.channel_wide, callback=self._done
        )

    def start_consumer(self, consumer: Consumer) -> None:
        self._transport._start_consumer(self._channel, consumer)


def _all(futures: Sequence[Future[Any]]) -> Future[None]:
    """Resolves when every one of ``futures`` has; fails with the first failure."""
    combined: Future[None] = LightFuture()
    remaining = [len(futures)]
    lock = threading.Lock()

    def one_done(future: Future[Any]) -> None:
        error = future.exception()
        with lock:
            if combined.done():
                return
            remaining[0] -= 1
            if error is not None:
                combined.set_exception(error)
            elif remaining[0] == 0:
                combined.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
    if not futures:
        combined.set_result(None)
    return combined


def _chain(source: Future[None], target: Future[None]) -> None:
    """Settle ``target`` as ``source`` settles."""

    def copy(done: Future[None]) -> None:
        error = done.exception()
        if error is not None:
            target.set_exception(error)
        else:
            target.set_result(None)

    source.add_done_callback(copy)


def _call_safely(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        log.exception("transport callback failed")
