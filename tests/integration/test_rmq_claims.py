"""Issue 16, coverage gaps: claims of the README and docs/ that no test checked, each on the
real broker. Where a claim already had a test elsewhere, that test is named in the issue's
note instead of repeated here."""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlparse

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from examples.worker import Impl
from generated.demo import SLEEP, SQUARE, SUM, Client, registry
from tests.support import (
    RESULT_TIMEOUT,
    ROOT,
    TASKELL,
    URL,
    SpawnWorker,
    StartWorker,
    cli_env,
    stop_process,
    wait_consuming,
    wait_until,
)

VHOST = unquote(urlparse(URL).path[1:]) or "/"  # the test broker's vhost


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def queue_exists(name: str) -> bool:
    # Listed, not declared: a passive declare counts as a use and restarts a queue's expiry.
    return name in rabbitmqctl("list_queues", "-p", VHOST, "name").split()


# Stopping a worker: "A second signal exits at once (status 1); tasks not yet acknowledged are
# delivered again." (docs/operations.md, Stopping a worker)


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_signal_exits_the_draining_worker_at_once(
    conn: taskell.Connection, spawn_worker: SpawnWorker, amqp: Any, second: signal.Signals
) -> None:
    proc = spawn_worker(parallelism=1)
    handle = Client(conn).sleep(seconds=60.0)  # outlives the test; shutdown_grace is 60 s
    wait_until(lambda: handle.latest_progress is not None, 20, "the worker started the task")

    os.kill(proc.pid, signal.SIGTERM)
    # The first signal was taken (the worker stopped consuming) and did not end the process:
    # it drains, waiting for the running task.
    wait_until(
        lambda: amqp.queue_declare(SLEEP.queue, passive=True).method.consumer_count == 0,
        10,
        "the worker cancelled its consumer after the first signal",
    )
    time.sleep(1.0)
    assert proc.poll() is None, f"the first signal ended the worker (status {proc.returncode})"

    sent = time.monotonic()
    os.kill(proc.pid, second)
    proc.wait(10)
    took = time.monotonic() - sent
    assert proc.returncode == 1 and took < 2.0, (proc.returncode, took)
    # The task was never acknowledged: it is back in its queue, marked redelivered.
    wait_until(
        lambda: amqp.queue_declare(SLEEP.queue, passive=True).method.message_count == 1,
        10,
        "the unacknowledged task went back to its queue",
    )
    method, props, _ = amqp.basic_get(SLEEP.queue, auto_ack=True)
    assert method.redelivered and props.message_id == handle.id


# "A second reply for the same task is ignored: a client sees one outcome per task."
# (docs/operations.md, Guarantees; docs/wire.md: "after a redelivery a second one may arrive")


def forge_reply(amqp: Any, reply_queue: str, task_id: str, kind: str, body: bytes) -> None:
    """Publish a reply as a worker does (docs/wire.md, Replies)."""
    props = pika.BasicProperties(
        type=kind, correlation_id=task_id, content_type="application/json", delivery_mode=2
    )
    amqp.basic_publish("", reply_queue, body, props, mandatory=True)


def test_a_second_reply_for_the_same_task_is_ignored(
    conn: taskell.Connection, worker: taskell.Worker, amqp: Any
) -> None:
    client = Client(conn)
    handle = client.square(x=3)
    wait_until(handle.done, RESULT_TIMEOUT, "the first reply arrived")
    # What a redelivered task's second run would send, then something else entirely.
    forge_reply(amqp, conn.reply_queue, handle.id, "result", b"100")
    failed = {"error_type": "ValueError", "message": "forged", "traceback": ""}
    forge_reply(amqp, conn.reply_queue, handle.id, "failed", json.dumps(failed).encode())
    # Replies arrive in order: once this one is here, the forged ones were handled.
    assert client.square(x=4).result(timeout=RESULT_TIMEOUT) == 16
    assert handle.result(timeout=0) == 9


def test_a_second_reply_waiting_for_attach_is_ignored(config: taskell.Config, amqp: Any) -> None:
    # A named results queue holds the replies of a task nobody attached to yet: both are
    # replayed into the handle at attach, and the first one counts.
    results = f"taskell.reply.cover-{uuid.uuid4().hex[:8]}"
    task_id = str(uuid.uuid4())
    try:
        with taskell.connect(config=config, results=results) as conn:
            forge_reply(amqp, results, task_id, "result", b"81")
            forge_reply(amqp, results, task_id, "result", b"100")
            wait_until(lambda: len(conn._unclaimed.get(task_id, [])) == 2, 10, "both replies held for attach")
            handle = taskell.attach(conn, SQUARE, task_id)
            assert handle.result(timeout=RESULT_TIMEOUT) == 81
    finally:
        amqp.queue_delete(results)


