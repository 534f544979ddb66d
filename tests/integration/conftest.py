"""Fixtures of the integration tests: they run against a REAL RabbitMQ, never the memory broker.

The broker URL comes from ``TASKELL_TEST_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/%2F``).
When the broker cannot be reached the tests FAIL if the environment variable ``CI`` is set, and
are skipped (with a message saying why) otherwise.

Fixtures:
    config          a ``taskell.Config`` for the test broker (no file, no environment).
    clean_queues    (autouse) deletes the demo queues before each test, so no test sees
                    another's leftovers; the client / worker under test declares them again.
    amqp            a pika ``BlockingChannel`` for inspecting and publishing raw messages.
    conn            a ``taskell.Connection`` to the test broker, closed after the test.
    worker          an in-process ``taskell.Worker`` over ``registry(Impl())`` with
                    parallelism 4, running in the background (``with Worker(...)``).
    start_worker    factory: ``start_worker(parallelism=1, impl=None)`` starts another
                    in-process worker, stopped at teardown.
    spawn_worker    factory: ``spawn_worker(parallelism=1, target=...)`` starts ``taskell
                    worker examples.worker:handlers`` (or ``target``) as a subprocess and
                    returns once it consumes; each is stopped by its PID at teardown.
    taskell_cli     runs the ``taskell`` command line (bounded) against the test broker.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

import taskell
from examples.worker import Impl
from generated.demo import registry
from tests.support import (
    ROOT,
    TASKELL,
    URL,
    RunCli,
    SpawnWorker,
    StartWorker,
    blocking_connection,
    cli_env,
    stop_process,
    wait_consuming,
)

DEMO_QUEUES = ("taskell.q1", "taskell.q2", "taskell.default", "taskell.dead")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def broker() -> str:
    """The test broker's URL, once it is known to answer; fails under CI, else skips."""
    try:
        blocking_connection().close()
    except Exception as exc:
        message = f"RabbitMQ not reachable at {URL} (set TASKELL_TEST_URL): {exc!r}"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return URL


@pytest.fixture
def config(broker: str) -> taskell.Config:
    return taskell.Config.from_url(broker)


@pytest.fixture(autouse=True)
def clean_queues(broker: str) -> None:
    """Delete the demo queues (and whatever they hold) before each test."""
    connection = blocking_connection()
    try:
        channel = connection.channel()
        for queue in DEMO_QUEUES:
            channel.queue_delete(queue)
    finally:
        connection.close()


@pytest.fixture
def amqp(broker: str) -> Iterator[Any]:
    """A pika ``BlockingChannel`` on the test broker (pika is untyped, hence ``Any``)."""
    connection = blocking_connection()
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


@pytest.fixture
def conn(config: taskell.Config) -> Iterator[taskell.Connection]:
    with taskell.connect(config=config) as connection:
        yield connection


@pytest.fixture
def start_worker(config: taskell.Config) -> Iterator[StartWorker]:
    """``start_worker(parallelism=1, impl=None)``: an in-process worker running in the background."""
    with ExitStack() as stack:

        def start(parallelism: int = 1, impl: Any = None) -> taskell.Worker:
            worker = taskell.Worker(
                registry(impl if impl is not None else Impl()), config, parallelism=parallelism
            )
            stack.enter_context(worker)  # __exit__ (stop) runs at teardown, after the bounded stop
            stack.callback(worker.stop, 20.0)
            return worker

        yield start


@pytest.fixture
def worker(start_worker: StartWorker) -> taskell.Worker:
    """An in-process worker for every demo task, parallelism 4."""
    return start_worker(parallelism=4)


@pytest.fixture
def spawn_worker(config: taskell.Config, tmp_path: Path) -> Iterator[SpawnWorker]:
    """``spawn_worker(parallelism=1, target="examples.worker:handlers")``: ``taskell worker
    TARGET`` in a subprocess, returned once it answers ``inspect`` (so it consumes); stopped by
    its PID at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(parallelism: int = 1, target: str = "examples.worker:handlers") -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"worker-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [TASKELL, "worker", target, "--parallelism", str(parallelism)],
                cwd=ROOT,
                env=cli_env(URL),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        wait_consuming(config, [(proc, log_path)])
        return proc

    try:
        yield spawn
    finally:
        for proc in procs:
            stop_process(proc)


@pytest.fixture
def taskell_cli(broker: str) -> RunCli:
    """``taskell_cli(*args, url=None)``: run the ``taskell`` command in the repository root with
    ``TASKELL_URL`` (the test broker unless ``url`` is given); at most 60 s."""

    def run(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TASKELL, *args],
            check=False,
            cwd=ROOT,
            env=cli_env(url or broker),
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run
