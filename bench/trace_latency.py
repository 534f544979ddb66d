"""Where one sequential call's time goes: timestamps along the path of ``demo.square``.

    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench .venv/bin/python -m bench.trace_latency

A worker (parallelism 1) runs in a forked child process; client and worker stamp each step
with ``time.perf_counter`` (one clock for the whole machine), by wrapping the internal methods
of each step. It prints the median time between consecutive steps over ``--calls`` calls:

    client    call        the caller enters ``demo.square(...).result()``
    client    publish     the task is handed to pika
    client    send        its frames are written to the socket
    worker    deliver     the worker's I/O thread received the task
    worker    pool        a pool thread started on it
    worker    replied     the handler returned, the result is encoded
    worker    publish     the reply is handed to pika
    worker    send        ... and written
    client    deliver     the client received the reply
    client    done        the caller has the decoded result

and, per step, how often an I/O thread took it rather than the caller or the pool thread (a
step on the I/O thread after one on another thread is a hand-off: a wake-up and a switch).

A diagnostic, not a figure of merit: the wrappers add a few microseconds per step.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection as Pipe
from typing import Any

from bench._common import URL

Stamps = list[tuple[str, float, bool]]  # step, time, taken on an I/O thread


def instrument(stamps: Stamps, side: str) -> None:
    """Wrap the internal methods that mark each step, appending (step, time) to ``stamps``."""
    from taskell import _settle, worker
    from taskell.transport import amqp, pika_connection

    def wrap(owner: Any, name: str, step: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def stamped(*args: Any, **kwargs: Any) -> Any:
            stamps.append((f"{side} {step}", time.perf_counter(), _on_io_thread()))
            return original(*args, **kwargs)

        setattr(owner, name, stamped)

    wrap(amqp.AmqpTransport, "_basic_publish", "publish")
    flush = pika_connection.CoalescingConnection.flush_frames

    def flush_stamped(self: Any) -> None:
        if self._frames_out:  # a call with nothing to write is no step
            stamps.append((f"{side} send", time.perf_counter(), _on_io_thread()))
        flush(self)

    setattr(pika_connection.CoalescingConnection, "flush_frames", flush_stamped)  # noqa: B010
    start_consumer = amqp.AmqpTransport._start_consumer

    def start_stamped(self: Any, channel: Any, consumer: Any, future: Any = None) -> None:
        on_message = consumer.on_message

        def received(delivery: Any) -> None:
            stamps.append((f"{side} deliver", time.perf_counter(), _on_io_thread()))
            on_message(delivery)

        start_consumer(self, channel, dataclasses.replace(consumer, on_message=received), future)

    setattr(amqp.AmqpTransport, "_start_consumer", start_stamped)  # noqa: B010 - mypy forbids assigning a method
    if side == "worker":
        wrap(worker.Worker, "_execute", "pool")
        wrap(_settle.Settler, "finish", "replied")


def run_worker(pipe: Pipe) -> None:
    stamps: Stamps = []
    instrument(stamps, "worker")
    import taskell
    from examples.worker import handlers

    with taskell.Worker(handlers, taskell.Config.from_url(URL), parallelism=1):
        pipe.send("ready")
        pipe.recv()  # stop
    pipe.send(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description="where a sequential call's time goes")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument(
        "--gap", type=float, default=0.002, help="seconds between calls (0: back to back, as bench_others)"
    )
    a = parser.parse_args()
    multiprocessing.set_start_method("fork")
    ours, theirs = multiprocessing.Pipe()
    child = multiprocessing.Process(target=run_worker, args=(theirs,), daemon=True)
    child.start()
    try:
        if not ours.poll(30) or ours.recv() != "ready":
            raise RuntimeError("worker did not start within 30 s")
        stamps: Stamps = []
        instrument(stamps, "client")
        import taskell
        from generated.demo import Client

        with taskell.connect(URL) as conn:
            demo = Client(conn)
            for i in range(200):  # warm-up
                demo.square(x=i).result(timeout=10)
            stamps.clear()
            for i in range(a.calls):
                stamps.append(("client call", time.perf_counter(), False))
                demo.square(x=i).result(timeout=10)
                stamps.append(("client done", time.perf_counter(), False))
                time.sleep(a.gap)  # by default both sides go idle, as between real calls
        ours.send("stop")
        if not ours.poll(30):
            raise RuntimeError("worker did not stop within 30 s")
        worker_stamps: Stamps = ours.recv()
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()
    report(sorted(stamps + worker_stamps, key=lambda s: s[1]))


def _on_io_thread() -> bool:
    return threading.current_thread().name.endswith("-io")


def report(stamps: Stamps) -> None:
    calls: list[Stamps] = []
    for stamp in stamps:
        step = stamp[0]
        if step == "client call":
            calls.append([stamp])
        elif calls and all(step != seen[0] for seen in calls[-1]):  # first of each step only
            calls[-1].append(stamp)
    deltas: dict[str, list[float]] = {}
    since_start: dict[str, list[float]] = {}
    on_io: dict[str, list[bool]] = {}
    for call in calls:
        for (_, before, _io), (step, at, io) in itertools.pairwise(call):
            deltas.setdefault(step, []).append((at - before) * 1e6)
            since_start.setdefault(step, []).append((at - call[0][1]) * 1e6)
            on_io.setdefault(step, []).append(io)
    print(f"median over {len(calls)} sequential calls (microseconds):")
    print(f"  {'step':<16} {'since previous':>15} {'since call':>11} {'on an I/O thread':>17}")
    for step in sorted(since_start, key=lambda s: statistics.median(since_start[s])):
        share = 100 * sum(on_io[step]) / len(on_io[step])
        print(
            f"  {step:<16} {statistics.median(deltas[step]):>15.0f}"
            f" {statistics.median(since_start[step]):>11.0f} {share:>16.0f}%"
        )


if __name__ == "__main__":
    main()