# "password: never shown in logs, errors or `repr`" (docs/config.md); "Passwords never appear
# in logs, errors or `repr`" (docs/operations.md, Security)


def test_passwords_never_reach_logs_errors_or_reprs(
    broker: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    user, password = f"cover-{uuid.uuid4().hex[:8]}", f"pw{uuid.uuid4().hex}"
    wrong = f"pw{uuid.uuid4().hex}"  # refused: must not be echoed either
    base = "amqp://{user}:{password}@127.0.0.1:{port}/" + quote(VHOST, safe="")
    url = base.format(user=user, password=password, port=5672)
    rabbitmqctl("add_user", user, password)
    seen: list[str] = []  # every text a user could see, besides the captured logs
    try:
        rabbitmqctl("set_permissions", "-p", VHOST, user, ".*", ".*", ".*")
        caplog.set_level(logging.DEBUG)
        config = taskell.Config.load(None, env={}, url=url, connect_timeout=5)
        seen += [repr(config), str(config), config.masked_url()]
        worker = taskell.Worker(registry(Impl()), config)
        with worker, taskell.connect(config=config) as conn:
            assert Client(conn).square(x=5).result(timeout=RESULT_TIMEOUT) == 25
            # Reconnecting: the broker drops every connection of the user.
            assert close_connections_of(user) >= 2
            transports: list[Any] = [conn._transport, worker._transport]
            wait_until(lambda: all(t._generation >= 1 for t in transports), 30, "both reconnected")
            assert Client(conn).square(x=6).result(timeout=RESULT_TIMEOUT) == 36
            seen += [repr(conn), repr(worker), json.dumps(conn.inspect(wait=0.5))]
        # Failing: a wrong password, and a port where nothing listens.
        for bad in (
            base.format(user=user, password=wrong, port=5672),
            base.format(user=user, password=password, port=1),
        ):
            with pytest.raises(taskell.BrokerUnavailable) as info:
                taskell.connect(config=taskell.Config.load(None, env={}, url=bad, connect_timeout=5))
            seen.append(str(info.value))
        # The command line at DEBUG: a worker across a reconnect, one refused, and inspect.
        seen.append(cli_worker_log(url, user, tmp_path / "worker.log"))
        refused = run_cli(
            base.format(user=user, password=wrong, port=5672),
            "worker",
            "examples.worker:handlers",
            "--log-level",
            "DEBUG",
        )
        assert refused.returncode == 3, refused
        inspect = run_cli(url, "inspect", "--wait", "0.5")
        assert inspect.returncode == 0, inspect
        seen += [refused.stdout, refused.stderr, inspect.stdout, inspect.stderr]
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_user", user], capture_output=True, timeout=60, check=False
        )
    logs = caplog.text
    # The capture saw the events whose logs matter: the reconnects and the refusals.
    assert "reconnected" in logs and "ACCESS_REFUSED" in "\n".join(seen) + logs, logs
    for secret in (password, wrong):
        leaks = [text for text in [logs, *seen] if secret in text]
        assert leaks == [], f"password in: {leaks}"


def close_connections_of(user: str) -> int:
    """Close every broker connection of ``user``; how many there were."""
    listed = rabbitmqctl("list_connections", "pid", "user").splitlines()
    pids = [pid for pid, _, who in (line.partition("\t") for line in listed) if who == user]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "test"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    return len(pids)


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TASKELL, *args], cwd=ROOT, env=cli_env(url), capture_output=True, text=True, timeout=60, check=False
    )


