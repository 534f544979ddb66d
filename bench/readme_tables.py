"""The README's performance tables, generated from committed reference runs (``bench/reference/``).

Each generated part of README.md sits between two comments naming what it is built from::

    <!-- bench:others bench/reference/2026-12-02-bench16/others.json -->
    ... generated ...
    <!-- bench:end -->

Kinds: ``others`` (``bench/bench_others.py``: taskell, both pika baselines, Dramatiq, Celery),
``throughput`` (``bench/bench_throughput.py``: taskell alone, against naive pika), ``cpu``
(``bench/bench_cpu.py``: CPU time per task of each process, against both pika baselines) and
``features`` (one row per file: ``delays.json``, ``delay_memory.json``, ``policies.json``,
``schedules.json``, ``abort.json``, ``deps.json``, ``codegen.json``, by file name).

    .venv/bin/python -m bench.readme_tables            # exit 1 and a diff if README.md is stale
    .venv/bin/python -m bench.readme_tables --write    # regenerate the parts in README.md
    .venv/bin/python -m bench.readme_tables --write --use DIR/others.json --use DIR/abort.json ...

``--use FILE`` first points every part that reads a file of the same name at FILE instead
(``scripts/bench-reference`` does that after a new run). ``tests/unit/test_readme_tables.py`` fails when README.md differs
from this script's output. Pure functions of the JSON files: no broker, no clock.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._summary import FIGURES, SYSTEMS, TASKELL, TASKELL_AIO, summarise

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- bench:(\w+) ([^>]*?) -->\n)(.*?)(<!-- bench:end -->)", re.S)


# Number formats


def rate(value: float) -> str:
    return f"{value:,.0f}"


def ms(value: float) -> str:
    return f"{value:.2f}"


def times(value: float) -> str:
    return f"{value:.2f}×"


def ranged(entry: dict[str, float], fmt: Callable[[float], str]) -> str:
    """Median, then the range over the repetitions (the unit once)."""
    bare = ms if fmt is times else fmt
    return f"{fmt(entry['median'])} ({bare(entry['min'])}–{bare(entry['max'])})"


def load(path: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ROOT / path).read_text())
    return data


def provenance(data: dict[str, Any], path: str) -> str:
    m = data["machine"]
    commit = data["commit"][:10] + (" with uncommitted changes" if data.get("dirty") else "")
    return (
        f"Run of {data['date'][:16].replace('T', ' ')} UTC, commit `{commit}`, {m['cpu']}, "
        f"{m['cpus']} cores, {m['mem_total_kib'] // 1024:,} MiB, shared with other work (load average "
        f"{m['loadavg'][0]:.1f} at the start, {data['loadavg_end'][0]:.1f} at the end); "
        f"raw data: `{path}`."
    )


# others: taskell, both pika baselines, Dramatiq, Celery

HEADS = {
    "round trip 1": "round trip, 1 thread",
    "round trip 4": "round trip, 4 threads",
    "drain 1": "drain, 1 thread",
    "drain 4": "drain, 4 threads",
    "latency p50": "sequential p50",
    "latency p99": "sequential p99",
}


def others(path: str) -> str:
    data = load(path)
    summary = summarise(data)["systems"]
    v = data["versions"]
    names = {"dramatiq": f"Dramatiq {v.get('dramatiq', '?')}", "celery": f"Celery {v.get('celery', '?')}"}
    lines = [
        provenance(data, path),
        f"RabbitMQ {v['rabbitmq']}, Python {data['machine']['python']}, pika {v['pika']}, pydantic "
        f"{v['pydantic']}, Dramatiq {v.get('dramatiq', '-')} (results in Redis), Celery {v.get('celery', '-')}"
        f" (`rpc://` results). {data['tasks']:,} tasks per throughput figure, {data['calls']:,} sequential"
        f" calls; {data['repeat']} repetition(s) of the whole set, the systems in a random order in each."
        " Medians, and in brackets the range over the repetitions; tasks/s, latency in ms:",
        "",
        "| | " + " | ".join(HEADS[f] for f in FIGURES) + " |",
        "|---|" + "---:|" * len(FIGURES),
    ]
    for system, figures in summary.items():
        cells = [ranged(figures[f], ms if f.startswith("latency") else rate) for f in FIGURES]
        lines.append(f"| {names.get(system, system)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "taskell's figure divided by the other system's in the same repetition (tasks/s: above 1× "
        "taskell is faster; latency: above 1× taskell is slower), median and range:",
        "",
        "| taskell ÷ | " + " | ".join(HEADS[f] for f in FIGURES) + " |",
        "|---|" + "---:|" * len(FIGURES),
    ]
    for system, figures in summary.items():
        if system not in (TASKELL, TASKELL_AIO):
            cells = [ranged(figures[f]["ratio"], times) for f in FIGURES]
            lines.append(f"| {names.get(system, system)} | " + " | ".join(cells) + " |")
    if TASKELL_AIO in summary:
        lines += [
            "",
            "The asyncio client's figure divided by the other system's in the same repetition, read"
            " the same way:",
            "",
            f"| {TASKELL_AIO} ÷ | " + " | ".join(HEADS[f] for f in FIGURES) + " |",
            "|---|" + "---:|" * len(FIGURES),
        ]
        for system, figures in summary.items():
            if system != TASKELL_AIO:
                cells = [ranged(figures[f]["async_ratio"], times) for f in FIGURES]
                label = "taskell (sync)" if system == TASKELL else names.get(system, system)
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for system, reason in data.get("skipped", {}).items():
        lines.append(f"\nNot measured: {system} ({reason}).")
    lines += ["", guarantees(summary), "", noise(data, summary)]
    return "\n".join(lines) + "\n"


def guarantees(summary: dict[str, Any]) -> str:
    """What the guarantees cost, and what taskell costs beyond them, in this run's numbers."""
    naive, same = summary.get(SYSTEMS[0]), summary.get(SYSTEMS[1])
    if naive is None or same is None:
        return ""

    def at(entry: dict[str, Any], figure: str) -> str:
        return times(entry[figure]["ratio"]["median"])

    cost = {
        f: same[f]["median"] / naive[f]["median"] for f in ("round trip 1", "round trip 4", "latency p50")
    }
    return (
        f"Pika with taskell's guarantees against naive pika (medians): round trip {times(cost['round trip 1'])}"
        f" at 1 thread and {times(cost['round trip 4'])} at 4, p50 latency {times(cost['latency p50'])}. "
        "taskell against pika with the same guarantees, which is what taskell itself costs: round trip "
        f"{at(same, 'round trip 1')} and {at(same, 'round trip 4')}, p50 latency {at(same, 'latency p50')}. "
        "Against naive pika, which leaves the guarantees out: round trip "
        f"{at(naive, 'round trip 1')} and {at(naive, 'round trip 4')}, p50 latency {at(naive, 'latency p50')}."
    )


