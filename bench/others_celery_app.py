"""Celery side of ``bench/bench_others.py``: one no-op task on the benchmark's broker.

Worker (started by the benchmark)::

    python -m celery -A bench.others_celery_app worker --pool threads --concurrency N \\
        --prefetch-multiplier P --without-gossip --without-mingle --without-heartbeat

Broker: ``TASKELL_URL`` (vhost as given); results: ``rpc://`` (replies over AMQP to the
client's own queue). Everything else is Celery's default (e.g. the message is acked when the
worker receives it, not after the task ran).
"""

from __future__ import annotations

import os

from celery import Celery

URL = os.environ.get("TASKELL_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE = "bench.others.celery"

app = Celery("bench_others", broker=URL, backend="rpc://")
app.conf.update(
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def add(a: int, b: int) -> int:
    return a + b


# Not a decorator: without Celery installed mypy sees ``app`` as Any.
add_task = app.task(name="bench.others.add")(add)
