"""A client that submits a random DAG and exits at once (test_rmq_deps, client-exits case).

    TASKELL_URL=... python -m tests.integration.dep_client SPEC_JSON COUNT SEED GATE_SECONDS

Every root of the DAG waits (``after=``) for a ``sleep(GATE_SECONDS)`` gate, so nothing of the
DAG has run when this process exits. It writes ``{"gate": id, "tasks": {id: {"deps": [...],
"expected": value}}}`` to SPEC_JSON, leaves ``with taskell.connect()`` (which must make the
DAG safe to finish without it) and exits; the test watches the workers' handler events.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import taskell
from generated.demo import Client
from tests.integration.dep_dag import describe, random_dag, submit_dag


def main(argv: list[str]) -> int:
    out, count, seed, gate_seconds = Path(argv[0]), int(argv[1]), int(argv[2]), float(argv[3])
    nodes = random_dag(count, seed)
    with taskell.connect() as conn:
        demo = Client(conn)
        began = time.time_ns()
        gate = demo.sleep(seconds=gate_seconds)
        handles = submit_dag(demo, nodes, gate=gate)
        spec = {"gate": gate.id, "tasks": describe(nodes, handles, gate=gate.id)}
        submitted = time.time_ns()
        gate_done = gate.done()
        out.write_text(json.dumps(spec), encoding="utf-8")
    closed = time.time_ns()
    report = {"began_ns": began, "submitted_ns": submitted, "closed_ns": closed, "gate_done": gate_done}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