def noise(data: dict[str, Any], summary: dict[str, Any]) -> str:
    """How far one figure of one system moved over the repetitions: max / min - 1."""
    spreads = sorted(
        (entry["max"] / entry["min"] - 1, system, figure)
        for system, figures in summary.items()
        for figure, entry in figures.items()
    )
    if data["repeat"] < 2 or not spreads:
        return "One repetition: no spread measured."
    widest = spreads[-1]
    middle = statistics.median(s for s, _, _ in spreads)
    return (
        f"Noise: over the {data['repeat']} repetitions one system's figure moved by {middle:.0%} at the "
        f"median (max ÷ min − 1, over every system and figure), by {widest[0]:.0%} at most ({widest[1]}, "
        f"{HEADS[widest[2]]}). On this shared machine only ratios within one run compare; absolute "
        "figures from another run or machine do not."
    )


# throughput: taskell alone, against naive pika, from bench_throughput


def throughput(path: str) -> str:
    data = load(path)
    v = data["versions"]
    lines = [
        provenance(data, path),
        f"RabbitMQ {v['rabbitmq']}, Python {v['python']}, pika {v['pika']}, pydantic {v['pydantic']}; "
        f"median of {len(data['round trip, 2 workers, parallelism 4']['taskell']['runs'])} runs each, "
        "against naive pika in the same run:",
        "",
        "| figure | taskell | naive pika | taskell ÷ naive pika |",
        "|---|---:|---:|---:|",
    ]

    def runs(side: dict[str, Any]) -> str:
        values = [r["rate"] for r in side["runs"]]
        return f"{rate(side['rate'])}/s ({rate(min(values))}–{rate(max(values))})"

    for label, entry in data.items():
        if label.startswith("payload "):
            t, r = entry["taskell"], entry["raw"]
            kb = entry["bytes"] / 1000
            lines.append(
                f"| round trip, {kb:,.0f} kB of JSON args, parallelism 4 | {runs(t)} | {runs(r)} | {times(t['rate'] / r['rate'])} |"
            )
    two = data["round trip, 2 workers, parallelism 4"]
    lines.append(
        f"| round trip, 2 workers × parallelism 4 | {runs(two['taskell'])} | {runs(two['raw'])} |"
        f" {times(two['taskell']['rate'] / two['raw']['rate'])} |"
    )
    lines.append(
        f"| 2 workers ÷ 1 worker (parallelism 4) | {times(data['scaling, 2 workers / 1 worker (p4)'])} | | |"
    )
    p4 = data["round trip, 1 worker, parallelism 4"]

    def cpu(side: dict[str, Any]) -> str:
        return " / ".join(
            f"{side[k]:.0f}"
            for k in ("server_cpu_us_per_task", "client_cpu_us_per_task", "broker_cpu_us_per_task")
            if k in side
        )

    lines.append(
        f"| CPU µs per task, worker / client / broker (round trip, parallelism 4) | {cpu(p4['taskell'])} |"
        f" {cpu(p4['raw'])} | |"
    )
    for entry in data.get("progress", {}).values():
        work = entry["work_rounds_per_iteration"]
        loop = "a bare loop" if work == 0 else f"a loop doing {work} rounds of work per call"
        lines.append(
            f"| {entry['calls']:,} `ctx.progress()` calls in {loop}: time with, without"
            f" | {entry['with_s']:.3f} s, {entry['without_s']:.3f} s ({entry['overhead_ns_per_call']:.0f} ns per call)"
            f" | | speed {times(entry['ratio'])} |"
        )
    mem = data.get("memory")
    if mem:
        lines.append(
            f"| worker RSS idle → after 1,000 → after {mem['tasks']:,} tasks | {mem['rss_idle_kib'] / 1024:.1f} →"
            f" {mem['rss_after_1000_kib'] / 1024:.1f} → {mem['rss_after_kib'] / 1024:.1f} MiB | | |"
        )
    return "\n".join(lines) + "\n"


