"""A broker restart under two schedulers (``every: 1s``, catch-up ``all``): they reconnect by
themselves, one leads again, and no due time is skipped or submitted twice (a submission
whose state update the restart lost is known from its copy in the state queue)."""

from __future__ import annotations

import itertools
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pytest

from taskell.scheduler import DUE_HEADER
from tests.faults._rabbit import RabbitNode
from tests.faults._support import Report
from tests.support import ROOT, TASKELL, cli_env, stop_process

TASK_QUEUE = "taskell.q1"


class Collector:
    """Takes the scheduled tasks off the task queue, reconnecting across the outage.

    It does not take any during the restart: a message taken (auto-ack) while the broker stops
    may come back after it (the broker's at-least-once delivery to consumers, which workers
    meet as a redelivery), and would count as a due time submitted twice."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: Any = None
        self.channel: Any = None
        self.dues: list[datetime] = []
        self.redelivered = 0

    def poll(self) -> None:
        try:
            if self.channel is None:
                params = pika.URLParameters(self.url)
                params.connection_attempts = 1
                params.socket_timeout = 2
                self.connection = pika.BlockingConnection(params)
                self.channel = self.connection.channel()
                self.channel.queue_declare(TASK_QUEUE, passive=True)  # the schedulers declare it
            while True:
                method, props, _body = self.channel.basic_get(TASK_QUEUE, auto_ack=True)
                if method is None:
                    return
                self.dues.append(datetime.fromisoformat((props.headers or {})[DUE_HEADER]))
                self.redelivered += bool(method.redelivered)
        except pika.exceptions.AMQPError:
            self.channel = None
            if self.connection is not None and self.connection.is_open:
                self.connection.close()

    def run_for(self, seconds: float, *, until: int | None = None) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (until is None or len(self.dues) < until):
            self.poll()
            time.sleep(0.1)


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_broker_restart_under_schedulers(
    queue_type: str, private_broker: RabbitNode, vhost: str, tmp_path: Path
) -> None:
    env = {
        **cli_env(vhost),
        "TASKELL_QUEUE_TYPE": queue_type,
        "TASKELL_SCHEDULE_CATCH_UP": "all",
        "TASKELL_CONNECT_TIMEOUT": "5",
        "TASKELL_HEARTBEAT": "2",
    }
    procs = []
    for i in range(2):
        with open(tmp_path / f"scheduler-{i}.log", "wb") as log:
            procs.append(
                subprocess.Popen(
                    [TASKELL, "scheduler", "tests.integration.sched_tick"],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    collector = Collector(vhost)
    try:
        collector.run_for(60, until=4)  # the schedulers start slowly on a busy machine
        collector.run_for(2)
        before = len(collector.dues)
        time.sleep(0.5)  # the last ones taken are settled (see Collector)
        down = time.monotonic()
        private_broker.stop_app()
        time.sleep(2)
        private_broker.start_app()
        outage = time.monotonic() - down
        back = datetime.now().astimezone()
        collector.run_for(12)
        alive = [p.poll() is None for p in procs]
    finally:
        for proc in procs:
            stop_process(proc)
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("scheduler-*.log")))
    dues = sorted(collector.dues)
    counts = Counter(dues)
    gaps = [(a, b) for a, b in itertools.pairwise(dues) if b - a > timedelta(seconds=1)]
    report = Report(
        fault=f"broker restarted (stop_app/start_app) under 2 schedulers, every 1 s, catch-up all, {queue_type} queues",
        load="1 schedule, every 1 s, ~20 s",
        submitted=len(dues),
        lost=len(gaps),
        duplicated=sum(c - 1 for c in counts.values()),
        dead_lettered=0,
        seconds=round(outage, 1),
        done_before=before,
        done_after=sum(1 for d in dues if d > back + timedelta(seconds=3)),
        details={"fired_before": before, "outage_s": round(outage, 1), "redelivered": collector.redelivered},
    )
    with report.checks():
        assert all(alive), logs
        assert before >= 4, logs
        assert not gaps, (gaps, logs)
        assert any(d > back + timedelta(seconds=3) for d in dues), ("no firing after the restart", logs)
        assert all(c == 1 for c in counts.values()), ({d: c for d, c in counts.items() if c > 1}, logs)
