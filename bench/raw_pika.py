"""The pika baselines of the benchmarks: hand-written RPC over pika, no taskell, in two kinds.

**naive pika** (``serve``, ``RawClient``): what a user writes by hand. The server consumes a
durable queue with a prefetch, decodes the JSON args (``{"x": n}`` -> ``n * n``,
``{"parts": [...]}`` -> ``sum(parts)``), publishes the JSON result to ``reply_to`` (when the
message has one) with the request's ``correlation_id``, then acks: one ack and one write per
message, one thread, one ``BlockingConnection``, no publisher confirms, transient replies. The
client publishes persistent messages without confirms and collects the replies from an
exclusive, auto-delete reply queue consumed with auto-ack.

**pika, same guarantees** (``serve --confirmed``, ``ConfirmedClient``): the same RPC with
taskell's guarantees (docs/wire.md), written to be fast. Submissions are persistent,
``mandatory`` and confirmed (a nack or a return is an error); the reply queue is durable, named,
``x-expires`` 10 minutes and consumed with manual acks; replies are persistent and confirmed, and
the server acknowledges a task only once its reply is confirmed (a task without ``reply_to`` at
once, in delivery order). Both sides run one ``SelectConnection`` I/O loop on one thread (the
client drives it in the calling thread while it waits, so there is no hand-off), write all the
frames of one loop turn with one ``send``, and acknowledge with ``multiple`` once per loop turn.
What taskell does beyond this (validation, task ids, fingerprints, outcome events for
dependents, abort checks, reconnects) is left out: this is the floor for these guarantees.

Servers (run as subprocesses by the benchmarks)::

    python -m bench.raw_pika serve --url URL --queue bench.raw --prefetch 4 [--confirmed]

print ``ready`` once consuming and stop on SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.spec  # type: ignore[import-untyped]
from pika.adapters.blocking_connection import BlockingChannel  # type: ignore[import-untyped]
from pika.adapters.select_connection import SelectConnection  # type: ignore[import-untyped]

PERSISTENT = pika.DeliveryMode.Persistent.value
TASK_QUEUE_ARGUMENTS = {"x-queue-type": "classic"}  # as taskell declares a classic task queue
REPLY_QUEUE_EXPIRES_MS = 600_000  # as taskell's reply queues


def _answer(body: bytes) -> bytes:
    args: Any = json.loads(body)
    if "x" in args:
        return json.dumps(args["x"] * args["x"]).encode()
    if "parts" in args:
        return json.dumps(sum(args["parts"])).encode()
    return b"null"


def serve(url: str, queue: str, prefetch: int) -> None:
    """Consume ``queue`` until SIGTERM; print ``ready`` once consuming."""
    stop = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    conn = pika.BlockingConnection(pika.URLParameters(url))
    channel = conn.channel()
    channel.queue_declare(queue, durable=True)
    channel.basic_qos(prefetch_count=prefetch)

    def on_message(
        ch: BlockingChannel, method: pika.spec.Basic.Deliver, props: pika.spec.BasicProperties, body: bytes
    ) -> None:
        result = _answer(body)
        if props.reply_to:
            ch.basic_publish(
                "", props.reply_to, result, pika.BasicProperties(correlation_id=props.correlation_id)
            )
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, on_message)
    print("ready", flush=True)
    while not stop[0]:
        conn.process_data_events(time_limit=0.2)
    conn.close()


class RawClient:
    """Publishes requests to the server's queue and collects replies (one thread)."""

    def __init__(self, url: str, queue: str) -> None:
        self.queue = queue
        self.conn = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.conn.channel()
        self.channel.queue_declare(queue, durable=True)
        self.reply_queue: str = self.channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
        self.replies: dict[str, bytes] = {}
        self.channel.basic_consume(self.reply_queue, self._on_reply, auto_ack=True)
        self._next = 0

    def _on_reply(
        self,
        ch: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        props: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        self.replies[props.correlation_id] = body

    def purge(self) -> None:
        self.channel.queue_purge(self.queue)

    def publish(self, body: bytes, *, reply: bool = True) -> str:
        """Publish one persistent request; returns its correlation id."""
        self._next += 1
        cid = str(self._next)
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=PERSISTENT,
            correlation_id=cid,
            reply_to=self.reply_queue if reply else None,
        )
        self.channel.basic_publish("", self.queue, body, props)
        return cid

    def wait(self, count: int, timeout: float) -> None:
        """Process events until ``count`` replies are in ``replies`` (TimeoutError after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.replies) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(self.replies)} of {count} raw replies after {timeout} s")
            self.conn.process_data_events(time_limit=min(left, 1.0))

    def call(self, body: bytes, timeout: float = 10.0) -> bytes:
        """One request, then block for its reply."""
        self.replies.clear()
        cid = self.publish(body)
        self.wait(1, timeout)
        return self.replies.pop(cid)

    def close(self) -> None:
        if self.conn.is_open:
            self.conn.close()


# pika, same guarantees


class _CoalescingConnection(SelectConnection):  # type: ignore[misc]  # pika ships no type information
    """Writes the frames of one I/O-loop turn with one ``send`` (pika sends each frame alone).
    The same private override as taskell's transport (pika 1.3 to 1.4), written out here so
    that the baseline owes nothing to taskell."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._frames_out: list[bytes] = []
        super().__init__(*args, **kwargs)

    def _output_marshaled_frames(self, marshaled_frames: Sequence[bytes]) -> None:
        if not self._frames_out:
            self.ioloop.call_later(0, self._flush_frames)  # after this turn's callbacks
        self._frames_out.extend(marshaled_frames)

    def _flush_frames(self) -> None:
        if self._frames_out and self._transport is not None:
            data = b"".join(self._frames_out)
            self._frames_out.clear()
            self._adapter_emit_data(data)


