"""CPU time per task of each process, taskell against the two pika baselines, in one run.

    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench .venv/bin/python -m bench.bench_cpu [--out FILE]

On this machine the client, the worker and the broker share two cores, so a round trip at
parallelism 1 is bound by the CPU time the three spend per task: this measures it, to show
where taskell's gap to the pika baselines is (issue 15). Systems, as in ``bench_others``:
naive pika, pika with the same guarantees (the floor for taskell's guarantees), taskell's sync
client and its asyncio client, each with one worker subprocess at parallelism 1.

Per repetition, every system in a random order (``--seed``) starts its worker, warms up with
200 round trips, then is measured twice:

1. round trip: ``--tasks`` tasks submitted at once, then every result collected;
2. sequential: ``--calls`` calls, each waiting for its result before the next.

For each, the CPU time (user + system, every thread) of this process (the client), of the
worker process and of the broker's ``beam.smp``, divided by the number of tasks; the raw user and
system times are kept apart in the JSON. Then the worker idles ``--idle`` seconds (no task
queued, its client connected): its CPU time per second then (read from ``/proc/PID/task/*/schedstat``, finer than clock
ticks) is what an idle worker costs. Ratios are taskell's figure over the same figure of
pika with the same guarantees in the same repetition, then the median and range over
repetitions. CPU time is steadier than wall time on a shared machine, but not immune: caches
and a halted vCPU make every process slower in a busy phase, which is why only the ratios in one
repetition are compared.

Output: a summary, and a JSON file (``--out``, default ``bench/results/cpu-<time>.json``) with the
commit, date, machine, the order of every repetition and every sample.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import ROOT, broker_pid, git_commit, machine
from bench._summary import SYSTEMS, TASKELL, TASKELL_AIO
from bench.bench_others import WARM_UP, Admin, AioSide, PikaSide, Side, TaskellSide, close_all

BASELINE = SYSTEMS[1]  # pika, same guarantees
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PARTS = ("client", "worker", "broker")


def cpu_times(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of process ``pid`` (all its threads) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def cpu_seconds_precise(pid: int) -> float:
    """CPU seconds process ``pid``'s live threads have run, in nanoseconds' resolution (the
    scheduler's own count): for the idle figure, where clock ticks are too coarse."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that just ended
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def per_task(run: Callable[[], None], count: int, pids: dict[str, int]) -> dict[str, Any]:
    """Run ``run()`` (``count`` tasks) and return, per process, its CPU µs per task (user and
    system apart, and their sum), and the tasks per second."""
    before = {part: cpu_times(pid) for part, pid in pids.items()}
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {"tasks_per_s": round(count / elapsed, 1)}
    for part, pid in pids.items():
        user, system = (after - earlier for after, earlier in zip(cpu_times(pid), before[part], strict=True))
        out[part] = {
            "user_us": round(user / count * 1e6, 1),
            "sys_us": round(system / count * 1e6, 1),
            "us": round((user + system) / count * 1e6, 1),
        }
    out["total_us"] = round(sum(out[part]["us"] for part in pids), 1)
    return out


def measure(side: Side, admin: Admin, broker: int, a: argparse.Namespace) -> dict[str, Any]:
    """One repetition's figures of one system: start its worker, warm up, measure, stop."""
    admin.purge()
    side.start(1)
    try:
        assert side.process is not None
        pids = {"client": os.getpid(), "worker": side.process.pid, "broker": broker}
        side.round_trip(WARM_UP)

        def sequential() -> None:
            for i in range(a.calls):
                side.call(i)

        out: dict[str, Any] = {
            "round trip": per_task(lambda: side.round_trip(a.tasks), a.tasks, pids),
            "sequential": per_task(sequential, a.calls, pids),
        }
        time.sleep(1.0)  # the last replies settle
        before = cpu_seconds_precise(side.process.pid)
        time.sleep(a.idle)
        out["idle_worker_ms_per_s"] = round(
            (cpu_seconds_precise(side.process.pid) - before) / a.idle * 1000, 2
        )
        side.alive()
        return out
    finally:
        side.stop()


def summarise(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per system and figure: the median of each part's µs per task over the repetitions, and
    its ratio to the baseline's in the same repetition (median and range)."""
    summary: dict[str, Any] = {}
    for name, rows in samples.items():
        summary[name] = {}
        for figure in ("round trip", "sequential"):
            entry: dict[str, Any] = {}
            for part in (*PARTS, "total"):
                values = [_us(row[figure], part) for row in rows]
                entry[part] = {"median_us": round(statistics.median(values), 1)}
                if name != BASELINE and BASELINE in samples:
                    ratios = [
                        _us(row[figure], part) / _us(base[figure], part)
                        for row, base in zip(rows, samples[BASELINE], strict=True)
                    ]
                    entry[part]["ratio"] = _spread(ratios)
            rates = [row[figure]["tasks_per_s"] for row in rows]
            entry["tasks_per_s"] = round(statistics.median(rates), 1)
            summary[name][figure] = entry
        idle = [row["idle_worker_ms_per_s"] for row in rows]
        summary[name]["idle worker"] = {"median_ms_per_s": round(statistics.median(idle), 2)}
    return summary


def _us(figures: dict[str, Any], part: str) -> float:
    return float(figures["total_us"] if part == "total" else figures[part]["us"])


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def show(summary: dict[str, Any]) -> None:
    print(f"\nCPU µs per task (median over repetitions); ratio = this / {BASELINE}, same repetition")
    for figure in ("round trip", "sequential"):
        print(f"  {figure}")
        for name, figures in summary.items():
            entry = figures[figure]
            cells = []
            for part in (*PARTS, "total"):
                cell = f"{part} {entry[part]['median_us']:7.1f}"
                if "ratio" in entry[part]:
                    ratio = entry[part]["ratio"]
                    cell += f" ({ratio['median']:.2f}x, {ratio['min']:.2f}-{ratio['max']:.2f})"
                cells.append(cell)
            print(f"    {name:<22} {entry['tasks_per_s']:8.1f}/s  " + "  ".join(cells))
    print("  idle worker, ms of CPU per second")
    for name, figures in summary.items():
        print(f"    {name:<22} {figures['idle worker']['median_ms_per_s']:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description="CPU time per task of client, worker and broker")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=3000, help="tasks per round trip")
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds the idle worker is measured")
    parser.add_argument("--seed", type=int, default=None, help="of the random order (default: the clock)")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (default bench/results/...)")
    a = parser.parse_args()
    a.seed = a.seed if a.seed is not None else int(time.time())
    broker = broker_pid()
    if broker is None:
        raise SystemExit("no local RabbitMQ (beam.smp) to measure: start one with scripts/rabbitmq start")
    print(f"{a.tasks} tasks, {a.calls} calls, {a.repeat} repetitions, seed {a.seed}", flush=True)
    data: dict[str, Any] = {
        "kind": "cpu",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **git_commit(),
        "machine": machine(),
        "tasks": a.tasks,
        "calls": a.calls,
        "repeat": a.repeat,
        "seed": a.seed,
        "warm_up": WARM_UP,
        "idle_s": a.idle,
    }
    samples: dict[str, list[dict[str, Any]]] = {}
    orders: list[list[str]] = []
    rng = random.Random(a.seed)
    admin = Admin()
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmpdir:
        tmp = Path(tmpdir)
        sides: dict[str, Side] = {}
        try:
            sides[SYSTEMS[0]] = PikaSide(tmp, confirmed=False)
            sides[BASELINE] = PikaSide(tmp, confirmed=True)
            sides[TASKELL] = TaskellSide(tmp)
            sides[TASKELL_AIO] = AioSide(tmp)
            for repetition in range(a.repeat):
                order = list(sides)
                rng.shuffle(order)
                orders.append(order)
                print(f"repetition {repetition + 1}: {', '.join(order)}", flush=True)
                for name in order:
                    figures = measure(sides[name], admin, broker, a)
                    samples.setdefault(name, []).append(figures)
                    shown = "  ".join(
                        f"{figure} {figures[figure]['tasks_per_s']:.0f}/s "
                        + " ".join(f"{part} {figures[figure][part]['us']:.0f}" for part in PARTS)
                        for figure in ("round trip", "sequential")
                    )
                    shown += f"  idle worker {figures['idle_worker_ms_per_s']:.1f} ms/s"
                    print(f"  {name:<22} {shown}", flush=True)
        finally:
            close_all(sides.values(), admin)
    summary = summarise(samples)
    data.update({"orders": orders, "samples": samples, "summary": summary, "loadavg_end": os.getloadavg()})
    show(summary)
    out = a.out or ROOT / "bench" / "results" / f"cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"\nsaved {out}")


if __name__ == "__main__":
    main()
