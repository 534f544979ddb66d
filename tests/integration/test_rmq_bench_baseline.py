"""The benchmarks' "pika, same guarantees" baseline (``bench/raw_pika.py``) keeps the guarantees
it is compared on, on RabbitMQ: a task whose reply the broker refuses is not acknowledged, and
an unroutable request fails the client's wait."""

from __future__ import annotations

import select
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

from bench.raw_pika import ConfirmedClient
from tests.support import ROOT, URL, stop_process, wait_until

QUEUE = "bench.test.confirmed"
FULL = "bench.test.full"  # a reply queue that refuses every message: the broker nacks the reply


@pytest.fixture
def queues(amqp: Any) -> Iterator[None]:
    for queue in (QUEUE, FULL):
        amqp.queue_delete(queue)
    yield
    for queue in (QUEUE, FULL):
        amqp.queue_delete(queue)


def start_server() -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.raw_pika", "serve", "--url", URL, "--queue", QUEUE, "--confirmed"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert server.stdout is not None
    ready, _, _ = select.select([server.stdout], [], [], 30)
    assert ready and server.stdout.readline().strip() == b"ready"
    return server


def test_a_task_whose_reply_is_refused_stays_queued(amqp: Any, queues: None) -> None:
    amqp.queue_declare(FULL, durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})
    server = start_server()
    try:
        props = pika.BasicProperties(reply_to=FULL, correlation_id="1", delivery_mode=2)
        amqp.basic_publish("", QUEUE, b'{"x": 3}', props)
        # The nacked reply stops the server before it acknowledges the task.
        assert server.wait(30) != 0
    finally:
        stop_process(server)
    wait_until(
        lambda: amqp.queue_declare(QUEUE, passive=True).method.message_count == 1,
        10,
        "the task back in its queue",
    )


def test_an_unroutable_request_fails_the_wait(amqp: Any, queues: None) -> None:
    client = ConfirmedClient(URL, QUEUE)
    try:
        amqp.queue_delete(QUEUE)  # nothing routes the request now
        client.publish(b'{"x": 1}', reply=False)
        with pytest.raises(RuntimeError, match="unroutable"):
            client.wait(0, 10)
    finally:
        client.close()