def cli_worker_log(url: str, user: str, log_path: Path) -> str:
    """Run ``taskell worker --log-level DEBUG``, make it reconnect once, stop it; its output."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [TASKELL, "worker", "examples.worker:handlers", "--log-level", "DEBUG"],
            cwd=ROOT,
            env=cli_env(url),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_consuming(taskell.Config.from_url(url), [(proc, log_path)])
        assert close_connections_of(user) >= 1
        wait_until(
            lambda: "reconnected" in log_path.read_text(errors="replace"), 30, "the CLI worker reconnected"
        )
    finally:
        stop_process(proc)
    assert proc.returncode == 0, log_path.read_text(errors="replace")
    return log_path.read_text(errors="replace")


# "Reply queues are durable, named, and expire after 10 unused minutes" (docs/operations.md,
# Guarantees); docs/wire.md: `x-expires: 600000`.


def queue_arguments(name: str) -> dict[str, Any]:
    listed = json.loads(
        rabbitmqctl("list_queues", "-p", VHOST, "name", "durable", "arguments", "--formatter", "json")
    )
    for queue in listed:
        if queue["name"] == name:
            return {"durable": queue["durable"], **{key: value for key, _, value in queue["arguments"]}}
    raise AssertionError(f"queue {name} not on the broker: {listed}")


def test_a_private_reply_queue_expires_once_unused(
    config: taskell.Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    with taskell.connect(config=config) as conn:
        assert queue_arguments(conn.reply_queue) == {"durable": True, "x-expires": 600_000}
    # The same with a short expiry: a live client's queue is in use (it consumes it) and stays;
    # once the client is gone it stays until unused that long, then the broker deletes it.
    monkeypatch.setattr("taskell.connection.REPLY_QUEUE_EXPIRES_MS", 4000)
    with taskell.connect(config=config) as conn:
        assert queue_arguments(conn.reply_queue)["x-expires"] == 4000
        time.sleep(5)
        assert queue_exists(conn.reply_queue), "the reply queue of a live client expired"
        reply_queue = conn.reply_queue
    assert queue_exists(reply_queue), "deleted with the client, not by its expiry"
    wait_until(lambda: not queue_exists(reply_queue), 30, "the unused reply queue expired")


# "max_payload_bytes: largest body sent or accepted; larger submissions raise PayloadError"
# (docs/config.md); "enforced when sending and when receiving" (docs/operations.md, Security)


def test_a_submission_over_max_payload_bytes_raises_and_sends_nothing(broker: str, amqp: Any) -> None:
    numbers = list(range(200))
    limit = len(json.dumps({"numbers": numbers}, separators=(",", ":")))  # the body as sent
    config = taskell.Config.load(None, env={}, url=broker, max_payload_bytes=limit)
    with taskell.connect(config=config) as conn:
        client = Client(conn)
        fits = client.sum(numbers=numbers)  # exactly the limit
        with pytest.raises(taskell.PayloadError, match="over max_payload_bytes") as info:
            client.sum(numbers=[*numbers, 1])
        assert "demo.sum" in str(info.value) and str(limit + 2) in str(info.value)
        with pytest.raises(taskell.PayloadError, match="over max_payload_bytes"):
            conn.submit_json(SUM, json.dumps({"numbers": [*numbers, 1]}))
        conn.flush(RESULT_TIMEOUT)
    assert amqp.queue_declare(SUM.queue, passive=True).method.message_count == 1
    method, props, _ = amqp.basic_get(SUM.queue, auto_ack=True)
    assert method is not None and props.message_id == fits.id


# "an unroutable or refused submission is an error, never a silent loss" (docs/wire.md);
# Connection.submit: "a refused or unroutable submission makes result() raise BrokerUnavailable"


def test_an_unroutable_submission_fails_its_handle(conn: taskell.Connection, amqp: Any) -> None:
    client = Client(conn)
    client.square(x=2)
    conn.flush(RESULT_TIMEOUT)  # the client declared the queue, once
    amqp.queue_delete(SQUARE.queue)
    handle = client.square(x=3)  # mandatory, to a queue that is gone
    with pytest.raises(taskell.BrokerUnavailable, match="unroutable"):
        handle.result(timeout=10)
    # The connection lives on: a task for another queue is confirmed and queued.
    other = client.sleep(seconds=0.1)
    conn.flush(RESULT_TIMEOUT)
    assert not other.done()
    assert amqp.queue_declare(SLEEP.queue, passive=True).method.message_count == 1


# taskell.fire (docs/python-api.md, Fire and forget): no reply asked for, persistent and
# confirmed like any other, leaving `with connect()` waits for the confirm.


def test_fire_on_rabbitmq_runs_the_task_and_asks_for_no_reply(
    config: taskell.Config, start_worker: StartWorker, amqp: Any
) -> None:
    with taskell.connect(config=config) as conn:
        queued = taskell.fire(Client(conn).square, x=3)
    method, props, body = amqp.basic_get(SQUARE.queue, auto_ack=True)
    assert method is not None and props.message_id == queued
    assert props.reply_to is None and props.delivery_mode == 2 and json.loads(body) == {"x": 3}

    ran: list[tuple[str, int]] = []

    class Recording(Impl):
        def square(self, ctx: taskell.Context[None], x: int) -> int:
            ran.append((ctx.task_id, x))
            return x * x

    start_worker(impl=Recording())
    with taskell.connect(config=config) as conn:
        task_id = taskell.fire(Client(conn).square, x=4)
        assert str(uuid.UUID(task_id)) == task_id and task_id not in conn._handles
        wait_until(lambda: ran == [(task_id, 4)], RESULT_TIMEOUT, "the worker ran the fired task")
        # Acknowledged once run: nothing left in the queue, delivered or not.
        wait_until(lambda: queue_depth(SQUARE.queue) == (0, 0), 10, "the fired task acknowledged")


def queue_depth(name: str) -> tuple[int, int]:
    """(ready, unacknowledged) messages of queue ``name``."""
    columns = ("name", "messages_ready", "messages_unacknowledged")
    listed = json.loads(rabbitmqctl("list_queues", "-p", VHOST, *columns, "--formatter", "json"))
    for queue in listed:
        if queue["name"] == name:
            return queue["messages_ready"], queue["messages_unacknowledged"]
    raise AssertionError(f"queue {name} not on the broker")


# "Progress values are sent at most every 20 ms per task. Values reported faster are coalesced:
# some are skipped, the order always holds, and the last value reported before the result is
# always delivered, before the result." (docs/python-api.md, handles)


class Reporting(Impl):
    """``sum`` reports each index as progress (``pause`` seconds apart) and returns how long
    its loop took, in microseconds; when each value was reported is kept in ``reported``."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause
        self.reported: dict[int, float] = {}

    def sum(self, ctx: taskell.Context[int], numbers: list[int]) -> int:
        started = time.monotonic()
        for i in numbers:
            ctx.progress(i)
            self.reported[i] = time.monotonic()
            if self.pause:
                time.sleep(self.pause)
        return int((time.monotonic() - started) * 1e6)


