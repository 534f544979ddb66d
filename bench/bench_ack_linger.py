"""Acks that ride on the next write (``ACK_LINGER`` in taskell/transport/amqp.py) against acks
written at once, in the same run: sequential ``demo.square`` calls (p50 and p90), and draining
fire-and-forget tasks (tasks per second), where a worker writes nothing but acks.

    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench \\
      .venv/bin/python -m bench.bench_ack_linger [--blocks 40] [--calls 100] [--drains 6] \\
        [--tasks 2000] [--out FILE]

Two workers (parallelism 1, forked from this process) consume a queue each; one acknowledges
tasks the way taskell does (``ACK_LINGER`` = 10 ms: an ack waits for the next write, at most
that long), the other writes each ack at once (``ACK_LINGER`` = 0, taskell before this change).
The client switches its own setting with the worker it calls, and alternates between the two
in blocks of ``--calls`` calls (the order flips each block), so that both see the same
machine: these machines are shared, and the load drifts within minutes. Then ``--drains``
rounds, each side in turn: ``--tasks`` - 1 tasks submitted with ``taskell.fire`` and one whose
result is awaited, timed from the first submission to that result. The baseline, "acks at
once", is the same code with the wait set to zero: every other guarantee (confirms, ack after
the confirmed reply) is the same on both sides. Every call's time is in the output.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import statistics
import time
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

from bench._common import URL, percentile, run_info, save

LINGERS = {"acks ride on the next write": 0.01, "acks at once": 0.0}


class _Square:
    """``demo.square`` on another queue, in the shape ``taskell.fire`` takes (a Client's method)."""

    def __init__(self, conn: Any, spec: Any) -> None:
        self._conn = conn
        self._spec = spec

    def square(self, x: int) -> Any:
        return self._conn.submit(self._spec, {"x": x})


def run_worker(linger: float, queue: str, pipe: Pipe) -> None:
    import taskell
    from examples.worker import handlers
    from taskell.transport import amqp

    amqp.ACK_LINGER = linger
    with taskell.Worker(handlers, taskell.Config.from_url(URL), parallelism=1, queues=[queue]):
        pipe.send("ready")
        pipe.recv()  # stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=40, help="blocks of calls per side")
    parser.add_argument("--calls", type=int, default=100, help="timed calls per block")
    parser.add_argument("--drains", type=int, default=6, help="drain rounds per side")
    parser.add_argument("--tasks", type=int, default=2000, help="tasks per drain")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    a = parser.parse_args()
    run = run_info()  # at the start: the load average then
    multiprocessing.set_start_method("fork")

    import taskell
    from generated.demo.models import SQUARE
    from taskell.transport import amqp

    tag = f"{time.time_ns() % 10**9}"
    sides = []
    for name, linger in LINGERS.items():
        queue = f"bench.linger.{tag}.{'ride' if linger else 'once'}"
        ours, theirs = multiprocessing.Pipe()
        child = multiprocessing.Process(target=run_worker, args=(linger, queue, theirs), daemon=True)
        child.start()
        if not ours.poll(60):
            raise RuntimeError(f"the {name!r} worker did not start within 60 s")
        ours.recv()
        sides.append((name, linger, dataclasses.replace(SQUARE, queue=queue), ours, child))
    samples: dict[str, list[float]] = {name: [] for name in LINGERS}
    rates: dict[str, list[float]] = {name: [] for name in LINGERS}
    try:
        with taskell.connect(URL) as conn:
            for block in range(a.blocks):
                for name, linger, spec, _, _ in sides if block % 2 == 0 else sides[::-1]:
                    amqp.ACK_LINGER = linger
                    for i in range(20):  # the switch settles: not timed
                        conn.submit(spec, {"x": i}).result(timeout=10)
                    for i in range(a.calls):
                        started = time.perf_counter()
                        if conn.submit(spec, {"x": i}).result(timeout=10) != i * i:
                            raise AssertionError("wrong result")
                        samples[name].append(round((time.perf_counter() - started) * 1e6, 1))
            for drain in range(a.drains):
                for name, linger, spec, _, _ in sides if drain % 2 == 0 else sides[::-1]:
                    amqp.ACK_LINGER = linger
                    started = time.perf_counter()
                    square = _Square(conn, spec).square
                    for i in range(a.tasks - 1):
                        taskell.fire(square, x=i)
                    if square(x=3).result(timeout=120) != 9:
                        raise AssertionError("wrong result")
                    rates[name].append(round(a.tasks / (time.perf_counter() - started), 1))
                    conn.flush(30)
    finally:
        for _, _, _, pipe, child in sides:
            pipe.send("stop")
            child.join(30)
    summary: dict[str, Any] = {
        name: {
            "p50_us": round(statistics.median(values)),
            "p90_us": round(percentile(values, 0.90)),
            "calls": len(values),
            "drain_per_s": round(statistics.median(rates[name]), 1) if rates[name] else None,
        }
        for name, values in samples.items()
    }
    ride, once = (summary[name] for name in LINGERS)
    summary["p50_ratio"] = round(ride["p50_us"] / once["p50_us"], 3)
    summary["p90_ratio"] = round(ride["p90_us"] / once["p90_us"], 3)
    if ride["drain_per_s"] and once["drain_per_s"]:
        summary["drain_ratio"] = round(ride["drain_per_s"] / once["drain_per_s"], 3)
    print(json.dumps(summary, indent=2))
    result = {
        "benchmark": "bench_ack_linger",
        **run,
        "blocks": a.blocks,
        "calls_per_block": a.calls,
        "summary": summary,
        "tasks_per_drain": a.tasks,
        "samples_us": samples,  # each side's calls, in the order they ran
        "drain_samples_per_s": rates,  # each side's drains, in the order they ran
    }
    save(Path(a.out) if a.out else None, result)


if __name__ == "__main__":
    main()
