"""``scripts/rabbitmq`` on a private node: stop stops what start started (the node, and epmd
when none was running), and leaves alone an epmd it found.

Each test gives the script a state directory and an epmd port of its own (``ERL_EPMD_PORT``),
so neither the shared broker nor its epmd is ever seen, let alone stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import _rabbit
from tests.faults._rabbit import RABBIT_BIN, RabbitNode
from tests.support import ROOT

SCRIPT = ROOT / "scripts" / "rabbitmq"
PORT = int(os.environ.get("TASKELL_FAULT_SCRIPT_PORT", "5721"))
EPMD_PORT = PORT + 38000  # 43721, away from the default 4369


@pytest.fixture
def node(fault_dir: Path, request: pytest.FixtureRequest) -> Iterator[RabbitNode]:
    """A node the script starts (not yet started); stopped at teardown if a test left it up."""
    reason = _rabbit.available()
    if reason and os.environ.get("CI"):
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)
    node = RabbitNode(
        f"taskell-script-{os.getpid()}", PORT, fault_dir / request.node.name[:40], fault_dir / "home"
    )
    node.pid_file = node.base / "taskell-rabbitmq.pid"  # where the script has it written
    yield node
    node.stop()
    epmd = _recorded_epmd(node)
    if epmd is not None and _state(epmd) not in ("gone", "Z"):
        os.kill(epmd, signal.SIGTERM)


def _env(node: RabbitNode, epmd_port: int) -> dict[str, str]:
    # Without the advanced config the test nodes get: the script must set it itself.
    own = {k: v for k, v in node.env().items() if k != "RABBITMQ_ADVANCED_CONFIG_FILE"}
    return {
        **own,
        "PATH": f"{RABBIT_BIN}:{os.environ['PATH']}",  # the unwrapped scripts, run as us
        "ERL_EPMD_PORT": str(epmd_port),
        "TASKELL_RABBITMQ_STATE": str(node.base),
    }


def _script(env: dict[str, str], action: str) -> str:
    done = subprocess.run(
        [str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, (
        f"scripts/rabbitmq {action}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    )
    return done.stdout


def _epmd_answers(env: dict[str, str]) -> bool:
    return (
        subprocess.run(["epmd", "-names"], env=env, capture_output=True, timeout=30, check=False).returncode
        == 0
    )


def _recorded_epmd(node: RabbitNode) -> int | None:
    try:
        return int((node.base / "taskell-epmd.pid").read_text())
    except (OSError, ValueError):
        return None


def _state(pid: int) -> str:
    """The process state letter, or ``gone`` (a stopped daemon can stay a zombie: Z)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def test_stop_stops_the_node_and_the_epmd_that_start_started(node: RabbitNode) -> None:
    env = _env(node, EPMD_PORT)
    assert not _epmd_answers(env), f"an epmd already listens on port {EPMD_PORT}"
    assert "rabbitmq: started" in _script(env, "start")
    epmd = _recorded_epmd(node)
    assert epmd is not None, "start did not record the epmd it started"
    assert Path(f"/proc/{epmd}/comm").read_text().strip() == "epmd"
    beam = node.pid
    assert beam is not None and node.alive()
    # scripts/rabbitmq-advanced.config is in effect: a delay level retries what it could not
    # route after 5 s, not RabbitMQ's default 180 s.
    setting = subprocess.run(
        [str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n", node.node, "eval",
         "application:get_env(rabbit, dead_letter_worker_publisher_confirm_timeout)."],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert setting.stdout.strip() == "{ok,5000}", setting

    out = _script(env, "stop")
    assert "rabbitmq: stopped" in out and "epmd: stopped" in out, out
    assert _state(beam) in ("gone", "Z")
    assert _state(epmd) in ("gone", "Z")
    assert not _epmd_answers(env)
    assert _recorded_epmd(node) is None


def test_an_epmd_already_running_is_left_alone(node: RabbitNode) -> None:
    env = _env(node, EPMD_PORT + 1)
    theirs = subprocess.Popen(["epmd"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _epmd_answers(env):
            assert time.monotonic() < deadline, "the test's own epmd did not start"
            time.sleep(0.1)
        _script(env, "start")
        assert _recorded_epmd(node) is None, "start recorded an epmd it did not start"
        out = _script(env, "stop")
        assert "rabbitmq: stopped" in out and "epmd" not in out, out
        assert theirs.poll() is None and _epmd_answers(env), "stop stopped an epmd start had found running"
    finally:
        theirs.terminate()
        theirs.wait(10)
