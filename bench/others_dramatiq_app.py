"""Dramatiq side of ``bench/bench_others.py``: a no-op actor and an end marker.

Worker (started by the benchmark)::

    python -m dramatiq bench.others_dramatiq_app --processes 1 --threads N

Broker: ``RabbitmqBroker`` on ``TASKELL_URL`` (vhost as given). When
``BENCH_OTHERS_DRAMATIQ_RESULTS=1`` the Results middleware stores ``add``'s results in Redis at
``REDIS_URL``; without it only fire-and-forget works. ``add_discard`` is ``add`` for
fire-and-forget messages: it returns None, since the Results middleware logs a warning for every
message whose actor returns a value it does not store. ``mark(path)`` creates the file ``path``
(the end marker of the drain and the readiness probe, no results backend needed). Everything
else is Dramatiq's default (e.g. its default middleware; acked after the actor ran).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

URL = os.environ.get("TASKELL_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
RESULTS = os.environ.get("BENCH_OTHERS_DRAMATIQ_RESULTS") == "1"
QUEUE = "bench.others.dramatiq"

broker = RabbitmqBroker(url=URL)
if RESULTS:
    from dramatiq.results import Results
    from dramatiq.results.backends import RedisBackend

    backend = RedisBackend(url=REDIS_URL)  # type: ignore[no-untyped-call, unused-ignore]
    broker.add_middleware(Results(backend=backend))  # type: ignore[no-untyped-call, unused-ignore]
dramatiq.set_broker(broker)


def add(a: int, b: int) -> int:
    return a + b


def add_discard(a: int, b: int) -> None:
    add(a, b)


def mark(path: str) -> None:
    Path(path).touch()


# Not decorators: without Dramatiq installed mypy sees ``dramatiq`` as Any.
# store_results is an option only the Results middleware defines.
RESULT_OPTIONS: dict[str, Any] = {"store_results": True} if RESULTS else {}
add_actor = dramatiq.actor(queue_name=QUEUE, actor_name="bench_others_add", **RESULT_OPTIONS)(add)
discard_actor = dramatiq.actor(queue_name=QUEUE, actor_name="bench_others_add_discard")(add_discard)
mark_actor = dramatiq.actor(queue_name=QUEUE, actor_name="bench_others_mark")(mark)
