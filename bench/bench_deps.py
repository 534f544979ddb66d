"""Task dependency benchmark (issue 5), against RabbitMQ (TASKELL_URL, default 127.0.0.1).

1. A random DAG of N (1,000) no-op tasks (``square`` / ``total`` of the example worker) on two
   worker subprocesses. Every edge is a data edge (``total(parts=[h1, c, h2])``,
   ``square(x=h)``), so a correct result proves its dependencies' results were there when it
   ran: every node's result is checked against the value computed locally. Compared with the
   same N tasks submitted without edges: overhead per edge = (t_dag - t_flat) / edges.
2. 3-stage chains ``square(x=square(x=square(x=2)))``: the median added latency per hop over
   one plain round trip, ((t_chain - t_round_trip) / 2), over M chains, each measured next to
   a plain round trip.

    .venv/bin/python -m bench.bench_deps [--nodes 1000] [--chains 100] [--parallelism 4]

The join partitions (``taskell.join.0..3``) and the ``taskell.outcomes`` exchange of the
vhost are deleted first, so no join left over by an earlier run fires into this one.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]

import taskell
from bench._common import URL, percentile, run_info, save, start_worker, stop_worker
from generated.demo import Client


@dataclass
class Node:
    kind: str  # "square" or "total"
    constant: int
    deps: list[int]
    expected: int


def random_dag(count: int, seed: int, window: int = 50) -> list[Node]:
    """Node i depends on 0-3 of the ``window`` nodes before it (data edges only)."""
    rng = random.Random(seed)
    nodes: list[Node] = []
    for i in range(count):
        earlier = range(max(0, i - window), i)
        fan_in = min(len(earlier), rng.choices([0, 1, 2, 3], weights=[10, 35, 35, 20])[0])
        deps = rng.sample(earlier, fan_in)
        constant = rng.randrange(1, 100)
        values = [nodes[j].expected for j in deps]
        if len(deps) == 1 and values[0] < 1000 and rng.random() < 0.3:
            nodes.append(Node("square", constant, deps, values[0] ** 2))
        else:
            nodes.append(Node("total", constant, deps, constant + sum(values)))
    return nodes


def submit(demo: Client, nodes: list[Node], *, edges: bool) -> list[taskell.TaskHandle[None, int]]:
    handles: list[taskell.TaskHandle[None, int]] = []
    for node in nodes:
        if not edges:  # the same task kinds, with plain values
            if node.kind == "square":
                handles.append(demo.square(x=node.constant))
            else:
                handles.append(demo.total(parts=[node.constant, *node.deps]))
        elif node.kind == "square":
            handles.append(demo.square(x=handles[node.deps[0]]))
        else:
            refs = [handles[j] for j in node.deps]
            parts: list[int | taskell.Ref[int]] = [*refs[:1], node.constant, *refs[1:]]
            handles.append(demo.total(parts=parts))
    return handles


def run_dag(demo: Client, nodes: list[Node], *, edges: bool) -> float:
    started = time.perf_counter()
    handles = submit(demo, nodes, edges=edges)
    results = [h.result(timeout=120) for h in handles]
    elapsed = time.perf_counter() - started
    if edges:
        wrong = [i for i, (node, got) in enumerate(zip(nodes, results, strict=True)) if got != node.expected]
        if wrong:
            raise AssertionError(f"{len(wrong)} nodes with a wrong result, first: {wrong[0]}")
    return elapsed


def chain_and_round_trip(demo: Client) -> tuple[float, float]:
    started = time.perf_counter()
    assert demo.square(x=3).result(timeout=10) == 9
    round_trip = time.perf_counter() - started
    started = time.perf_counter()
    a = demo.square(x=2)
    b = demo.square(x=a)
    c = demo.square(x=b)
    assert c.result(timeout=10) == 256
    chain = time.perf_counter() - started
    return chain, round_trip


def ms(value: float) -> str:
    return f"{value * 1000:.2f} ms"


def delete_join_state() -> None:
    params = pika.URLParameters(URL)
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        for n in range(4):
            channel.queue_delete(f"taskell.join.{n}")
        channel.exchange_delete("taskell.outcomes")
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--parallelism", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the figures and samples as JSON")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "benchmark": "bench_deps",
        **run_info(),
        "nodes": args.nodes,
        "chains": args.chains,
    }
    result.update(parallelism=args.parallelism, seed=args.seed)
    delete_join_state()
    with taskell.connect(URL) as conn:
        demo = Client(conn)
        workers = [
            start_worker(conn, "examples.worker:handlers", parallelism=args.parallelism) for _ in range(2)
        ]
        try:
            nodes = random_dag(args.nodes, args.seed)
            edge_count = sum(len(node.deps) for node in nodes)
            run_dag(demo, random_dag(100, args.seed + 1), edges=True)  # warm-up (joins declared)
            run_dag(demo, nodes[:100], edges=False)
            flat = [run_dag(demo, nodes, edges=False) for _ in range(3)]
            dag = [run_dag(demo, nodes, edges=True) for _ in range(3)]
            t_flat, t_dag = statistics.median(flat), statistics.median(dag)
            roots = sum(1 for node in nodes if not node.deps)
            print(
                f"{args.nodes}-node random DAG, {edge_count} edges ({roots} roots), 2 workers x "
                f"parallelism {args.parallelism}: every result checked (data edges)"
            )
            print(f"  with edges:    median {t_dag:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in dag)})")
            print(f"  without edges: median {t_flat:.3f} s  (runs: {', '.join(f'{t:.3f}' for t in flat)})")
            print(
                f"  dependency overhead per edge: {ms((t_dag - t_flat) / edge_count)}; "
                f"{args.nodes / t_dag:.0f} tasks/s with edges vs {args.nodes / t_flat:.0f} without"
            )

            for _ in range(10):
                chain_and_round_trip(demo)  # warm-up
            pairs = [chain_and_round_trip(demo) for _ in range(args.chains)]
            chains = [c for c, _ in pairs]
            trips = [r for _, r in pairs]
            per_hop = [(c - r) / 2 for c, r in pairs]
            vs_client = [(c - 3 * r) / 2 for c, r in pairs]
            print(f"3-stage chain square(x=square(x=square(x=2))), {args.chains} chains:")
            print(
                f"  chain median {ms(statistics.median(chains))}, plain round trip median "
                f"{ms(statistics.median(trips))}"
            )
            print(
                f"  added latency per hop over one round trip: median {ms(statistics.median(per_hop))}, "
                f"p90 {ms(percentile(per_hop, 0.90))} (goal < 5 ms)"
            )
            print(f"  vs the client doing 3 round trips itself: {ms(statistics.median(vs_client))} per hop")
            result.update(
                edges=edge_count,
                dag_s=round(t_dag, 4),
                flat_s=round(t_flat, 4),
                dag_runs_s=[round(t, 4) for t in dag],
                flat_runs_s=[round(t, 4) for t in flat],
                hop_p50_ms=round(statistics.median(per_hop) * 1000, 3),
                hop_p90_ms=round(percentile(per_hop, 0.90) * 1000, 3),
                chain_ms=[round(c * 1000, 3) for c in chains],
                round_trip_ms=[round(r * 1000, 3) for r in trips],
            )
        finally:
            for worker in workers:
                stop_worker(worker)
    save(args.out, result)


if __name__ == "__main__":
    main()
