"""Dramatiq side of ``bench/bench_others.py``: a no-op actor, with results and without.

Worker (started by the benchmark)::

    python -m dramatiq bench.others_dramatiq_app --processes 1 --threads N

Broker: ``RabbitmqBroker`` on ``TASKELL_URL`` (vhost as given); the Results middleware stores
``add``'s results in Redis at ``REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
``add_discard`` is ``add`` for fire-and-forget messages: it returns None, since the Results
middleware logs a warning for every message whose actor returns a value it does not store.
Everything else is Dramatiq's default (e.g. its default middleware; acked after the actor ran).
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

URL = os.environ.get("TASKELL_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = "bench.others.dramatiq"

broker = RabbitmqBroker(url=URL)
backend = RedisBackend(url=REDIS_URL)  # type: ignore[no-untyped-call, unused-ignore]
broker.add_middleware(Results(backend=backend))  # type: ignore[no-untyped-call, unused-ignore]
dramatiq.set_broker(broker)


def add(a: int, b: int) -> int:
    return a + b


def add_discard(a: int, b: int) -> None:
    add(a, b)


# Not decorators: without Dramatiq installed mypy sees ``dramatiq`` as Any.
add_actor = dramatiq.actor(queue_name=QUEUE, actor_name="bench_others_add", store_results=True)(add)
discard_actor = dramatiq.actor(queue_name=QUEUE, actor_name="bench_others_add_discard")(add_discard)
