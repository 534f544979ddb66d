"""Issue 6 on a real RabbitMQ: quorum queues, poison messages under a delivery limit (quorum and
classic), the dead-letters command, reconnecting after the broker drops connections, heartbeats
while a handler blocks, and a client user that cannot consume task queues.

Each test runs in a vhost of its own, created here with rabbitmqctl."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import Client, registry
from tests.support import RESULT_TIMEOUT, ROOT, TASKELL, cli_env, wait_until

BASE = "amqp://{user}:{password}@127.0.0.1:5672/{vhost}"


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def vhost(broker: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh vhost named after the test, deleted afterwards; unique, since other test runs may
    share the broker."""
    name = f"taskell-{uuid.uuid4().hex[:8]}-{request.node.name}"[:60]
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=60, check=False)


def url_for(vhost: str, user: str = "guest", password: str = "guest") -> str:
    return BASE.format(user=user, password=password, vhost=vhost)


def supervise(
    url: str, target: str, env: dict[str, str], until: threading.Event, restarts: list[int]
) -> None:
    """Run ``taskell worker TARGET`` and restart it whenever it dies, until ``until`` is set."""
    while not until.is_set() and len(restarts) < 20:
        proc = subprocess.Popen(
            [TASKELL, "worker", target, "--log-level", "WARNING"],
            cwd=ROOT,
            env={**cli_env(url), **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and not until.is_set():
            until.wait(0.05)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        else:
            restarts.append(proc.returncode)


@pytest.mark.parametrize("queue_type", ["quorum", "classic"])
def test_poison_task_is_dead_lettered_after_the_delivery_limit(vhost: str, queue_type: str) -> None:
    url = url_for(vhost)
    # prefetch 1: a healthy task prefetched beside the poison one would die with its worker too,
    # and count deliveries of its own (the limit counts every redelivery, whatever its cause).
    env = {"TASKELL_QUEUE_TYPE": queue_type, "TASKELL_DELIVERY_LIMIT": "3", "TASKELL_PREFETCH": "1"}
    config = taskell.Config.load(None, env=env, url=url)
    stop, restarts = threading.Event(), list[int]()
    with taskell.connect(config=config) as conn:
        demo = Client(conn)
        poison = demo.fail(message="crash")
        target = "tests.integration.crash_handlers:handlers"
        thread = threading.Thread(target=supervise, args=(url, target, env, stop, restarts))
        thread.start()
        try:
            with pytest.raises(taskell.PayloadError) as info:
                poison.result(timeout=RESULT_TIMEOUT)
            # Submitted afterwards: a task delivered beside the poison one would die with its
            # worker too (quorum prefetch is per queue) and count deliveries of its own.
            assert demo.square(x=7).result(timeout=RESULT_TIMEOUT) == 49
        finally:
            stop.set()
            thread.join(30)
    assert "delivery_limit" in info.value.detail
    assert restarts == [3, 3, 3]  # it started (and killed its worker) exactly delivery_limit times
    listed = subprocess.run(
        [TASKELL, "dead-letters"],
        cwd=ROOT,
        env=cli_env(url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [e["task_id"] for e in entries] == [poison.id]
    assert "delivery_limit" in entries[0]["reason"]


def test_quorum_queues_are_declared_and_work(vhost: str) -> None:
    config = taskell.Config.load(None, env={}, url=url_for(vhost), queue_type="quorum")
    with taskell.Worker(registry(Impl()), config, parallelism=2), taskell.connect(config=config) as conn:
        assert Client(conn).square(x=12).result(timeout=RESULT_TIMEOUT) == 144
    queues = rabbitmqctl("list_queues", "-p", vhost, "name", "type")
    assert "taskell.q1\tquorum" in queues


def test_clients_and_workers_reconnect_when_the_broker_drops_their_connections(vhost: str) -> None:
    config = taskell.Config.load(None, env={}, url=url_for(vhost))
    handles = []
    worker = taskell.Worker(registry(Impl()), config, parallelism=4)
    with worker, taskell.connect(config=config) as conn:
        demo = Client(conn)
        # Each connection the broker drops is lost once by its transport: its generation counts them.
        transports: Any = [conn._transport, worker._transport, worker._control_transport]

        def submit() -> None:
            for i in range(1500):
                handles.append((i, demo.square(x=i)))
                if i % 100 == 0:
                    time.sleep(0.03)  # paced: the connections are dropped mid-run

        def connections() -> set[str]:
            listed = rabbitmqctl("list_connections", "pid", "vhost").splitlines()
            return {pid for pid, _, where in (line.partition("\t") for line in listed) if where == vhost}

        def drop_connections() -> set[str]:
            """Close every connection to the vhost; those that were closed (gone afterwards)."""
            pids = connections()
            for pid in pids:
                subprocess.run(
                    ["rabbitmqctl", "-q", "close_connection", pid, "test"],
                    capture_output=True,
                    timeout=60,
                    check=False,
                )
            return pids - connections()

        submitter = threading.Thread(target=submit)
        submitter.start()
        closed: list[set[str]] = []  # per round that closed something: on a loaded broker a
        deadline = time.monotonic() + 60  # listing can come back without them
        while len(closed) < 3 and time.monotonic() < deadline:
            time.sleep(0.3)  # the pace of the drops
            gone = drop_connections()
            if gone:
                closed.append(gone)
        submitter.join(60)
        assert len(closed) == 3, f"only {len(closed)} rounds closed connections of the vhost"
        wrong = [i for i, handle in handles if handle.result(timeout=RESULT_TIMEOUT) != i * i]
        lost = [t._generation for t in transports]
    assert len(handles) == 1500 and wrong == []
    # The drops really happened: each round's connections are gone from the broker's list, and
    # the client's, the worker's and its control connection were each lost and reopened.
    assert all(n >= 1 for n in lost), f"connections lost (client, worker, control): {lost}"


def test_heartbeats_flow_while_a_handler_blocks(vhost: str) -> None:
    # A one-second heartbeat: a blocked I/O thread would be disconnected within ~2 s.
    config = taskell.Config.load(None, env={}, url=url_for(vhost), heartbeat=1)

    class Blocking(Impl):
        def sleep(self, ctx: taskell.Context[float], seconds: float) -> float:
            time.sleep(seconds)  # in C, holding nothing but its thread
            return seconds

    worker = taskell.Worker(registry(Blocking()), config, parallelism=1)
    with worker, taskell.connect(config=config) as conn:
        assert Client(conn).sleep(seconds=5.0).result(timeout=RESULT_TIMEOUT) == 5.0
        transport: Any = worker._transport
        assert transport._generation == 0, "the worker's connection was dropped and re-established"


def test_a_client_user_cannot_consume_task_queues(vhost: str) -> None:
    # Users are global to the broker: named after the (unique) vhost.
    user, worker_user, password = f"{vhost}-client", f"{vhost}-worker", "s3cret-pw"
    rabbitmqctl("add_user", user, password)
    try:
        # The client permissions documented in the README.
        rabbitmqctl(
            "set_permissions", "-p", vhost, user,
            r"^taskell\.(reply\..*|q1|q2|default|join\..*|outcomes|abort|abort\.log|delay\..*)$",
            r"^(amq\.default|taskell\.(reply\..*|q1|q2|default|join\..*|abort|delay\..*))$",
            r"^(taskell\.reply\..*|taskell\.outcomes|taskell\.delay\..*)$",
        )  # fmt: skip
        rabbitmqctl("add_user", worker_user, password)
        # The worker permissions documented in the README.
        rabbitmqctl(
            "set_permissions", "-p", vhost, worker_user,
            r"^taskell\..*$",
            r"^(amq\.default|taskell\.(control\..*|lease\..*|dead|outcomes|q1|q2|default|delay\..*))$",
            r"^taskell\.(control\..*|lease\..*|join\..*|abort|abort\.log|q1|q2|default|delay\..*)$",
        )  # fmt: skip
        worker_config = taskell.Config.load(None, env={}, url=url_for(vhost, worker_user, password))
        client_config = taskell.Config.load(None, env={}, url=url_for(vhost, user, password))
        with taskell.connect(config=client_config) as conn:
            doomed = Client(conn).sleep(seconds=0.1)
            conn.flush(RESULT_TIMEOUT)
            conn.abort(doomed.id)  # recorded on the broker: no worker is up
            with taskell.Worker(registry(Impl()), worker_config):
                assert Client(conn).square(x=5).result(timeout=RESULT_TIMEOUT) == 25
                # Delayed: the client declares the delay levels; the joiner (a worker) publishes
                # a delayed dependent there.
                later = Client(conn.options(delay=0.2))
                assert later.square(x=6).result(timeout=RESULT_TIMEOUT) == 36
                nap = Client(conn).sleep(seconds=0.3)
                assert later.total(parts=[4], after=[nap]).result(timeout=RESULT_TIMEOUT) == 4
                with pytest.raises(taskell.TaskAborted):
                    doomed.result(timeout=RESULT_TIMEOUT)
            assert password not in repr(conn) and password not in repr(client_config)
        params = pika.URLParameters(url_for(vhost, user, password))
        connection = pika.BlockingConnection(params)
        try:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="ACCESS_REFUSED"):
                channel = connection.channel()
                channel.basic_consume("taskell.q1", lambda *args: None)
        finally:
            if connection.is_open:
                connection.close()
    finally:
        for name in (user, worker_user):
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_user", name], capture_output=True, timeout=60, check=False
            )


def test_a_graceful_stop_requeues_what_outlives_the_grace_period(vhost: str) -> None:
    config = taskell.Config.load(None, env={}, url=url_for(vhost), shutdown_grace=0.5)
    with taskell.connect(config=config) as conn:
        first = taskell.Worker(registry(Impl()), config, parallelism=1)
        first.start()
        handle = Client(conn).sleep(seconds=3.0)
        wait_until(lambda: handle.latest_progress is not None, 20, "the task started")
        started = time.monotonic()
        first.stop(timeout=config.shutdown_grace)
        assert time.monotonic() - started < 5, "the stop waited for the task instead of requeueing it"
        assert not handle.done()
        with taskell.Worker(registry(Impl()), config, parallelism=1):
            assert handle.result(timeout=RESULT_TIMEOUT) == 3.0
