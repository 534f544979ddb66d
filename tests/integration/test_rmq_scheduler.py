"""``taskell scheduler`` on a real broker: several schedulers submit each due time once, a
SIGKILLed leader hands over without a gap, a leader gone between a submission and its state is
not repeated, inspect shows the leader, SIGTERM exits 0, the demo's cron schedule catches up.

Submissions are counted by a raw consumer of the task queue (no worker runs): each carries
its schedule and due time in headers and a task id derived from them."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from zoneinfo import ZoneInfo

import pika  # type: ignore[import-untyped]
import pytest

import taskell
from generated.demo import SCHEDULES as DEMO_SCHEDULES
from taskell import _wire
from taskell.errors import BrokerUnavailable
from taskell.scheduler import DUE_HEADER, SCHEDULE_HEADER, STATE_QUEUE, _state_message, task_id
from taskell.transport import Message, open_transport
from tests.integration import sched_opts
from tests.support import (
    ROOT,
    TASKELL,
    URL,
    blocking_connection,
    cli_env,
    python_env,
    stop_process,
    wait_until,
)

TASK_QUEUE = "taskell.q1"  # square's queue
VHOST = unquote(urlparse(URL).path[1:]) or "/"  # the test broker's vhost


@pytest.fixture(autouse=True)
def no_state(broker: str) -> Iterator[None]:
    """Each test starts without a scheduler state on the broker, and leaves none."""

    def delete() -> None:
        connection = blocking_connection()
        try:
            connection.channel().queue_delete(STATE_QUEUE)
        finally:
            connection.close()

    delete()
    yield
    delete()


class Schedulers:
    """``taskell scheduler tests.integration.sched_tick`` subprocesses, stopped at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, catch_up: str = "latest", package: str = "tests.integration.sched_tick", **env: str
    ) -> subprocess.Popen[bytes]:
        return self.start([TASKELL, "scheduler", package], catch_up, **env)

    def start(self, command: list[str], catch_up: str = "latest", **env: str) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"scheduler-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**python_env(URL), "TASKELL_SCHEDULE_CATCH_UP": catch_up, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("scheduler-*.log")))


@pytest.fixture
def schedulers(tmp_path: Path) -> Iterator[Schedulers]:
    group = Schedulers(tmp_path)
    try:
        yield group
    finally:
        for proc in group.procs:
            stop_process(proc)


def drain(channel: Any) -> list[tuple[datetime, str, float]]:
    """Every task in the task queue, taken off it: (due time, task id, when it was received)."""
    seen: list[tuple[datetime, str, float]] = []
    while True:
        method, props, _body = channel.basic_get(TASK_QUEUE, auto_ack=True)
        if method is None:
            return seen
        headers = props.headers or {}
        assert headers.get(SCHEDULE_HEADER) == "tick"
        seen.append((datetime.fromisoformat(headers[DUE_HEADER]), props.message_id, time.time()))


def leader_pid(conn: taskell.Connection) -> int | None:
    for answer in conn.inspect(wait=0.5):
        if answer.get("role") == "leader":
            return int(str(answer["scheduler"]).split(":")[-2])
    return None


def schedulers_answering(conn: taskell.Connection) -> list[dict[str, Any]]:
    return [a for a in conn.inspect(wait=1.0) if "scheduler" in a]


def check_once_each(dues: list[datetime]) -> None:
    """No due time twice, none skipped between the first and the last."""
    assert len(dues) == len(set(dues)), f"a due time fired twice: {sorted(dues)}"
    ordered = sorted(dues)
    gaps = [(a, b) for a, b in itertools.pairwise(ordered) if b - a != timedelta(seconds=1)]
    assert not gaps, f"due times skipped: {gaps}"


def collect(amqp: Any, seconds: float) -> list[tuple[datetime, str, float]]:
    """Receive submissions for ``seconds`` s (the queue is polled, never left to fill)."""
    amqp.queue_declare(TASK_QUEUE, durable=True, arguments={"x-queue-type": "classic"})
    seen = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.extend(drain(amqp))
        time.sleep(0.05)
    return seen + drain(amqp)


