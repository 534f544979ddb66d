"""A waiting thread that runs the I/O loop itself (``Transport.run_loop_until``: a caller
waiting for its result, an idle pool thread waiting for a task) against waiting to be woken by
the I/O thread, in the same run: sequential ``demo.square`` calls (p50 and p90), and draining
fire-and-forget tasks and round trips (tasks per second).

    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench \\
      .venv/bin/python -m bench.bench_borrow [--blocks 40] [--calls 100] [--drains 6] \\
        [--tasks 2000] [--out FILE]

Two workers (parallelism 1, forked from this process) consume a queue each: one as taskell
runs (its idle pool thread runs the loop), one whose pool thread waits to be handed each task
by the I/O thread. Two client connections likewise: one whose ``result()`` runs the loop, one
whose ``result()`` waits to be woken. Each connection calls its own worker; the client
alternates between the two in blocks of ``--calls`` calls (the order flips each block), so that
both see the same machine: these machines are shared, and the load drifts within minutes. Then
``--drains`` rounds, each side in turn: ``--tasks`` - 1 tasks submitted with ``taskell.fire``
and one whose result is awaited, timed from the first submission to that result; then a round
trip: ``--tasks`` tasks submitted, then every result collected. The baseline,
"woken by the I/O thread", is the same code with ``run_loop_until`` answering "not possible":
every guarantee (confirms, ack after the confirmed reply) is the same on both sides. Every
call's time is in the output.
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

SIDES = {"runs the loop itself": True, "woken by the I/O thread": False}


class _Square:
    """``demo.square`` on another queue, in the shape ``taskell.fire`` takes (a Client's method)."""

    def __init__(self, conn: Any, spec: Any) -> None:
        self._conn = conn
        self._spec = spec

    def square(self, x: int) -> Any:
        return self._conn.submit(self._spec, {"x": x})


def _never(done: Any, timeout: Any) -> bool:
    return False


def _never_on(transport: Any, done: Any, timeout: Any, **options: Any) -> bool:
    return False


def run_worker(borrow: bool, queue: str, pipe: Pipe) -> None:
    import taskell
    from examples.worker import handlers
    from taskell.transport import amqp

    if not borrow:
        amqp.AmqpTransport.run_loop_until = _never_on  # type: ignore[method-assign,assignment]
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

    tag = f"{time.time_ns() % 10**9}"
    sides = []
    for name, borrow in SIDES.items():
        queue = f"bench.borrow.{tag}.{'own' if borrow else 'woken'}"
        ours, theirs = multiprocessing.Pipe()
        child = multiprocessing.Process(target=run_worker, args=(borrow, queue, theirs), daemon=True)
        child.start()
        if not ours.poll(60):
            raise RuntimeError(f"the {name!r} worker did not start within 60 s")
        ours.recv()
        conn = taskell.connect(URL)
        if not borrow:
            conn._owner = dataclasses.replace(conn._owner, run_loop_until=_never)
        sides.append((name, conn, dataclasses.replace(SQUARE, queue=queue), ours, child))
    samples: dict[str, list[float]] = {name: [] for name in SIDES}
    rates: dict[str, list[float]] = {name: [] for name in SIDES}
    round_trips: dict[str, list[float]] = {name: [] for name in SIDES}
    try:
        for block in range(a.blocks):
            for name, conn, spec, _, _ in sides if block % 2 == 0 else sides[::-1]:
                for i in range(20):  # the switch settles: not timed
                    conn.submit(spec, {"x": i}).result(timeout=10)
                for i in range(a.calls):
                    started = time.perf_counter()
                    if conn.submit(spec, {"x": i}).result(timeout=10) != i * i:
                        raise AssertionError("wrong result")
                    samples[name].append(round((time.perf_counter() - started) * 1e6, 1))
        for drain in range(a.drains):
            for name, conn, spec, _, _ in sides if drain % 2 == 0 else sides[::-1]:
                started = time.perf_counter()
                square = _Square(conn, spec).square
                for i in range(a.tasks - 1):
                    taskell.fire(square, x=i)
                if square(x=3).result(timeout=120) != 9:
                    raise AssertionError("wrong result")
                rates[name].append(round(a.tasks / (time.perf_counter() - started), 1))
                conn.flush(30)
                started = time.perf_counter()
                handles = [conn.submit(spec, {"x": i}) for i in range(a.tasks)]
                for i, handle in enumerate(handles):
                    if handle.result(timeout=120) != i * i:
                        raise AssertionError("wrong result")
                round_trips[name].append(round(a.tasks / (time.perf_counter() - started), 1))
    finally:
        for _, conn, _, pipe, child in sides:
            conn.close()
            pipe.send("stop")
            child.join(30)
    summary: dict[str, Any] = {
        name: {
            "p50_us": round(statistics.median(values)),
            "p90_us": round(percentile(values, 0.90)),
            "calls": len(values),
            "drain_per_s": round(statistics.median(rates[name]), 1) if rates[name] else None,
            "round_trip_per_s": round(statistics.median(round_trips[name]), 1) if round_trips[name] else None,
        }
        for name, values in samples.items()
    }
    own, woken = (summary[name] for name in SIDES)
    summary["p50_ratio"] = round(own["p50_us"] / woken["p50_us"], 3)
    summary["p90_ratio"] = round(own["p90_us"] / woken["p90_us"], 3)
    if own["drain_per_s"] and woken["drain_per_s"]:
        summary["drain_ratio"] = round(own["drain_per_s"] / woken["drain_per_s"], 3)
        summary["round_trip_ratio"] = round(own["round_trip_per_s"] / woken["round_trip_per_s"], 3)
    print(json.dumps(summary, indent=2))
    result = {
        "benchmark": "bench_borrow",
        **run,
        "blocks": a.blocks,
        "calls_per_block": a.calls,
        "summary": summary,
        "tasks_per_drain": a.tasks,
        "samples_us": samples,  # each side's calls, in the order they ran
        "drain_samples_per_s": rates,  # each side's drains, in the order they ran
        "round_trip_samples_per_s": round_trips,  # likewise: submit --tasks, then every result
    }
    save(Path(a.out) if a.out else None, result)


if __name__ == "__main__":
    main()