@pytest.mark.parametrize("pause", [0.0, 0.0005], ids=["tight-loop", "spread-over-about-a-second"])
def test_progress_goes_out_at_most_every_20_ms_and_the_last_value_always(
    conn: taskell.Connection, start_worker: StartWorker, pause: float
) -> None:
    impl = Reporting(pause)
    start_worker(impl=impl)
    count = 1000
    handle = Client(conn).sum(numbers=list(range(count)))
    took = handle.result(timeout=RESULT_TIMEOUT) / 1e6
    received = list(handle.progress())
    assert received[-1] == count - 1, "the last value reported was not delivered"
    assert received == sorted(set(received)), "out of order, or a value sent twice"
    # Sends are 20 ms apart, but for the last one (sent with the result): over the loop's
    # duration at most took / 20 ms + 2 of them.
    interval = 0.02  # as documented
    assert len(received) <= took / interval + 2, (len(received), took)
    if pause:
        assert took > 0.4 and len(received) >= 5, (len(received), took)  # streamed while running
        # When the values sent were reported: consecutive ones about 20 ms apart at least (the
        # second was reported after the first was sent, and sent 20 ms after it).
        times = [impl.reported[value] for value in received[:-1]]  # the last: sent with the result
        gaps = sorted(later - earlier for earlier, later in itertools.pairwise(times))
        assert gaps[len(gaps) // 2] >= 0.9 * interval, gaps
    else:
        assert len(received) <= 3, received


# The README's first command, `scripts/demo`: "generate the example schema, run a worker and a
# client end to end, with progress"; in-memory broker unless TASKELL_URL is set.


@pytest.mark.parametrize("where", ["memory", "rabbitmq"])
def test_scripts_demo_runs_end_to_end(broker: str, where: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKELL_")}
    if where == "rabbitmq":
        env["TASKELL_URL"] = broker
    started = time.monotonic()
    done = subprocess.run(
        [str(ROOT / "scripts" / "demo")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240
    )
    took = time.monotonic() - started
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    expected = [
        "broker: memory://demo" if where == "memory" else "broker: amqp://guest:***@",
        "100%",
        "sum = 1275",
        "square(1275) = 1625625",
        "remote error, as expected: ValueError: this one fails on purpose",
        "typed error, as expected: DiscountTooLarge(discount=2, limit=1)",
        "attempt 1 failed (demo.Unavailable); retried after 1 s",
        "booked: total 15.0000",
        "square(12) = 144, delayed ",
        "demo finished",
    ]
    positions = [output.find(line) for line in expected]
    assert -1 not in positions and positions == sorted(positions), output
    delayed = re.search(r"delayed (\d+\.\d) s", output)
    assert delayed and 1.5 <= float(delayed.group(1)) < 10, output  # asked for 1.5 s: never early
    assert "Traceback" not in output, output
    assert took < 120, f"scripts/demo took {took:.0f} s"
