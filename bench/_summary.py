"""Medians, ranges and paired ratios of a ``bench_others`` run (no broker, no third-party imports:
``bench/readme_tables.py`` and the README test use it too)."""

from __future__ import annotations

import statistics
from typing import Any

TASKELL = "taskell"
TASKELL_AIO = "taskell (async)"
SYSTEMS = (
    "naive pika",
    "pika, same guarantees",
    TASKELL,
    TASKELL_AIO,
    "dramatiq",
    "celery",
)  # the table's order
FIGURES = ("round trip 1", "round trip 4", "drain 1", "drain 4", "latency p50", "latency p99")


def spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """Per system and figure: median, min and max over the repetitions; for every system but
    taskell also ``ratio``: taskell's figure over this system's, per repetition (the two were
    measured in the same repetition), then its median, min and max; and likewise
    ``async_ratio``, the asyncio client's figure over this system's, for every other system."""
    samples: dict[str, list[dict[str, Any]]] = data["samples"]
    out: dict[str, Any] = {}
    for system in sorted(samples, key=lambda s: SYSTEMS.index(s) if s in SYSTEMS else len(SYSTEMS)):
        runs = samples[system]
        figures: dict[str, Any] = {}
        for figure in FIGURES:
            values = [run[figure] for run in runs if figure in run]
            if not values:
                continue
            figures[figure] = spread(values)
            for key, base in (("ratio", TASKELL), ("async_ratio", TASKELL_AIO)):
                ours = samples.get(base)
                if ours is not None and system != base:
                    ratios = [mine[figure] / theirs[figure] for mine, theirs in zip(ours, runs, strict=True)]
                    figures[figure][key] = spread(ratios)
        out[system] = figures
    return {"systems": out}
