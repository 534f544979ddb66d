"""Issue 3, point 9: connections close cleanly, and an unreachable broker fails fast."""

from __future__ import annotations

import threading
import time

import pytest

import taskell
from generated.demo import Client
from tests.support import RESULT_TIMEOUT


def _io_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "taskell-client-io" and t.is_alive()}


def test_with_connect_leaves_no_io_thread(broker: str, worker: taskell.Worker) -> None:
    before = _io_threads()
    with taskell.connect(broker) as conn:
        during = _io_threads() - before
        assert len(during) == 1, "connect() should run exactly one taskell-client-io thread"
        assert Client(conn).square(x=5).result(timeout=RESULT_TIMEOUT) == 25
    assert not (_io_threads() - before), "a taskell-client-io thread outlived the with block"
    for thread in during:
        assert not thread.is_alive()

    # Also when the block raises.
    with pytest.raises(RuntimeError, match="leaving"), taskell.connect(broker) as conn:
        Client(conn).square(x=2)
        raise RuntimeError("leaving")
    assert not (_io_threads() - before)


def test_submit_after_close_raises_broker_unavailable(broker: str) -> None:
    conn = taskell.connect(broker)
    conn.close()
    with pytest.raises(taskell.BrokerUnavailable):
        Client(conn).square(x=2)
    conn.close()  # idempotent


def test_handle_pending_at_close_raises_broker_unavailable(broker: str) -> None:
    with taskell.connect(broker) as conn:
        handle = Client(conn).sleep(seconds=0.1)  # no worker: it stays queued
    with pytest.raises(taskell.BrokerUnavailable):
        handle.result(timeout=5)


def test_connect_to_a_closed_port_fails_fast() -> None:
    before = _io_threads()
    started = time.monotonic()
    with pytest.raises(taskell.BrokerUnavailable):
        taskell.connect("amqp://guest:guest@127.0.0.1:1/%2F")
    assert time.monotonic() - started < 5.0
    assert not _io_threads() - before, "the failed connection left its I/O thread running"
