"""The asyncio client (``taskell.aio``) against the sync client, in one run on one broker.

    TASKELL_URL=amqp://guest:guest@127.0.0.1:5672/bench \\
        .venv/bin/python -m bench.bench_aio [--count 2000] [--runs 3]

One ``taskell worker examples.worker:handlers --parallelism 4`` subprocess serves both
clients; ``square`` is the no-op task. Figures, each the median of ``--runs`` runs, sync and
async interleaved so that both see the same machine:

1. sequential latency p50 / p99 over ``--count`` calls: ``h.result()`` against ``await h``;
2. round trip throughput at concurrency 1, 4 and 16: ``--count`` tasks in all, each of the
   concurrent callers (threads for sync, coroutines on one loop for async) submitting one and
   waiting for its result before the next.

Ratios are async / sync (above 1: async is faster for throughput, slower for latency).
Results are saved to ``bench/results/aio-<time>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import threading
import time
from typing import Any

import taskell
import taskell.aio
from bench._common import ROOT, URL, latencies, percentile, start_worker, stop_worker
from generated.demo import AsyncClient, Client

CONCURRENCY = (1, 4, 16)


def _call(demo: Client, i: int) -> None:
    demo.square(x=i).result(timeout=60)


def sync_throughput(demo: Client, count: int, concurrency: int) -> float:
    per = count // concurrency

    def caller() -> None:
        for i in range(per):
            demo.square(x=i).result(timeout=60)

    threads = [threading.Thread(target=caller) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per * concurrency / (time.perf_counter() - started)


async def async_throughput(demo: AsyncClient, count: int, concurrency: int) -> float:
    per = count // concurrency

    async def caller() -> None:
        for i in range(per):
            await demo.square(x=i).result(timeout=60)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return per * concurrency / (time.perf_counter() - started)


async def async_latencies(demo: AsyncClient, count: int) -> dict[str, Any]:
    times = []
    for i in range(count):
        started = time.perf_counter()
        await demo.square(x=i)
        times.append(time.perf_counter() - started)
    return {
        "count": count,
        "p50_ms": round(statistics.median(times) * 1000, 3),
        "p99_ms": round(percentile(times, 0.99) * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with taskell.connect(URL) as conn:
        worker = start_worker(conn, "examples.worker:handlers", parallelism=4)
        try:
            demo = Client(conn)
            demo.square(x=1).result(timeout=30)  # warm up: queue declared, worker ready

            async def async_run() -> dict[str, Any]:
                async with taskell.aio.connect(URL) as aconn:
                    ademo = AsyncClient(aconn)
                    await ademo.square(x=1)
                    figures: dict[str, Any] = {"latency": await async_latencies(ademo, args.count)}
                    for c in CONCURRENCY:
                        figures[f"throughput_c{c}"] = await async_throughput(ademo, args.count, c)
                    return figures

            for run in range(args.runs):
                sync: dict[str, Any] = {"latency": latencies(lambda i: _call(demo, i), args.count)}
                for c in CONCURRENCY:
                    sync[f"throughput_c{c}"] = sync_throughput(demo, args.count, c)
                aio = asyncio.run(async_run())
                runs.append({"sync": sync, "aio": aio})
                print(f"run {run + 1}: sync {sync}\n       aio  {aio}", flush=True)
        finally:
            stop_worker(worker)

    def median(side: str, key: str, field: str | None = None) -> float:
        values = [r[side][key][field] if field else r[side][key] for r in runs]
        return float(statistics.median(values))

    summary: dict[str, Any] = {}
    for side in ("sync", "aio"):
        summary[side] = {
            "p50_ms": median(side, "latency", "p50_ms"),
            "p99_ms": median(side, "latency", "p99_ms"),
            **{f"per_s_c{c}": round(median(side, f"throughput_c{c}")) for c in CONCURRENCY},
        }
    summary["ratio_aio_to_sync"] = {
        key: round(summary["aio"][key] / summary["sync"][key], 3) for key in summary["sync"]
    }
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "count": args.count,
        "runs": runs,
        "summary": summary,
    }
    print(json.dumps(summary, indent=2))
    out = ROOT / "bench" / "results" / f"aio-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out}")


if __name__ == "__main__":
    main()
