"""Fixtures of the fault suite: private RabbitMQ nodes the tests may stop, kill and pause.

The shared broker on port 5672 is never used here: tests break brokers, so each run starts
its own on other ports (``TASKELL_FAULT_PORT``, default 5711 for the single node, and
``TASKELL_FAULT_CLUSTER_PORT``, default 5701..5703, for the cluster; distribution ports are
those plus 20000, or the next free one in steps of 100) and stops them by node name and PID at
teardown.

Fixtures:
    private_broker  (session) one node ``taskell-fault-<pid>@localhost``; a test that
                    breaks it must leave it running again (the fixture restarts a dead one).
    vhost           a fresh vhost on ``private_broker`` for one test; its URL.
    cluster         (per test) three nodes joined into one cluster; the test may kill any.
    workers         factory ``workers(env, sleep=0.0)``: a ``Workers`` that spawns worker
                    subprocesses with the ``TASKELL_*`` variables ``env`` (see ``worker_env``);
                    all are killed by PID at teardown.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import _rabbit
from tests.faults._rabbit import RabbitNode
from tests.faults._support import MakeWorkers, Workers

HERE = Path(__file__).parent
PORT = int(os.environ.get("TASKELL_FAULT_PORT", "5711"))
CLUSTER_PORT = int(os.environ.get("TASKELL_FAULT_CLUSTER_PORT", "5701"))
COOKIE = "TASKELLFAULTSUITECOOKIE"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: fault-injection test on private RabbitMQ nodes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def fault_dir() -> Iterator[Path]:
    """Short-pathed scratch directory for the nodes (kept on failure for the logs)."""
    path = Path(tempfile.mkdtemp(prefix="taskell-faults-"))
    _rabbit.prepare_home(path / "home", COOKIE)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def private_broker(fault_dir: Path) -> Iterator[RabbitNode]:
    reason = _rabbit.available()
    if reason:
        _unavailable(reason)
    node = RabbitNode(f"taskell-fault-{os.getpid()}", PORT, fault_dir / "single", fault_dir / "home")
    try:
        node.start()
    except _rabbit.NodeError as exc:
        node.stop()
        _unavailable(f"cannot start a private RabbitMQ node: {exc}\n{node.log_tail()}")
    yield node
    node.stop()


@pytest.fixture
def vhost(private_broker: RabbitNode) -> str:
    """A fresh vhost on the private node (restarted first if a test left it dead); its URL."""
    if not private_broker.alive():
        private_broker.start()
    name = f"t-{uuid.uuid4().hex[:8]}"
    private_broker.add_vhost(name)
    return private_broker.url(name)


@pytest.fixture
def cluster(fault_dir: Path) -> Iterator[list[RabbitNode]]:
    """Three nodes on 127.0.0.1 (ports CLUSTER_PORT..+2) joined into one cluster."""
    reason = _rabbit.available()
    if reason:
        _unavailable(reason)
    base = fault_dir / f"cluster-{uuid.uuid4().hex[:6]}"
    tag = uuid.uuid4().hex[:4]
    nodes = [
        RabbitNode(f"taskell-fc{i}-{tag}", CLUSTER_PORT + i, base / f"n{i}", fault_dir / "home")
        for i in range(3)
    ]
    errors: list[BaseException] = []

    def boot(node: RabbitNode) -> None:
        try:
            node.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(n,)) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(150)
    try:
        if errors:
            raise errors[0]
        for node in nodes[1:]:
            node.join(nodes[0])
    except BaseException:
        _rabbit.stop_all(nodes)
        raise
    yield nodes
    _rabbit.stop_all(nodes, base)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[MakeWorkers]:
    made: list[Workers] = []

    def make(env: dict[str, str], sleep: float = 0.0) -> Workers:
        directory = tmp_path / f"workers-{len(made)}"
        directory.mkdir()
        group = Workers(directory, env, sleep=sleep)
        made.append(group)
        return group

    yield make
    for group in made:
        group.close()
