"""The suite's own node helpers cannot make a kill a silent no-op: killing a node without a PID
file fails, and so does waiting for the death of a process that lives on. No node is started."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.faults._rabbit import NodeError, RabbitNode


def _node(tmp_path: Path) -> RabbitNode:
    return RabbitNode("taskell-never-started", 5799, tmp_path / "node", tmp_path / "home")


def test_killing_a_node_without_a_pid_file_fails(tmp_path: Path) -> None:
    with pytest.raises(NodeError, match=r"no PID in .*: nothing to kill"):
        _node(tmp_path).kill()


def test_waiting_for_a_death_that_does_not_come_fails(tmp_path: Path) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(NodeError, match=re.escape(f"PID {proc.pid} still runs 0.5 s after SIGKILL")):
            _node(tmp_path)._wait_gone(proc.pid, 0.5)
    finally:
        proc.kill()
        proc.wait(10)
    _node(tmp_path)._wait_gone(proc.pid, 0.5)  # gone: returns