# features: one row per reference file of the other benchmarks


def feature_row(path: str) -> str:
    data = load(path)
    name = Path(path).stem
    loadavg = data.get("machine", {}).get("loadavg")
    source = f"[data]({path})" + (f", load {loadavg[0]:.1f}" if loadavg else "")
    if name == "delays":
        return (
            f"| {data['tasks']:,} tasks delayed {data['delays_s'][0]:g}–{data['delays_s'][1]:g} s (random), submitted"
            f" at once: start after due | p50 {data['late_p50_ms']:.0f} ms, p99 {data['late_p99_ms']:.0f} ms, max"
            f" {data['late_max_ms']:.0f} ms; {data['early']} early | {source} |"
        )
    if name == "delay_memory":
        w = data["worker_rss_kb"]
        node = data["node_rss_mb_after"] - data["node_rss_mb_before"]
        return (
            f"| {data['tasks']:,} tasks delayed {data['delay_s'] / 60:g} min: memory of the delay levels; a running"
            f" worker's RSS | {data['levels_memory_mb']:.1f} MB ({data['levels_memory_bytes_per_task']:.0f} bytes per"
            f" task; node RSS +{node:.0f} MB); worker {w['before'] / 1000:.1f} → {w['after_30s'] / 1000:.1f} MB"
            f" | {source} |"
        )
    if name == "policies":
        rates = [s["rate_ratio"] for s in data["samples"]]
        p50s = [s["p50_ratio"] for s in data["samples"]]
        return (
            f"| no-op round trip with `time_limit` + `retry` declared ÷ without, {len(rates)} paired runs"
            f" | throughput {times(statistics.median(rates))} ({times(min(rates))}–{times(max(rates))}), p50"
            f" latency {times(statistics.median(p50s))} ({times(min(p50s))}–{times(max(p50s))}) | {source} |"
        )
    if name == "schedules":
        late, fail, base = data["lateness"], data["failover"], data["baseline_lateness"]
        take = [t * 1000 for t in fail["takeover_s"]]
        ready = [t * 1000 for t in fail["ready_s"]]
        return (
            f"| `taskell scheduler`, `every: 1s`, 2 schedulers: due time to task queued, {data['fires']} fires"
            f" (baseline: a plain timer and a confirmed publish, same run); SIGKILL of the leader: standby leads"
            f" / is ready to fire after | p50 {late['p50_ms']:.1f} ms, p99 {late['p99_ms']:.1f} ms, max"
            f" {late['max_ms']:.1f} ms (baseline p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms:"
            f" p50 {times(late['p50_ms'] / base['p50_ms'])}); leads {min(take):.0f}–{max(take):.0f} ms, ready"
            f" {min(ready):.0f}–{max(ready):.0f} ms ({fail['kills']} kills), {data['duplicates']} duplicates"
            f" | {source} |"
        )
    if name == "abort":
        return (
            f"| abort latency (running task, another process), {data['aborts']} aborts; process pool in"
            f" `time.sleep`, {data['kills']} aborts | median {data['abort_p50_ms']:.1f} ms, p99"
            f" {data['abort_p99_ms']:.1f} ms; max {data['kill_max_ms']:.1f} ms | {source} |\n"
            f"| after {data['leak_aborts']:,} more aborts | RSS {times(data['rss_after_kib'] / data['rss_before_kib'])},"
            f" threads {data['threads_before']} → {data['threads_after']} | {source} |"
        )
    if name == "deps":
        per_edge = (data["dag_s"] - data["flat_s"]) / data["edges"] * 1000
        return (
            f"| {data['nodes']:,}-node random DAG ({data['edges']:,} edges), 2 workers × {data['parallelism']}"
            f" | {data['dag_s']:.2f} s vs {data['flat_s']:.2f} s without edges, {per_edge:.2f} ms per edge"
            f" | {source} |\n"
            f"| 3-stage chain, added latency per hop over one round trip, {data['chains']} chains | median"
            f" {data['hop_p50_ms']:.2f} ms, p90 {data['hop_p90_ms']:.2f} ms | {source} |"
        )
    if name == "borrow":
        own, woken = (data["summary"][side] for side in ("runs the loop itself", "woken by the I/O thread"))

        def paired(key: str) -> str:
            ours, theirs = data[key].values()
            ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
            return times(statistics.median(ratios))

        return (
            f"| a thread waiting for a reply or a task runs the connection's loop itself ÷ is woken by the I/O"
            f" thread (same run, worker parallelism 1): {own['calls']:,} sequential calls each;"
            f" {len(data['drain_samples_per_s']['runs the loop itself'])} paired drains and round trips of"
            f" {data['tasks_per_drain']:,} tasks | p50 {times(own['p50_us'] / woken['p50_us'])}"
            f" ({own['p50_us'] / 1000:.2f} vs {woken['p50_us'] / 1000:.2f} ms), p90"
            f" {times(own['p90_us'] / woken['p90_us'])}; drain {paired('drain_samples_per_s')}, round trip"
            f" {paired('round_trip_samples_per_s')} (medians of the paired ratios) | {source} |"
        )
    if name == "codegen":
        counts = " / ".join(f"{size['tasks']:,}" for size in data["sizes"])
        seconds = " / ".join(f"{size['best_s']:.2f}" for size in data["sizes"])
        return f"| `taskell gen`, {counts} tasks (best of {data['repeat']}) | {seconds} s | {source} |"
    raise ValueError(f"{path}: no row for a file named {name}.json")


