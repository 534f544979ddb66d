"""``Transport`` over RabbitMQ with pika's ``SelectConnection``, run on one I/O thread.

pika connections are not thread-safe, so every operation from another thread is queued into
``_outbox`` and the I/O loop is woken once per batch (``add_callback_threadsafe``): many
publishes from many threads go out in one loop turn, and confirms come back with ``multiple``.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import pika
import pika.exceptions
import pika.frame
import pika.spec
from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel

from ._transport import Delivery, Message, OnMessage, Transport
from .errors import BrokerUnavailable

__all__ = ["AmqpTransport"]

log = logging.getLogger("taskell.amqp")

# pika logs every connection failure at ERROR with a traceback; taskell raises instead.
for _name in (
    "pika.adapters.base_connection",
    "pika.adapters.utils.connection_workflow",
    "pika.adapters.utils.io_services_utils",
):
    logging.getLogger(_name).setLevel(logging.CRITICAL)

_PERSISTENT = pika.DeliveryMode.Persistent.value


class AmqpTransport(Transport):
    """One pika ``SelectConnection`` with one confirm-mode channel, driven by its own thread."""

    def __init__(
        self, params: pika.ConnectionParameters, *, name: str = "taskell", timeout: float = 10.0
    ) -> None:
        self._params = params
        self._outbox: collections.deque[Callable[[], None]] = collections.deque()
        self._wakeup_pending = False
        self._unconfirmed: dict[int, tuple[Future[None], str | None]] = {}
        self._returned: set[str] = set()
        self._rpcs: set[Future[Any]] = set()
        self._next_tag = 1
        self._consumer_numbers = itertools.count(1)
        self._on_lost: list[Callable[[BaseException], None]] = []
        self._lost: BaseException | None = None
        self._closing = False
        self._conn: SelectConnection | None = None
        self._channel: Channel | None = None
        self._opened: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, name=f"{name}-io", daemon=True)
        self._thread.start()
        try:
            self._opened.result(timeout)
        except TimeoutError:
            self.close()
            raise BrokerUnavailable(
                f"no answer from {params.host}:{params.port} within {timeout} s"
            ) from None
        except BrokerUnavailable:
            self._thread.join(timeout)
            raise

    # I/O thread

    def _run(self) -> None:
        try:
            self._conn = SelectConnection(
                self._params,
                on_open_callback=self._on_connection_open,
                on_open_error_callback=self._on_open_error,
                on_close_callback=self._on_connection_closed,
            )
            self._conn.ioloop.start()
        except Exception as exc:  # pragma: no cover - only if pika itself breaks
            log.exception("taskell I/O thread crashed")
            self._fail_all(BrokerUnavailable(f"I/O thread crashed: {exc}"))

    def _on_connection_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, conn: Any, error: BaseException) -> None:
        target = f"{self._params.host}:{self._params.port}"
        self._fail_all(BrokerUnavailable(f"cannot connect to {target}: {str(error) or repr(error)}"))
        assert self._conn is not None
        self._conn.ioloop.stop()

    def _on_channel_open(self, channel: Channel) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.add_on_cancel_callback(self._on_broker_cancel)
        channel.confirm_delivery(self._on_confirm, callback=lambda _frame: self._opened.set_result(None))

    def _on_channel_closed(self, channel: Channel, reason: BaseException) -> None:
        self._channel = None
        if self._closing:
            assert self._conn is not None
            if self._conn.is_open:
                self._conn.close()
            return
        # The broker closes the channel on an error (e.g. a queue re-declared with other
        # arguments); taskell treats that as the connection being lost, with the reason.
        self._fail_all(BrokerUnavailable(f"channel closed by the broker: {reason}"))
        assert self._conn is not None
        if self._conn.is_open:
            self._conn.close()

    def _on_connection_closed(self, conn: Any, reason: BaseException) -> None:
        if not self._closing:
            self._fail_all(BrokerUnavailable(f"connection lost: {reason}"))
        else:
            self._fail_all(BrokerUnavailable("connection closed"))
        conn.ioloop.stop()

    def _fail_all(self, error: BrokerUnavailable) -> None:
        first = self._lost is None
        if first:
            self._lost = error
        if not self._opened.done():
            self._opened.set_exception(error)
        pending = [f for f, _ in self._unconfirmed.values()] + list(self._rpcs)
        self._unconfirmed.clear()
        self._rpcs.clear()
        for future in pending:
            if not future.done():
                future.set_exception(error)
        if first and not self._closing:
            for callback in self._on_lost:
                try:
                    callback(error)
                except Exception:
                    log.exception("on_lost callback failed")

    def _drain(self) -> None:
        self._wakeup_pending = False
        outbox = self._outbox
        while outbox:
            try:
                outbox.popleft()()
            except pika.exceptions.AMQPError as exc:
                # The channel or connection is closing: the close callbacks fail what is pending.
                log.debug("dropped an operation on a closing connection: %r", exc)

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        ok = isinstance(method, pika.spec.Basic.Ack)
        tag: int = method.delivery_tag
        if method.multiple:
            tags = [t for t in self._unconfirmed if t <= tag]
        else:
            tags = [tag]
        for t in tags:
            entry = self._unconfirmed.pop(t, None)
            if entry is None:
                continue
            future, message_id = entry
            if message_id is not None and message_id in self._returned:
                self._returned.discard(message_id)
                future.set_exception(BrokerUnavailable(f"message {message_id} is unroutable (no such queue)"))
            elif ok:
                future.set_result(None)
            else:
                future.set_exception(BrokerUnavailable(f"the broker refused message {message_id}"))

    def _on_broker_cancel(self, frame: pika.frame.Method) -> None:
        # The broker cancels a consumer when its queue is deleted (or a quorum queue's leader
        # moves away); consuming silently nothing would be worse than reporting a lost link.
        error = BrokerUnavailable(
            f"the broker cancelled consumer {frame.method.consumer_tag} (queue deleted?)"
        )
        for callback in self._on_lost:
            callback(error)

    def _on_return(self, channel: Channel, method: Any, properties: Any, body: bytes) -> None:
        if properties.message_id is not None:
            self._returned.add(properties.message_id)

    # Any thread

    def call_soon(self, fn: Callable[[], None]) -> None:
        self._outbox.append(fn)
        if not self._wakeup_pending:
            self._wakeup_pending = True
            conn = self._conn
            if conn is None or self._lost is not None:
                return
            try:
                conn.ioloop.add_callback_threadsafe(self._drain)
            except Exception:  # the loop is gone: the connection was lost or closed
                pass

    def _rpc(self, start: Callable[[Channel, Future[Any]], None]) -> Future[Any]:
        future: Future[Any] = Future()
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

    def publish(self, exchange: str, routing_key: str, message: Message, *, mandatory: bool) -> Future[None]:
        future: Future[None] = Future()
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
        )
        message_id = message.message_id if mandatory else None

        def run() -> None:
            channel = self._channel
            if channel is None:
                future.set_exception(self._lost or BrokerUnavailable("channel is closed"))
                return
            channel.basic_publish(exchange, routing_key, message.body, properties, mandatory)
            self._unconfirmed[self._next_tag] = (future, message_id)
            self._next_tag += 1

        self.call_soon(run)
        return future

    def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
    ) -> Future[str]:
        def start(channel: Channel, future: Future[Any]) -> None:
            channel.queue_declare(
                name,
                durable=durable,
                exclusive=exclusive,
                auto_delete=auto_delete,
                arguments=arguments,
                callback=lambda frame: future.set_result(frame.method.queue),
            )

        return self._rpc(start)

    def declare_exchange(self, name: str, kind: str) -> Future[None]:
        def start(channel: Channel, future: Future[Any]) -> None:
            channel.exchange_declare(name, kind, durable=True, callback=lambda _f: future.set_result(None))

        return self._rpc(start)

    def bind(self, queue: str, exchange: str, routing_key: str = "") -> Future[None]:
        def start(channel: Channel, future: Future[Any]) -> None:
            channel.queue_bind(
                queue, exchange, routing_key or None, callback=lambda _f: future.set_result(None)
            )

        return self._rpc(start)

    def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        def start(channel: Channel, future: Future[Any]) -> None:
            channel.queue_unbind(queue, exchange, routing_key, callback=lambda _f: future.set_result(None))

        self._rpc(start)

    def set_prefetch(self, count: int) -> Future[None]:
        def start(channel: Channel, future: Future[Any]) -> None:
            # global: one limit for all the channel's consumers, not one per queue consumed.
            channel.basic_qos(
                prefetch_count=count, global_qos=True, callback=lambda _f: future.set_result(None)
            )

        return self._rpc(start)

    def consume(self, queue: str, on_message: OnMessage, *, auto_ack: bool = False) -> Future[str]:
        def deliver(channel: Channel, method: Any, props: Any, body: bytes) -> None:
            message = Message(
                body=body,
                type=props.type,
                message_id=props.message_id,
                correlation_id=props.correlation_id,
                reply_to=props.reply_to,
                content_type=props.content_type,
                persistent=props.delivery_mode == _PERSISTENT,
                headers=props.headers or {},
            )
            on_message(Delivery(message, method.delivery_tag, method.redelivered, queue))

        def start(channel: Channel, future: Future[Any]) -> None:
            tag = f"taskell-{next(self._consumer_numbers)}"
            channel.basic_consume(
                queue,
                deliver,
                auto_ack=auto_ack,
                consumer_tag=tag,
                callback=lambda _f: future.set_result(tag),
            )

        return self._rpc(start)

    def cancel(self, consumer_tag: str) -> None:
        self.call_soon(
            lambda: (
                self._channel.basic_cancel(consumer_tag) if self._channel and self._channel.is_open else None
            )
        )

    def ack(self, tag: int) -> None:
        self.call_soon(
            lambda: self._channel.basic_ack(tag) if self._channel and self._channel.is_open else None
        )

    def reject(self, tag: int, *, requeue: bool) -> None:
        self.call_soon(
            lambda: (
                self._channel.basic_reject(tag, requeue=requeue)
                if self._channel and self._channel.is_open
                else None
            )
        )

    def add_on_lost(self, callback: Callable[[BaseException], None]) -> None:
        self._on_lost.append(callback)

    @property
    def is_open(self) -> bool:
        return self._lost is None and not self._closing

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if threading.current_thread() is self._thread:
            raise RuntimeError("close() called from the transport's own thread")

        def shut() -> None:
            # Reverse order of opening: the channel first, then the connection.
            if self._channel is not None and self._channel.is_open:
                self._channel.close()
            elif self._conn is not None and self._conn.is_open:
                self._conn.close()
            elif self._conn is not None:
                self._conn.ioloop.stop()

        if self._lost is None and self._conn is not None:
            self._wakeup_pending = False  # force a fresh wakeup for the shutdown
            self.call_soon(shut)
        self._thread.join(10)
