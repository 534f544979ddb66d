"""The baseline of bench_throughput: a minimal hand-written RPC over pika, no taskell.

Server (run as a subprocess by the benchmark)::

    python -m bench.raw_pika serve --url URL --queue bench.raw --prefetch 4

consumes a durable queue with a prefetch, decodes the JSON args (``{"x": n}`` -> ``n * n``,
``{"parts": [...]}`` -> ``sum(parts)``), publishes the JSON result to ``reply_to`` (when the
message has one) with the request's ``correlation_id``, then acks. One thread, one
``BlockingConnection``; no publisher confirms, no validation beyond ``json.loads``.

``RawClient`` (in the benchmark's process) publishes persistent messages to that queue without
confirms and collects the replies from an exclusive, auto-acked reply queue.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from types import FrameType
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.spec  # type: ignore[import-untyped]
from pika.adapters.blocking_connection import BlockingChannel  # type: ignore[import-untyped]

PERSISTENT = pika.DeliveryMode.Persistent.value


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--url", required=True)
    s.add_argument("--queue", default="bench.raw")
    s.add_argument("--prefetch", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.url, args.queue, args.prefetch)


if __name__ == "__main__":
    main(sys.argv[1:])