class _Confirms:
    """Publisher confirms of one channel: which publish sequence numbers the broker confirmed."""

    def __init__(self) -> None:
        self.published = 0  # sequence number of the last publish
        self.upto = 0  # every number up to this one is confirmed
        self._single: set[int] = set()  # confirmed above ``upto`` (without ``multiple``)

    def on_confirm(self, frame: Any) -> None:
        method = frame.method
        if not isinstance(method, pika.spec.Basic.Ack):
            raise RuntimeError(f"the broker refused publish {method.delivery_tag} (nack)")
        if method.multiple:
            self.upto = max(self.upto, method.delivery_tag)
        else:
            self._single.add(method.delivery_tag)
        while self.upto + 1 in self._single:
            self.upto += 1
            self._single.discard(self.upto)

    def confirmed(self, seq: int) -> bool:
        return seq <= self.upto or seq in self._single


class ConfirmedClient:
    """The client of "pika, same guarantees": the interface of ``RawClient`` (``publish`` queues
    a request, ``wait`` runs the I/O loop in the calling thread until the replies are in), on one
    ``SelectConnection``."""

    CHUNK = 100  # requests published per loop turn, so that replies are read while submitting

    def __init__(self, url: str, queue: str, timeout: float = 30.0) -> None:
        self.queue = queue
        self.reply_queue = f"bench.reply.{uuid.uuid4().hex}"
        self.replies: dict[str, bytes] = {}
        self._confirms = _Confirms()
        self._outbox: collections.deque[tuple[bytes, str, bool]] = collections.deque()
        self._pumping = False
        self._ack_tag = 0  # the last reply delivery tag not yet acknowledged (0: none)
        self._must_confirm = 0  # the last request without reply_to: waited for until confirmed
        self._next = 0
        self._error: BaseException | None = None
        self._done: Callable[[], bool] | None = None
        self._ready = False
        self._closing = False
        self.channel: Any = None
        self.conn = _CoalescingConnection(
            pika.URLParameters(url),
            on_open_callback=self._on_open,
            on_open_error_callback=self._on_error,
            on_close_callback=self._on_error,
        )
        self._run_until(lambda: self._ready, timeout)

    # Set-up: channel, confirms, the task queue, the reply queue, the consumer.

    def _on_open(self, conn: Any) -> None:
        conn.channel(on_open_callback=self._on_channel)

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_return_callback(self._on_return)
        channel.add_on_close_callback(self._on_channel_closed)
        channel.confirm_delivery(self._on_confirm, callback=lambda _: self._declare())

    def _declare(self) -> None:
        def consume(_: Any) -> None:
            self.channel.basic_consume(self.reply_queue, self._on_reply, callback=self._on_consuming)

        def reply_queue(_: Any) -> None:
            arguments = {"x-expires": REPLY_QUEUE_EXPIRES_MS}
            self.channel.queue_declare(self.reply_queue, durable=True, arguments=arguments, callback=consume)

        self.channel.queue_declare(
            self.queue, durable=True, arguments=TASK_QUEUE_ARGUMENTS, callback=reply_queue
        )

    def _on_consuming(self, _: Any) -> None:
        self._ready = True
        self._check()

    # Events

    def _on_error(self, conn: Any, error: BaseException) -> None:
        if not self._closing:
            self._error = error
        conn.ioloop.stop()

    def _on_channel_closed(self, channel: Any, reason: BaseException) -> None:
        if not self._closing:
            self._error = reason
            self._check()

    def _on_return(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        self._error = RuntimeError(f"request {props.correlation_id} unroutable: {method.reply_text}")
        self._check()

    def _on_confirm(self, frame: Any) -> None:
        try:
            self._confirms.on_confirm(frame)
        except RuntimeError as exc:
            self._error = exc
        self._check()

    def _on_reply(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        self.replies[props.correlation_id] = body
        if not self._ack_tag:
            self.conn.ioloop.call_later(0, self._ack_replies)  # once per loop turn
        self._ack_tag = method.delivery_tag
        self._check()

    def _ack_replies(self) -> None:
        if self._ack_tag and self.channel.is_open:
            self.channel.basic_ack(self._ack_tag, multiple=True)
        self._ack_tag = 0

    def _pump(self) -> None:
        """Publish up to ``CHUNK`` queued requests; again on the next loop turn if more wait."""
        for _ in range(min(self.CHUNK, len(self._outbox))):
            body, cid, reply = self._outbox.popleft()
            props = pika.BasicProperties(
                content_type="application/json",
                delivery_mode=PERSISTENT,
                correlation_id=cid,
                reply_to=self.reply_queue if reply else None,
            )
            self.channel.basic_publish("", self.queue, body, props, mandatory=True)
            self._confirms.published += 1
            if not reply:
                self._must_confirm = self._confirms.published
        if self._outbox:
            self.conn.ioloop.call_later(0, self._pump)
        else:
            self._pumping = False
        self._check()

    def _check(self) -> None:
        """Stop the loop once the awaited condition holds (or something failed)."""
        if self._done is not None and (self._error is not None or self._done()):
            self._done = None
            self.conn.ioloop.stop()

    def _run_until(self, done: Callable[[], bool], timeout: float) -> None:
        if self._error is None and not done():
            self._done = done
            timer = self.conn.ioloop.call_later(timeout, self._on_timeout)
            self.conn.ioloop.start()
            self.conn.ioloop.remove_timeout(timer)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _on_timeout(self) -> None:
        self._error = TimeoutError("the broker did not answer in time")
        self._check()

    # The interface of RawClient

    def publish(self, body: bytes, *, reply: bool = True) -> str:
        """Queue one request (sent once ``wait`` runs the loop); returns its correlation id."""
        self._next += 1
        cid = str(self._next)
        self._outbox.append((body, cid, reply))
        if not self._pumping:
            self._pumping = True
            self.conn.ioloop.call_later(0, self._pump)
        return cid

    def wait(self, count: int, timeout: float) -> None:
        """Run the loop until ``count`` replies are in ``replies`` and every request without
        ``reply_to`` is confirmed (TimeoutError after ``timeout``). As with taskell's
        ``result()``, a reply proves its request arrived: other confirms are settled in the
        background (a nack or a return fails the next wait)."""
        confirms = self._confirms
        self._run_until(
            lambda: not self._outbox and len(self.replies) >= count and confirms.upto >= self._must_confirm,
            timeout,
        )

    def call(self, body: bytes, timeout: float = 10.0) -> bytes:
        """One request, then run the loop until its reply is in."""
        self.replies.clear()
        cid = self.publish(body)
        self.wait(1, timeout)
        return self.replies.pop(cid)

    def close(self) -> None:
        """Delete the reply queue and close (running the loop until closed)."""
        if self.conn.is_open:
            self._closing = True
            self.channel.queue_delete(self.reply_queue, callback=lambda _: self.conn.close())
            self.conn.ioloop.start()  # stopped by _on_error, the close callback


class ConfirmedServer:
    """The server of "pika, same guarantees": one ``SelectConnection``, acks after the confirmed
    reply, in delivery order, with ``multiple`` once per loop turn."""

    def __init__(self, url: str, queue: str, prefetch: int) -> None:
        self.queue = queue
        self.prefetch = prefetch
        self._confirms = _Confirms()
        # Deliveries not acknowledged yet, in order: (delivery tag, publish number of its reply or 0).
        self._pending: collections.deque[tuple[int, int]] = collections.deque()
        self._settling = False
        self.failure: BaseException | None = None
        self.channel: Any = None
        self.conn = _CoalescingConnection(
            pika.URLParameters(url),
            on_open_callback=lambda conn: conn.channel(on_open_callback=self._on_channel),
            on_open_error_callback=self._on_closed,
            on_close_callback=self._on_closed,
        )

    def _on_closed(self, conn: Any, error: BaseException) -> None:
        conn.ioloop.stop()

    def _on_channel(self, channel: Any) -> None:
        self.channel = channel

        def consume(_: Any) -> None:
            channel.basic_consume(self.queue, self._on_message, callback=lambda _: print("ready", flush=True))

        def declare(_: Any) -> None:
            channel.queue_declare(self.queue, durable=True, arguments=TASK_QUEUE_ARGUMENTS, callback=consume)

        channel.confirm_delivery(
            self._on_confirm,
            callback=lambda _: channel.basic_qos(prefetch_count=self.prefetch, callback=declare),
        )

    def _on_message(self, channel: Any, method: Any, props: Any, body: bytes) -> None:
        result = _answer(body)
        seq = 0
        if props.reply_to:
            reply = pika.BasicProperties(
                content_type="application/json", delivery_mode=PERSISTENT, correlation_id=props.correlation_id
            )
            channel.basic_publish("", props.reply_to, result, reply)
            self._confirms.published += 1
            seq = self._confirms.published
        self._pending.append((method.delivery_tag, seq))
        if seq == 0:
            self._schedule_settle()

    def _on_confirm(self, frame: Any) -> None:
        try:
            self._confirms.on_confirm(frame)
        except RuntimeError as exc:
            # A refused reply: stop without acknowledging its task, which goes back to the queue.
            self.failure = exc
            self.conn.close()
            return
        self._schedule_settle()

    def _schedule_settle(self) -> None:
        if not self._settling:
            self._settling = True
            self.conn.ioloop.call_later(0, self._settle)

    def _settle(self) -> None:
        """Acknowledge the run of deliveries whose replies are confirmed, with one ``multiple``."""
        self._settling = False
        last = 0
        while self._pending and self._confirms.confirmed(self._pending[0][1]):
            last = self._pending.popleft()[0]
        if last:
            self.channel.basic_ack(last, multiple=True)

    def stop(self) -> None:
        self.conn.ioloop.add_callback_threadsafe(self.conn.close)

    def run(self) -> None:
        self.conn.ioloop.start()


def serve_confirmed(url: str, queue: str, prefetch: int) -> None:
    """Run a ``ConfirmedServer`` until SIGTERM (exit status 0) or a refused reply (1)."""
    server = ConfirmedServer(url, queue, prefetch)
    signal.signal(signal.SIGTERM, lambda signum, frame: server.stop())
    signal.signal(signal.SIGINT, lambda signum, frame: server.stop())
    server.run()
    if server.failure is not None:
        sys.exit(f"raw pika server stopped: {server.failure}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--url", required=True)
    s.add_argument("--queue", default="bench.raw")
    s.add_argument("--prefetch", type=int, default=1)
    s.add_argument("--confirmed", action="store_true", help='"pika, same guarantees" instead of naive pika')
    args = parser.parse_args(argv)
    if args.command == "serve":
        (serve_confirmed if args.confirmed else serve)(args.url, args.queue, args.prefetch)


if __name__ == "__main__":
    main(sys.argv[1:])
