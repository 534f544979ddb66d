"""Bad input: malformed, oversize and unknown-type messages mixed into good tasks."""

from __future__ import annotations

import collections
import time
import uuid
from typing import Any

import pika  # type: ignore[import-untyped]

import taskell
from generated.demo import Client
from tests.faults._support import (
    Handle,
    MakeWorkers,
    Report,
    blocking_channel,
    collect,
    done_count,
    duplicates,
    queue_depth,
    read_queue,
    submit_squares,
    task_count,
    wait_progress,
    worker_env,
)
from tests.support import poll_until

MAX_PAYLOAD = 4096  # the workers' max_payload_bytes
QUEUE = "taskell.q1"  # demo.square's queue
DEAD = "taskell.dead"
BAD_HEADER = "fault-bad"  # our own header on each bad message: "<kind>:<n>"

# kind -> (AMQP type, body, with a message_id); each is dead-lettered at once by the worker.
BAD_KINDS: dict[str, tuple[str | None, bytes, bool]] = {
    "undecodable": ("demo.square", b"\x80\x81 not json {", True),
    "invalid-args": ("demo.square", b'{"x": "seven"}', True),
    "unknown-type": ("demo.no_such_task", b'{"x": 1}', True),
    "no-type": (None, b'{"x": 1}', True),
    "oversize": ("demo.square", b'{"x": 1, "pad": "' + b"a" * (2 * MAX_PAYLOAD) + b'"}', True),
    "no-message-id": ("demo.square", b'{"x": 2}', False),
}


def _publish_bad(channel: Any, number: int) -> str:
    kind = list(BAD_KINDS)[number % len(BAD_KINDS)]
    kind_type, body, with_id = BAD_KINDS[kind]
    label = f"{kind}:{number}"
    channel.basic_publish(
        "",
        QUEUE,
        body,
        pika.BasicProperties(
            type=kind_type,
            message_id=str(uuid.uuid4()) if with_id else None,
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            headers={BAD_HEADER: label},
        ),
        mandatory=True,
    )
    return label


def test_bad_messages_are_dead_lettered(vhost: str, workers: MakeWorkers) -> None:
    """10% bad messages (6 kinds) published raw among good tasks: every good task completes,
    every bad message lands in taskell.dead with a taskell-reason header, and the workers
    keep serving (same PIDs, started once)."""
    n = task_count()
    bad_total = n // 10
    group = workers(worker_env([vhost], parallelism=4, max_payload_bytes=MAX_PAYLOAD))
    procs = [group.spawn("a"), group.spawn("b")]
    for proc in procs:
        proc.wait_ready()
    pids = [p.pid for p in procs]
    started = time.monotonic()
    labels: list[str] = []
    handles: list[tuple[int, Handle]] = []
    raw_conn, channel = blocking_channel(vhost)
    try:
        channel.confirm_delivery()
        with taskell.connect(config=taskell.Config.from_url(vhost)) as conn:
            client = Client(conn)
            chunks = 10
            # Bad messages go after each chunk of good tasks but the last: good tasks are done
            # before the first bad one (waited for) and submitted after the last.
            for chunk in range(chunks):
                handles += submit_squares(client, n // chunks, chunk * (n // chunks))
                if chunk == 0:
                    done_before = wait_progress(handles, 1, timeout=60)
                if chunk < chunks - 1:
                    while len(labels) < bad_total * (chunk + 1) // (chunks - 1):
                        labels.append(_publish_bad(channel, len(labels)))
                    done_at_last_bad = done_count(handles)
            outcome = collect(handles, timeout=30 + n * 0.01)
            poll_until(lambda: queue_depth(vhost, DEAD) >= len(labels), 30, interval=0.1)  # checked below
            seconds = time.monotonic() - started
    finally:
        raw_conn.close()
    dead = read_queue(vhost, DEAD)
    dead_labels = [str(headers.get(BAD_HEADER)) for headers, _ in dead]
    reasons: dict[str, str] = {}
    without_reason = 0
    for headers, _ in dead:
        reason = headers.get("taskell-reason")
        if not reason:
            without_reason += 1
        kind = str(headers.get(BAD_HEADER)).split(":")[0]
        reasons.setdefault(kind, str(reason)[:100])
    counts = group.executions()
    starts = [p.log().count(" consuming ") for p in procs]
    report = Report(
        fault="malformed / oversize / unknown-type messages (10%)",
        load=f"{len(handles)} good tasks + {len(labels)} bad messages, 2 workers x parallelism 4",
        submitted=len(handles) + len(labels),
        lost=outcome.not_ok,
        duplicated=duplicates(counts),
        dead_lettered=len(dead),
        seconds=round(seconds, 1),
        done_before=done_before,
        done_after=outcome.completed - done_at_last_bad,
        details={
            "bad_by_kind": dict(collections.Counter(label.split(":")[0] for label in labels)),
            "reasons": reasons,
            "workers_alive": [p.popen.poll() is None for p in procs],
            "outcome": outcome.describe(),
        },
    )
    with report.checks():
        assert outcome.not_ok == 0, outcome.describe()
        assert sorted(dead_labels) == sorted(labels), (
            f"{len(set(labels) - set(dead_labels))} bad messages not dead-lettered, "
            f"{len(set(dead_labels) - set(labels))} unexpected ones"
        )
        assert without_reason == 0, f"{without_reason} dead letters without a taskell-reason header"
        assert [p.pid for p in procs] == pids and all(p.popen.poll() is None for p in procs), "a worker died"
        assert starts == [1, 1], f"workers restarted: consuming logged {starts} times"
