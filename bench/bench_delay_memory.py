"""What 100,000 delayed tasks cost while they wait (issue 13): broker memory, and the RSS of a
running worker, which must stay flat (the broker holds delayed tasks, not the worker).

Against a local RabbitMQ (it reads figures with ``rabbitmqctl``). Run it on a vhost of its
own: at the end it PURGES the vhost's delay levels (``taskell.delay.*``), dropping every task
still delayed there, so the 100,000 never fire::

    rabbitmqctl add_vhost bench && rabbitmqctl set_permissions -p bench guest '.*' '.*' '.*'
    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench .venv/bin/python -m bench.bench_delay_memory

The tasks are delayed 30 minutes into a queue no worker reads (``taskell.bench.delayed``);
a demo worker runs meanwhile on the usual queues. Figures: the delay levels' own memory
(``rabbitmqctl list_queues memory``, per queue, so other vhosts do not count), the node's
memory before and after (noisier: the node serves everyone), and the worker's RSS before the
submissions, right after, and after ``--wait`` seconds, as ratios to its RSS before.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]

import taskell
from bench._common import URL, proc_status, run_info, save, start_worker, stop_worker
from generated.demo.models import SQUARE

TARGET = "taskell.bench.delayed"
DELAY = 30 * 60.0


def ctl(*args: str) -> Any:
    out = subprocess.run(
        ["rabbitmqctl", *args, "--formatter", "json"], capture_output=True, text=True, check=True, timeout=120
    )
    return json.loads(out.stdout)


def level_figures(vhost: str) -> dict[str, int]:
    rows = ctl("list_queues", "-p", vhost, "name", "messages", "memory")
    levels = [r for r in rows if str(r["name"]).startswith("taskell.delay.")]
    return {
        "messages": sum(int(r["messages"] or 0) for r in levels),
        "memory_bytes": sum(int(r["memory"] or 0) for r in levels),
    }


def node_memory() -> int:
    return int(ctl("status")["memory"]["total"]["rss"])


def purge_levels(vhost: str) -> int:
    names = [
        r["name"]
        for r in ctl("list_queues", "-p", vhost, "name")
        if str(r["name"]).startswith("taskell.delay.")
    ]
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    removed = 0
    try:
        channel = connection.channel()
        for name in [*names, TARGET]:
            removed += channel.queue_purge(name).method.message_count
    finally:
        connection.close()
    return removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to watch the worker after")
    parser.add_argument("--out", default=None, help="write the JSON here too")
    a = parser.parse_args()
    vhost = urllib.parse.unquote(urllib.parse.urlparse(URL).path[1:] or "/") or "/"
    spec = dataclasses.replace(SQUARE, queue=TARGET)
    result: dict[str, Any] = {
        "benchmark": "bench_delay_memory",
        **run_info(),
        "tasks": a.tasks,
        "delay_s": DELAY,
    }
    with taskell.connect(URL) as conn:
        worker = start_worker(conn, "examples.worker:handlers", parallelism=4)
        try:
            delayed = conn.options(delay=DELAY)
            delayed.submit(spec, {"x": 0})  # declares the levels and the target queue
            conn.flush(60)
            time.sleep(2)
            rss_before = proc_status(worker.pid)["VmRSS"]
            levels_before, node_before = level_figures(vhost), node_memory()
            started = time.monotonic()
            for i in range(1, a.tasks):
                delayed.submit(spec, {"x": i})  # handles stay pending: the tasks are purged
            conn.flush(600)
            result["submit_s"] = round(time.monotonic() - started, 1)
            time.sleep(5)  # let the levels settle
            levels_after, node_after = level_figures(vhost), node_memory()
            rss_after = proc_status(worker.pid)["VmRSS"]
            time.sleep(a.wait)
            rss_later = proc_status(worker.pid)["VmRSS"]
        finally:
            stop_worker(worker)
            result["purged"] = purge_levels(vhost)
    held = levels_after["messages"] - levels_before["messages"]
    result.update(
        held_in_levels=held,
        levels_memory_mb=round(levels_after["memory_bytes"] / 2**20, 1),
        levels_memory_bytes_per_task=round(
            (levels_after["memory_bytes"] - levels_before["memory_bytes"]) / max(1, held), 1
        ),
        node_rss_mb_before=round(node_before / 2**20, 1),
        node_rss_mb_after=round(node_after / 2**20, 1),
        worker_rss_kb={"before": rss_before, "after_submit": rss_after, f"after_{a.wait:g}s": rss_later},
        worker_rss_ratio=round(rss_later / rss_before, 3),
    )
    print(json.dumps(result, indent=2))
    save(Path(a.out) if a.out else None, result)


if __name__ == "__main__":
    main()