def features(paths: str) -> str:
    rows = [feature_row(p) for p in paths.split()]
    return "\n".join(["| figure | measured | raw data |", "|---|---|---|", *rows]) + "\n"


# cpu: CPU time per task of each process (bench/bench_cpu.py)

CPU_FIGURES = {"round trip": "round trip, 1 thread", "sequential": "sequential call"}


def cpu(path: str) -> str:
    data = load(path)
    summary = data["summary"]
    idle = "idle_s" in data  # runs since the idle figure was added
    lines = [
        provenance(data, path),
        f"One worker at parallelism 1 per system; {data['tasks']:,} tasks per round trip, "
        f"{data['calls']:,} sequential calls, {data['repeat']} repetition(s), the systems in a random order "
        "in each. CPU time (user + system, every thread) in µs per task of the client, the worker and "
        "the broker, then their sum; medians over the repetitions, and in brackets the sum's ratio to "
        "that of pika with the same guarantees in the same repetition (median and range)"
        + (
            f"; then the CPU time an idle worker spends per second, over {data['idle_s']:g} s:"
            if idle
            else ":"
        ),
        "",
        "| | "
        + " | ".join(f"{head}: client / worker / broker = sum" for head in CPU_FIGURES.values())
        + (" | idle worker, ms per s |" if idle else " |"),
        "|---|" + "---:|" * (len(CPU_FIGURES) + idle),
    ]
    for name, figures in summary.items():
        cells = []
        for figure in CPU_FIGURES:
            entry = figures[figure]
            parts = " / ".join(f"{entry[part]['median_us']:,.0f}" for part in ("client", "worker", "broker"))
            cell = f"{parts} = {entry['total']['median_us']:,.0f}"
            if "ratio" in entry["total"]:
                cell += f" ({ranged(entry['total']['ratio'], times)})"
            cells.append(cell)
        if idle:
            cells.append(f"{figures['idle worker']['median_ms_per_s']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


KINDS: dict[str, Callable[[str], str]] = {
    "others": others,
    "throughput": throughput,
    "features": features,
    "cpu": cpu,
}


def render(text: str, use: list[str] | None = None) -> str:
    """``text`` with every generated part rebuilt, after replacing each source file that has the
    name of a file in ``use`` by that file."""
    newer = {Path(path).name: path for path in use or []}

    def one(match: re.Match[str]) -> str:
        kind = match.group(2)
        if kind not in KINDS:
            raise ValueError(f"README.md: unknown generated part bench:{kind}")
        source = " ".join(newer.get(Path(path).name, path) for path in match.group(3).split())
        return f"<!-- bench:{kind} {source} -->\n{KINDS[kind](source)}{match.group(5)}"

    return BLOCK.sub(one, text)


def main() -> None:
    parser = argparse.ArgumentParser(description="README performance tables from bench/reference/")
    parser.add_argument("--write", action="store_true", help="rewrite README.md")
    parser.add_argument(
        "--use", action="append", default=[], metavar="FILE", help="read FILE for every file of its name"
    )
    a = parser.parse_args()
    text = README.read_text()
    new = render(text, a.use)
    if a.write:
        README.write_text(new)
        print("README.md regenerated" if new != text else "README.md unchanged")
    elif new != text:
        sys.stdout.writelines(
            difflib.unified_diff(text.splitlines(True), new.splitlines(True), "README.md", "generated")
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
