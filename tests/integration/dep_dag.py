"""Random DAGs of ``demo.total`` / ``demo.square`` tasks for the dependency tests.

Node ``i`` either squares one dependency's result (``square(x=h)``) or a constant, or adds a
constant and its dependencies' results (``total(parts=[h1, c, h2])``, the handles placed
around the constant so several list positions are filled), and may have one order-only
dependency (``after=[h]``). Its expected value follows from its dependencies', so a result
proves the right values flowed in.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import taskell
from generated.demo import Client

SQUARE_LIMIT = 1000  # square a dependency only below this (values stay small)


@dataclass
class Node:
    index: int
    kind: str  # "square" or "total"
    constant: int
    data: list[int] = field(default_factory=list)  # data dependencies (node indices)
    after: list[int] = field(default_factory=list)  # order-only dependencies
    expected: int = 0

    @property
    def deps(self) -> list[int]:
        return sorted({*self.data, *self.after})


def random_dag(count: int, seed: int, *, window: int = 40) -> list[Node]:
    """``count`` nodes; each depends on up to 3 of the ``window`` nodes before it (data) and
    maybe one more (order only)."""
    rng = random.Random(seed)
    nodes: list[Node] = []
    for i in range(count):
        earlier = list(range(max(0, i - window), i))
        fan_in = min(len(earlier), rng.choices([0, 1, 2, 3], weights=[15, 35, 30, 20])[0])
        data = rng.sample(earlier, fan_in)
        rest = [j for j in earlier if j not in data]
        after = rng.sample(rest, 1) if rest and rng.random() < 0.3 else []
        constant = rng.randrange(0, 10)
        values = [nodes[j].expected for j in data]
        if len(data) <= 1 and (not values or values[0] < SQUARE_LIMIT) and rng.random() < 0.4:
            node = Node(i, "square", constant, data, after, (values[0] if values else constant) ** 2)
        else:
            node = Node(i, "total", constant, data, after, constant + sum(values))
        nodes.append(node)
    return nodes


def submit_dag(
    demo: Client, nodes: Sequence[Node], *, gate: taskell.Ref[object] | None = None
) -> list[taskell.TaskHandle[None, int]]:
    """Submit every node in order; nodes without dependencies get ``after=[gate]`` if given."""
    handles: list[taskell.TaskHandle[None, int]] = []
    for node in nodes:
        after: list[taskell.Ref[object]] = [handles[j] for j in node.after]
        if gate is not None and not node.deps:
            after.append(gate)
        refs = [handles[j] for j in node.data]
        if node.kind == "square":
            handles.append(demo.square(x=refs[0] if refs else node.constant, after=after))
        else:
            half = len(refs) // 2
            parts: list[int | taskell.Ref[int]] = [*refs[:half], node.constant, *refs[half:]]
            handles.append(demo.total(parts=parts, after=after))
    return handles


def edges(nodes: Sequence[Node]) -> int:
    return sum(len(node.deps) for node in nodes)


def describe(
    nodes: Sequence[Node], handles: Sequence[taskell.TaskHandle[None, int]], gate: str | None = None
) -> dict[str, dict[str, Any]]:
    """``{task id: {"deps": [task ids], "expected": value}}`` (what the checks below take)."""
    spec: dict[str, dict[str, Any]] = {}
    for node, handle in zip(nodes, handles, strict=True):
        deps = [handles[j].id for j in node.deps]
        if gate is not None and not node.deps:
            deps.append(gate)
        spec[handle.id] = {"deps": deps, "expected": node.expected}
    return spec


def check_events(
    spec: Mapping[str, Mapping[str, Any]], events: Sequence[Mapping[str, Any]]
) -> tuple[list[str], int]:
    """Check recorded handler events against ``spec``: every task ended with its expected
    value, and every start of a task came after an end of each of its dependencies.

    Returns (problems, duplicate runs), a duplicate run being a start beyond the first.
    """
    starts: dict[str, list[int]] = {}
    ends: dict[str, list[int]] = {}
    values: dict[str, list[Any]] = {}
    for event in events:
        task_id = str(event["task_id"])
        if event["event"] == "start":
            starts.setdefault(task_id, []).append(int(event["t"]))
        elif event["event"] == "end" and "error" not in event:
            ends.setdefault(task_id, []).append(int(event["t"]))
            values.setdefault(task_id, []).append(event.get("value"))
    problems: list[str] = []
    for task_id, node in spec.items():
        if task_id not in ends:
            problems.append(f"{task_id}: never completed")
            continue
        wrong = [v for v in values[task_id] if v != node["expected"]]
        if wrong:
            problems.append(f"{task_id}: value {wrong[0]} != expected {node['expected']}")
        for dep in node["deps"]:
            if dep not in ends:
                problems.append(f"{task_id} ran but its dependency {dep} never completed")
                continue
            first_end = min(ends[dep])
            early = [t for t in starts.get(task_id, []) if t < first_end]
            if early:
                problems.append(
                    f"{task_id} started {(first_end - min(early)) / 1e6:.3f} ms before its dependency {dep} ended"
                )
    duplicates = sum(len(starts.get(task_id, [])) - 1 for task_id in spec if starts.get(task_id))
    return problems, duplicates
