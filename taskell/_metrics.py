"""Prometheus metrics of one worker (``metrics_port``), served at ``http://HOST:PORT/metrics``.

Every worker has a registry of its own (not ``prometheus_client``'s global one), so several
workers in one process, and tests, never share series. In a process pool the parent records
every start and end (it drives each child), so its figures cover all the children.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from ._observe import OUTCOMES, Observer, Outcome, queue_wait
from .errors import ConfigError
from .transport import Delivery

__all__ = ["Metrics"]

log = logging.getLogger("taskell.worker")

# Seconds; tasks run from milliseconds to hours, and wait as long.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class _Series:
    """The series of one task (label children looked up once, not per task)."""

    def __init__(self, metrics: Metrics, task: str) -> None:
        self.started = metrics.started_total.labels(task)
        self.finished = {outcome: metrics.finished_total.labels(task, outcome) for outcome in OUTCOMES}
        self.duration = metrics.duration.labels(task)
        self.running = metrics.running.labels(task)
        self.queue_wait = metrics.queue_wait.labels(task)


class Metrics(Observer):
    """The SPEC §11 series of one worker, labelled by task wire name.

    Args:
        tasks: wire names of the tasks served; their series exist (at 0) from the start.
    """

    def __init__(self, tasks: list[str]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started_total = Counter(
            "taskell_tasks_started", "Tasks whose handler started", ["task"], registry=r
        )
        self.finished_total = Counter(
            "taskell_tasks_finished",
            "Task deliveries ended, by outcome (rejected, and aborted or expired before they started, never started)",
            ["task", "outcome"],
            registry=r,
        )
        self.duration = Histogram(
            "taskell_task_duration_seconds", "Seconds a handler ran", ["task"], buckets=BUCKETS, registry=r
        )
        self.running = Gauge("taskell_tasks_running", "Handlers running now", ["task"], registry=r)
        self.queue_wait = Histogram(
            "taskell_queue_wait_seconds",
            "Seconds from submission (or the end of a delay) to the handler's start",
            ["task"],
            buckets=BUCKETS,
            registry=r,
        )
        self._series = {task: _Series(self, task) for task in tasks}
        self._server: Any = None
        self.address: tuple[str, int] | None = None

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve ``/metrics`` on ``host``:``port`` (0: any free port) from a daemon thread;
        returns the address bound.

        Raises:
            ConfigError: the address cannot be bound (key ``metrics_port``).
        """
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                "metrics_port", f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from None
        self.address = (host, int(self._server.server_address[1]))
        log.info("metrics at http://%s:%d/metrics", *self.address)
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _of(self, task: str) -> _Series:
        series = self._series.get(task)
        if series is None:  # the worker names unknown types "unknown": a bounded set
            series = self._series[task] = _Series(self, task)
        return series

    def started(self, delivery: Delivery, task: str) -> Outcome:
        series = self._of(task)
        wait = queue_wait(delivery.message, int(time.time() * 1000))
        if wait is not None:
            series.queue_wait.observe(wait)
        series.started.inc()
        series.running.inc()
        start = time.perf_counter()

        def finished(outcome: str) -> None:
            series.duration.observe(time.perf_counter() - start)
            series.running.dec()
            series.finished[outcome].inc()

        return finished

    def ended(self, delivery: Delivery, task: str, outcome: str) -> None:
        self._of(task).finished[outcome].inc()