@pytest.mark.parametrize("count", [2, 3])
def test_several_schedulers_fire_each_due_time_once(
    count: int, schedulers: Schedulers, amqp: Any, conn: taskell.Connection
) -> None:
    for _ in range(count):
        schedulers.spawn()
    wait_until(lambda: leader_pid(conn) is not None, 30, "a scheduler leads")
    wait_until(lambda: len(schedulers_answering(conn)) == count, 30, "every scheduler answers")
    answers = schedulers_answering(conn)
    roles = sorted(str(a.get("role")) for a in answers if "scheduler" in a)
    assert roles == ["leader"] + ["standby"] * (count - 1), answers
    leader = next(a for a in answers if a.get("role") == "leader")
    assert leader["schedules"][0]["name"] == "tick" and leader["schedules"][0]["task"] == "demo.square"
    seconds = 30  # the figure: 30 +- 1 submissions
    start = time.time()
    seen = collect(amqp, seconds)
    dues = [due for due, _, _ in seen]
    check_once_each(dues)
    in_window = [due for due in dues if start < due.timestamp() <= start + seconds]
    assert seconds - 1 <= len(in_window) <= seconds + 1, (len(in_window), schedulers.logs())
    assert len(seen) <= seconds + 3, (len(seen), schedulers.logs())
    assert all(tid == task_id("tick", due) for due, tid, _ in seen)
    for proc in schedulers.procs:
        assert proc.poll() is None, schedulers.logs()


def test_sigkill_of_the_leader_hands_over_without_a_gap(
    schedulers: Schedulers, amqp: Any, conn: taskell.Connection
) -> None:
    for _ in range(2):
        schedulers.spawn()
    wait_until(lambda: leader_pid(conn) is not None, 30, "a scheduler leads")
    seen = collect(amqp, 4)
    pid = leader_pid(conn)
    assert pid is not None
    victim = next(p for p in schedulers.procs if p.pid == pid)
    os.kill(pid, signal.SIGKILL)
    killed_at = time.time()
    assert victim.wait(10) == -signal.SIGKILL
    seen += collect(amqp, 6)
    dues = [due for due, _, _ in seen]
    check_once_each(dues)
    after = sorted((due, received) for due, _, received in seen if due.timestamp() > killed_at)
    assert after, schedulers.logs()
    _, first_received = after[0]
    # The next due time fires within one interval plus the failover time: the kill to the
    # survivor's "is leading" (the broker handed it the state); 0.5 s for its submission.
    survivor = next(i for i, p in enumerate(schedulers.procs) if p.pid != pid)
    log = (schedulers.tmp_path / f"scheduler-{survivor}.log").read_text(errors="replace")
    leading = [line for line in log.splitlines() if " is leading " in line]
    assert leading, schedulers.logs()
    failover = datetime.strptime(leading[-1][:23], "%Y-%m-%d %H:%M:%S,%f").timestamp() - killed_at
    assert -0.1 < failover < 5.0, (failover, schedulers.logs())
    assert first_received - killed_at < 1.0 + max(failover, 0.0) + 0.5, (
        first_received - killed_at,
        failover,
        schedulers.logs(),
    )
    assert len(after) >= 4
    wait_until(lambda: leader_pid(conn) not in (None, pid), 10, "the survivor leads")


def test_sigterm_stops_cleanly_and_the_standby_takes_over(
    schedulers: Schedulers, amqp: Any, conn: taskell.Connection
) -> None:
    first = schedulers.spawn()
    wait_until(lambda: leader_pid(conn) == first.pid, 30, "the first scheduler leads")
    second = schedulers.spawn()
    time.sleep(1.0)
    seen = collect(amqp, 2)
    os.kill(first.pid, signal.SIGTERM)
    assert first.wait(15) == 0, schedulers.logs()
    wait_until(lambda: leader_pid(conn) == second.pid, 10, "the second scheduler leads")
    seen += collect(amqp, 3)
    check_once_each([due for due, _, _ in seen])
    assert len(seen) >= 4


def test_a_task_queue_deleted_under_the_leader_is_declared_again(
    schedulers: Schedulers, amqp: Any, conn: taskell.Connection
) -> None:
    """The task queue deleted while a scheduler leads: its next submission declares it again,
    rather than reaching only the state queue (its copy there) and counting as fired."""

    def task_queue_exists() -> bool:
        connection = blocking_connection()
        try:
            connection.channel().queue_declare(TASK_QUEUE, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if connection.is_open:
                connection.close()

    leader = schedulers.spawn()
    wait_until(lambda: leader_pid(conn) == leader.pid, 30, "the scheduler leads")
    assert collect(amqp, 2), "nothing fired before the deletion"
    amqp.queue_delete(TASK_QUEUE)
    assert not task_queue_exists()
    wait_until(task_queue_exists, 5, "the task queue is declared again")
    seen = collect(amqp, 3)
    assert len(seen) >= 2, schedulers.logs()
    check_once_each([due for due, _, _ in seen])
    assert leader.poll() is None


def test_list_prints_the_schedules_without_a_broker(schedulers: Schedulers) -> None:
    result = subprocess.run(
        [TASKELL, "scheduler", "tests.integration.sched_tick", "--list"],
        cwd=ROOT,
        env=cli_env("amqp://guest:guest@127.0.0.1:1/"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "tick: task demo.square, every 1 s"
    dues = [datetime.fromisoformat(line.strip()) for line in lines[1:4]]
    assert [b - a for a, b in itertools.pairwise(dues)] == [timedelta(seconds=1)] * 2


def test_inspect_shows_the_leader_first_and_each_schedules_next_due_time(
    schedulers: Schedulers, conn: taskell.Connection
) -> None:
    # generated.demo's schedules (every minute; nightly in Warsaw): next due times a few
    # seconds of inspecting cannot blur, unlike an every-second one.
    for _ in range(2):
        schedulers.spawn(package="generated.demo")
    wait_until(lambda: leader_pid(conn) is not None, 30, "a scheduler leads")
    wait_until(lambda: len(schedulers_answering(conn)) == 2, 30, "every scheduler answers")
    before = datetime.now(UTC)
    result = subprocess.run(
        [TASKELL, "inspect", "--wait", "1"],
        cwd=ROOT,
        env=cli_env(URL),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stderr
    answers = [a for a in json.loads(result.stdout) if "scheduler" in a]
    assert [a["role"] for a in answers] == ["leader", "standby"], answers
    assert {int(a["scheduler"].split(":")[-2]) for a in answers} == {p.pid for p in schedulers.procs}
    # The next due time after the moment it answered (one of the two if a due time fell between).
    expected = {
        (s.name, s.task.name): {_wire.utc_iso(next(s.due_after(t))) for t in (before, after)}
        for s in DEMO_SCHEDULES
    }
    for answer in answers:
        shown = {(s["name"], s["task"]): s["next_due"] for s in answer["schedules"]}
        assert shown.keys() == expected.keys(), answer
        assert all(due in expected[key] for key, due in shown.items()), (shown, expected)


def test_a_scheduled_task_carries_its_tasks_options_and_dash_c_is_read(
    schedulers: Schedulers, tmp_path: Path
) -> None:
    """The task's own queue (declared with priorities), priority and expiry, as a client's
    submission of the task carries them. The broker is named only in the ``-c`` file, not in
    TASKELL_URL; the ``./taskell.toml`` it must take precedence over names a closed port."""
    queue = sched_opts.QUEUE
    config_file = tmp_path / "scheduler.toml"
    config_file.write_text(f'[taskell.rabbitmq]\nurl = "{URL}"\n')
    (tmp_path / "taskell.toml").write_text('[taskell.rabbitmq]\nurl = "amqp://guest:guest@127.0.0.1:1/"\n')
    env = {k: v for k, v in python_env(URL).items() if k != "TASKELL_URL"}
    connection = blocking_connection()
    channel = connection.channel()
    channel.queue_delete(queue)
    with open(tmp_path / f"scheduler-{len(schedulers.procs)}.log", "wb") as log:
        command = [TASKELL, "scheduler", "tests.integration.sched_opts", "-c", str(config_file)]
        schedulers.procs.append(
            subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        )
    got: list[tuple[Any, bytes]] = []

    def take() -> bool:
        nonlocal channel
        try:
            method, props, body = channel.basic_get(queue, auto_ack=True)
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet
            channel = connection.channel()
            return False
        if method is not None:
            got.append((props, body))
        return bool(got)

    try:
        wait_until(take, 30, "a scheduled task in its own queue")
        props, body = got[0]
        headers = props.headers or {}
        due = datetime.fromisoformat(headers[DUE_HEADER])
        assert (headers[SCHEDULE_HEADER], props.type, json.loads(body)) == (
            "tick_options",
            "demo.square",
            {"x": 3},
        )
        assert props.message_id == task_id("tick_options", due)
        assert props.priority == 7
        # Expiry: 90 s from its submission, which follows its due time within a few seconds.
        expires_at = datetime.fromisoformat(headers[_wire.EXPIRES_HEADER])
        assert 90 <= (expires_at - due).total_seconds() <= 95, (due, expires_at)
        listed = rabbitmqctl("list_queues", "-p", VHOST, "name", "arguments")
        line = next(row for row in listed.splitlines() if row.startswith(queue + "\t"))
        assert "x-max-priority" in line, line
    finally:
        for proc in schedulers.procs:
            stop_process(proc)
        channel = connection.channel()
        channel.queue_delete(queue)
        connection.close()


@pytest.mark.parametrize("policy", ["latest", "all", "none"])
def test_catch_up_of_due_times_missed_while_no_scheduler_ran(
    policy: str, schedulers: Schedulers, amqp: Any
) -> None:
    # A state left by a scheduler that stopped 8 s ago.
    done_until = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=8)
    state = _state_message(3, {"tick": done_until})
    amqp.queue_declare(
        STATE_QUEUE, durable=True, arguments={"x-single-active-consumer": True, "x-queue-type": "classic"}
    )
    amqp.basic_publish("", STATE_QUEUE, state.body, pika.BasicProperties(delivery_mode=2, type=state.type))
    started = datetime.now(UTC)
    schedulers.spawn(policy)
    seen = collect(amqp, 6)
    dues = sorted(due for due, _, _ in seen)
    check_once_each(dues)
    assert dues, schedulers.logs()
    if policy == "all":  # each missed one, in order
        assert dues[0] == done_until + timedelta(seconds=1), schedulers.logs()
    elif policy == "latest":  # the latest missed one only (due before the scheduler started)
        assert started - timedelta(seconds=1) <= dues[0] <= started + timedelta(seconds=5), schedulers.logs()
        assert dues[0] > done_until + timedelta(seconds=3)
    else:  # none missed: the first is due after the scheduler took over
        assert dues[0] > started, schedulers.logs()


def test_a_leader_gone_between_a_submission_and_its_state_does_not_repeat_it(
    schedulers: Schedulers, amqp: Any, conn: taskell.Connection
) -> None:
    # The leader's submission is confirmed, the state after it never reaches the broker (as in
    # a broker restart at that moment), and the leader is killed. The standby takes over from
    # the older state and, catching up every missed due time, would submit that one again.
    lossy = schedulers.start([sys.executable, "-m", "tests.integration.sched_lossy"], "all")
    wait_until(lambda: leader_pid(conn) == lossy.pid, 30, "the lossy scheduler leads")
    standby = schedulers.spawn("all")
    wait_until(lambda: any(a.get("role") == "standby" for a in conn.inspect(wait=0.5)), 30, "a standby")
    seen = collect(amqp, 0)

    def fired() -> bool:
        seen.extend(drain(amqp))
        return bool(seen)

    wait_until(fired, 10, "the lossy leader fires")
    wait_until(lambda: "dropped a state" in schedulers.logs(), 5, "its state update is dropped")
    time.sleep(1.5)  # a due time passes while it waits for that confirm in vain
    os.kill(lossy.pid, signal.SIGKILL)
    assert lossy.wait(10) == -signal.SIGKILL
    wait_until(lambda: leader_pid(conn) == standby.pid, 10, "the standby leads")
    seen += collect(amqp, 3)
    dues = [due for due, _, _ in seen]
    assert len(dues) >= 4, schedulers.logs()
    check_once_each(dues)


def test_the_demo_cron_schedule_catches_up_on_the_broker(schedulers: Schedulers, amqp: Any) -> None:
    # generated.demo as it is: nightly_sum (cron "0 3 * * *" in Europe/Warsaw) and square_seven
    # (every minute), left by a scheduler that stopped 3 days and 3.5 minutes ago.
    nightly, minutely = (
        next(s for s in DEMO_SCHEDULES if s.name == n) for n in ("nightly_sum", "square_seven")
    )
    now = datetime.now(UTC)
    left = {"nightly_sum": now - timedelta(days=3), "square_seven": now - timedelta(minutes=3, seconds=30)}
    state = _state_message(5, left)
    amqp.queue_declare(
        STATE_QUEUE, durable=True, arguments={"x-single-active-consumer": True, "x-queue-type": "classic"}
    )
    amqp.basic_publish("", STATE_QUEUE, state.body, pika.BasicProperties(delivery_mode=2, type=state.type))
    schedulers.spawn("all", package="generated.demo")
    amqp.queue_declare(TASK_QUEUE, durable=True, arguments={"x-queue-type": "classic"})
    fired: dict[str, list[tuple[datetime, str, str, Any]]] = {"nightly_sum": [], "square_seven": []}

    def take() -> bool:
        while True:
            method, props, body = amqp.basic_get(TASK_QUEUE, auto_ack=True)
            if method is None:
                return len(fired["nightly_sum"]) >= 3 and len(fired["square_seven"]) >= 3
            headers = props.headers or {}
            due = datetime.fromisoformat(headers[DUE_HEADER])
            fired[headers[SCHEDULE_HEADER]].append((due, props.message_id, props.type, json.loads(body)))

    wait_until(take, 30, "the missed due times are fired")
    time.sleep(1)
    take()
    nights = sorted(fired["nightly_sum"])
    # 03:00 in Warsaw is 02:00 UTC in winter and 01:00 in summer; one a day, each once.
    warsaw = ZoneInfo(nightly.timezone)
    assert [d.astimezone(warsaw).time().isoformat() for d, _, _, _ in nights] == ["03:00:00"] * 3
    assert [b[0] - a[0] for a, b in itertools.pairwise(nights)] == [timedelta(days=1)] * 2
    assert nights[0][0] > left["nightly_sum"] and nights[-1][0] <= now
    assert all(t == "demo.sum" and args == {"numbers": [1, 2, 3]} for _, _, t, args in nights)
    assert all(tid == task_id("nightly_sum", d) for d, tid, _, _ in nights)
    minutes = sorted(d for d, _, _, _ in fired["square_seven"])
    assert all(d.second == 0 and d.microsecond == 0 for d in minutes), minutes
    # Each missed minute once, in order, from the first after the state's.
    assert minutes == list(itertools.islice(minutely.due_after(left["square_seven"]), len(minutes)))


def rabbitmqctl(*args: str) -> str:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def own_vhost(broker: str) -> Iterator[str]:
    """A vhost of this test's own, to drop every connection to it."""
    name = f"taskell-sched-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True, timeout=120, check=False)


def test_a_publish_without_replay_never_goes_out_on_a_later_connection(own_vhost: str) -> None:
    # What the scheduler relies on (its timer may fire while its connection is down): a
    # publish made while the connection is down fails instead of going out once reconnected.
    url = f"amqp://guest:guest@127.0.0.1:5672/{own_vhost}"
    transport = open_transport(taskell.Config.from_url(url), name="test-replay")
    queue = "taskell.test.replay"
    during: dict[str, Future[None]] = {}

    def while_down() -> None:  # on the reconnect, before the new connection is ready
        during["once"] = transport.publish(
            "", queue, Message(b"", message_id="once"), mandatory=True, replay=False
        )
        during["again"] = transport.publish("", queue, Message(b"", message_id="again"), mandatory=True)

    try:
        transport.declare_queue(queue, durable=True, arguments={"x-queue-type": "classic"}).result(30)
        transport.add_on_reconnect(while_down)
        for line in rabbitmqctl("list_connections", "pid", "vhost").splitlines():
            if line.endswith("\t" + own_vhost):
                rabbitmqctl("close_connection", line.split("\t")[0], "test")
        wait_until(lambda: len(during) == 2, 30, "the reconnect")
        assert during["again"].result(30) is None
        with pytest.raises(BrokerUnavailable, match="before it was sent"):
            during["once"].result(30)
        connection = blocking_connection(url)
        try:
            got = []
            while (taken := connection.channel().basic_get(queue, auto_ack=True))[0] is not None:
                got.append(taken[1].message_id)
        finally:
            connection.close()
        assert got == ["again"]
    finally:
        transport.close()


def test_a_quorum_state_queue_is_declared_with_a_delivery_limit(
    own_vhost: str, schedulers: Schedulers
) -> None:
    # RabbitMQ 4 drops a quorum queue's message returned 20 times unless the queue sets a limit.
    url = f"amqp://guest:guest@127.0.0.1:5672/{own_vhost}"
    first = schedulers.spawn(TASKELL_URL=url, TASKELL_QUEUE_TYPE="quorum")
    second = schedulers.spawn(TASKELL_URL=url, TASKELL_QUEUE_TYPE="quorum")
    connection = blocking_connection(url)
    channels = [connection.channel()]

    def fired(count: int) -> bool:
        try:
            return bool(channels[-1].queue_declare(TASK_QUEUE, passive=True).method.message_count >= count)
        except pika.exceptions.ChannelClosedByBroker:  # not declared yet
            channels.append(connection.channel())
            return False

    try:
        wait_until(lambda: fired(2), 30, "the scheduler fires")
        queues = rabbitmqctl("list_queues", "-p", own_vhost, "name", "type", "arguments")
        state = next(line for line in queues.splitlines() if line.startswith(STATE_QUEUE + "\t"))
        assert "\tquorum\t" in state and "x-delivery-limit" in state and "1000000" in state, state
        # A failover under quorum queues: the standby takes over.
        leader = first if "took over" in (schedulers.tmp_path / "scheduler-0.log").read_text() else second
        os.kill(leader.pid, signal.SIGKILL)
        leader.wait(10)
        channels[-1].queue_purge(TASK_QUEUE)
        wait_until(lambda: fired(2), 30, "the standby fires")
    finally:
        if connection.is_open:
            connection.close()
