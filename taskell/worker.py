"""``Worker``: consumes task queues and runs handlers with bounded parallelism.

Threads: the transport's I/O thread receives deliveries and control messages and does all
network I/O; ``parallelism`` pool threads run handlers. A task is acknowledged only after its
final reply (result, failure, abort or dead-letter) is confirmed by the broker, so a worker
that dies mid-task leaves it to be redelivered.

This module holds the lifecycle (start, stop, signals) and the wiring of a delivery's way
through the worker's parts, each in a module of its own:

- ``_intake``: the checks a delivered task passes, as one decision (run, dead-letter, ...);
- ``_execution``: the pool threads, running handlers in-thread or in child processes, taking
  waiting tasks highest priority first (``_buffer``) and enforcing time limits;
- ``_async_execution``: the same for ``async def`` handlers, on an event loop of the worker's
  own;
- ``_retry``: whether a failed attempt runs again (the task's retry policy), and when;
- ``_settle``: reply, confirm, outcome event, then ack (and the lease hand-off);
- ``_control``: abort and inspect requests, and the ids they remember.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from . import _observe, _tracing, _wire
from ._abort_log import AbortLog
from ._async_execution import AsyncExecution
from ._control import Control
from ._execution import Execution
from ._intake import DeadLetter, Finish, Hold, Intake, Recount, Run
from ._joiner import Joiner
from ._retry import retry_of
from ._running import Running, TimeLimitInterrupt, json_form
from ._settle import Settler
from .config import PREFETCH_PER_SLOT, Config
from .context import NOTHING
from .errors import BrokerUnavailable, ConfigError
from .registry import Binding, Registry
from .transport import Delivery, Transport, open_transport

if TYPE_CHECKING:
    from ._metrics import Metrics

__all__ = ["Worker"]

log = logging.getLogger("taskell.worker")

START_ATTEMPTS = 3


class Worker:
    """Runs the tasks of a ``Registry``.

    Examples:
        >>> worker = Worker(registry(Impl()), Config.load("taskell.toml"))
        >>> worker.run()          # blocks; SIGTERM / Ctrl-C stop it gracefully

    Or, in tests: ``with Worker(reg, config): ...`` runs it in the background.

    Args:
        registry: the tasks this worker serves.
        config: broker, parallelism, queues; defaults to ``Config.load()``.
        queues: replaces the configured queues (``--queue``).
        parallelism: replaces the configured parallelism (``--parallelism``).

    A registry of ``async def`` handlers (``AsyncHandlers``) runs them on an event loop of the
    worker's own, ``parallelism`` tasks at once; one of ``def`` handlers runs them on
    ``parallelism`` pool threads (or child processes). ``worker.is_async`` says which.

    Raises:
        ConfigError: a task declares a priority but ``queue_type`` is ``"quorum"``; or the
            registry mixes async and sync handlers; or it has async handlers and ``pool`` is
            ``"process"``.
    """

    def __init__(
        self,
        registry: Registry,
        config: Config | None = None,
        *,
        queues: Sequence[str] | None = None,
        parallelism: int | None = None,
    ) -> None:
        self.config = config or Config.load()
        self.registry = registry
        self.queues = list(queues or self.config.queues or registry.queues)
        self.parallelism = parallelism or self.config.parallelism
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._transport: Transport
        self._control_transport: Transport
        self._abort_log: AbortLog | None = None
        self._settle: Settler
        self._execution: Execution | AsyncExecution | None = None
        self._joiner: Joiner | None = None
        self._running: dict[str, Running] = {}  # filled by execution; read by control and leases
        self._control = Control(self.name, self._running, self.status)
        self._intake = Intake(self.registry, self.config, self._control.is_aborted)
        self._consumer_tags: list[str] = []
        self._stopping = False
        self._stopped = threading.Event()
        self._lost: BaseException | None = None  # why the broker connection was lost for good
        self.metrics: Metrics | None = None  # this worker's Prometheus series, with metrics_port
        self._observer = self._observers()
        self._finishing: dict[int, Callable[[str], None]] = {}  # id(delivery) -> observer callback
        if not self.queues:
            raise ValueError("the worker has no queue to consume (no tasks registered, no queues configured)")
        self.is_async = _is_async(registry, self.config)
        # Arguments of each queue; one that a registered task asks priorities for gets them,
        # and a queue type that cannot have them is refused here, before connecting.
        prioritized = {b.spec.queue for b in registry if b.spec.queue_priorities}
        self._queue_arguments = {
            queue: _wire.queue_arguments(self.config, priorities=queue in prioritized, queue=queue)
            for queue in self.queues
        }

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Lifecycle

    def start(self) -> None:
        """Connect, declare what the worker needs and start consuming (returns at once)."""
        config = self.config
        # Two connections: one for tasks (its channel's prefetch counts only tasks) and one
        # for control messages (abort, inspect), which must flow while every slot is busy.
        self._control_transport = open_transport(config, name="taskell-control")
        try:
            self._transport = open_transport(config, name="taskell-worker")
        except BaseException:
            self._control_transport.close()
            raise
        transport, control = self._transport, self._control_transport
        if self.metrics is not None and self.config.metrics_port is not None:
            try:
                self.metrics.serve(self.config.metrics_host, self.config.metrics_port)
            except BaseException:
                transport.close()
                control.close()
                raise
        self._settle = Settler(transport, config)
        if self.is_async:
            self._execution = AsyncExecution(
                transport,
                parallelism=self.parallelism,
                running=self._running,
                is_aborted=self._control.is_aborted,
            )
        else:
            self._execution = Execution(
                self.registry,
                transport,
                config,
                parallelism=self.parallelism,
                running=self._running,
                is_aborted=self._control.is_aborted,
            )
        try:
            transport.declare_queue(
                config.dead_letter_queue, durable=True, arguments=_wire.dead_letter_queue_arguments(config)
            ).result()
            transport.declare_exchange(_wire.OUTCOMES_EXCHANGE, "direct").result()
            for queue, arguments in self._queue_arguments.items():
                transport.declare_queue(queue, durable=True, arguments=arguments).result()
            self._control.listen(control, config.abort_exchange)
            if config.abort_retention > 0:
                # Live aborts flow from here on; the records cover those sent before.
                self._abort_log = AbortLog(
                    open_transport(config, name="taskell-aborts"),
                    config,
                    self._control.aborted.add,
                    deliver_on=control,
                )
                self._abort_log.start()
            self._joiner = self._control.joiner = Joiner(control, config, self._control.is_aborted)
            self._joiner.start()
            control.add_on_reconnect(self._joiner.reset)
            if isinstance(self._execution, AsyncExecution):
                self._execution.start(self._take, self._end, self._internal_error)
            else:
                self._execution.start(self._execute)
            # One limit for the whole channel, so a worker on several queues holds at most
            # `prefetch` tasks; quorum queues only support a limit per consumer.
            per_consumer = config.queue_type == "quorum"
            prefetch = config.prefetch or PREFETCH_PER_SLOT * self.parallelism
            transport.set_prefetch(prefetch, per_consumer=per_consumer).result()
            for queue in self.queues:
                self._consumer_tags.append(transport.consume(queue, self._on_delivery).result())
            if transport.supports_leases:
                self._settle.watch_leases(self._running, self._stopped)
        except BaseException:
            transport.close()
            control.close()
            if self._abort_log is not None:
                self._abort_log.close()
            self._observer.close()
            raise
        transport.add_on_lost(self._on_lost)
        control.add_on_lost(self._on_lost)
        log.info(
            "worker %s consuming %s with parallelism %d%s",
            self.name,
            self.queues,
            self.parallelism,
            " (async handlers, on an event loop)" if self.is_async else "",
        )

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking tasks, let running ones finish, then disconnect.

        Deliveries received but not started are requeued. Tasks still running after ``timeout``
        seconds (None: no limit) are aborted and requeued, for another worker to run.
        """
        if self._stopping:
            return
        self._stopping = True
        for tag in self._consumer_tags:
            self._transport.cancel(tag)
        if self._execution is not None:
            self._execution.stop(timeout)
        # Finished tasks are acknowledged once their replies are confirmed: wait for that, so
        # a graceful stop does not hand them to another worker again.
        self._settle.wait(10)
        self._transport.close()
        if self._abort_log is not None:
            self._abort_log.close()
        self._control_transport.close()
        self._observer.close()
        self._stopped.set()

    def run(self) -> int:
        """Start, then block until SIGTERM/SIGINT (graceful stop) and return an exit status: for
        a process that is the worker (it takes the signals and freezes the garbage collector).

        Starting is tried a few times: a broker may refuse a declare while it is still busy
        creating the same replicated queue for another worker.

        Raises:
            BrokerUnavailable: starting failed, or the broker connection was lost for good.
        """
        # What is alive now (modules, the registry, config) lives as long as the process: kept
        # out of the collector's full passes, which would otherwise walk all of it every few
        # thousand tasks (about 40 ms each, measured on the demo worker).
        gc.collect()
        gc.freeze()
        for attempt in range(START_ATTEMPTS):
            try:
                self.start()
                break
            except BrokerUnavailable as exc:
                if attempt == START_ATTEMPTS - 1:
                    raise
                log.warning("starting failed (%s); trying again", exc)
                self._consumer_tags.clear()
                time.sleep(1.0 + attempt)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._stopping:  # second signal: stop at once; unacked tasks are redelivered
                os._exit(1)
            grace = self.config.shutdown_grace
            threading.Thread(target=self.stop, args=(grace,), name="taskell-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not self._stopped.wait(0.5):
            pass
        if self._lost is not None:
            raise BrokerUnavailable(f"worker {self.name} lost its broker connection: {self._lost}")
        return 0

    def status(self) -> dict[str, Any]:
        """What ``taskell inspect`` shows: identity, queues and running tasks with progress."""
        now = time.time()
        running = []
        for task_id, task in list(self._running.items()):
            latest = task.progress.latest
            running.append(
                {
                    "task_id": task_id,
                    "task": task.binding.spec.name,
                    "seconds": round(now - task.started, 3),
                    "progress": None if latest is NOTHING else json_form(task, latest),
                }
            )
        return {
            "worker": self.name,
            "queues": self.queues,
            "parallelism": self.parallelism,
            "running": running,
        }

    def _observers(self) -> _observe.Observer:
        """Metrics (with ``metrics_port``) and tracing (with OpenTelemetry installed), or the
        observer that does nothing."""
        observers: list[_observe.Observer] = []
        if self.config.metrics_port is not None:
            from ._metrics import Metrics  # prometheus_client is imported only then

            self.metrics = Metrics([binding.spec.name for binding in self.registry])
            observers.append(self.metrics)
        if _tracing.INSTALLED:
            observers.append(_tracing.TracingObserver())
        if len(observers) == 1:
            return observers[0]
        return _observe.Observers(observers) if observers else _observe.Observer()

    def _on_lost(self, error: BaseException) -> None:
        log.error("worker %s lost its broker connection: %s", self.name, error)
        self._lost = error
        self._stopping = True
        self._stopped.set()

    # Deliveries (I/O thread) and their handling (pool threads)

    def _on_delivery(self, delivery: Delivery) -> None:
        assert self._execution is not None
        if not self._stopping and self._execution.submit(delivery):
            return
        # Prefetched deliveries keep arriving until the broker has processed the cancel.
        self._settle.requeue(delivery)

    def _execute(self, delivery: Delivery) -> None:
        """Serve ``delivery`` on a pool thread: intake, handler, settling."""
        try:
            run = self._take(delivery)
            if run is not None:
                assert isinstance(self._execution, Execution)
                kind, body, running = self._execution.run(run.binding, run.args, delivery)
                self._end(delivery, run.binding, kind, body, running)
        except Exception as exc:
            self._internal_error(delivery, exc)

    def _internal_error(self, delivery: Delivery, exc: Exception) -> None:
        # Never lose a task to a bug here, and never loop on it: requeue it once, then
        # dead-letter it with the reason.
        log.error("internal error on delivery %s", delivery.message.message_id, exc_info=exc)
        self._observe_end(delivery, _observe.REQUEUED)
        if delivery.redelivered:
            self._settle.dead_letter(delivery, f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._settle.requeue(delivery)

    def _take(self, delivery: Delivery) -> Run | None:
        """Intake decides: a task that runs is returned, anything else is settled here."""
        if self._stopping:
            self._settle.requeue(delivery)
            return None
        message = delivery.message
        match self._intake.check(delivery):
            case DeadLetter(reason):
                task = message.type if self.registry.get(message.type or "") else "unknown"
                self._observer.ended(delivery, str(task), _observe.REJECTED)
                self._settle.dead_letter(delivery, reason)
            case Finish(kind, body):
                self._observer.ended(delivery, str(message.type), _observe.outcome_of(kind))
                self._settle.finish(delivery, kind, body)
            case Hold(delay):
                self._settle.hold(delivery, delay)
            case Recount(copy):
                self._settle.replace(delivery, copy)
            case Run() as run:
                self._finishing[id(delivery)] = self._observer.started(delivery, run.binding.spec.name)
                return run
        return None

    def _end(self, delivery: Delivery, binding: Binding, kind: str, body: bytes, running: Running) -> None:
        """Settle a task whose handler ran, with its final reply ``kind``/``body``."""
        assert self._execution is not None
        outcome = _observe.REQUEUED  # unless decided below
        try:
            if kind == _wire.ABORTED and self._execution.requeue_aborted:  # a graceful stop's end
                self._settle.requeue(delivery)
                return
            retry = None if running.ctx.aborted else retry_of(binding.spec, kind, body, running.ctx.attempt)
            if retry is not None:
                outcome = _observe.RETRYING
                self._settle.retry(delivery, retry, running)
                return
            outcome = _observe.outcome_of(kind, running.stopped_by is TimeLimitInterrupt)
            self._control.finished.add(running.ctx.task_id)
            self._settle.finish(delivery, kind, body, running)
        finally:
            self._observe_end(delivery, outcome)

    def _observe_end(self, delivery: Delivery, outcome: str) -> None:
        """Tell the observer how a task that started ended (once; no-op if it never started)."""
        finished = self._finishing.pop(id(delivery), None)
        if finished is not None:
            finished(outcome)


def _is_async(registry: Registry, config: Config) -> bool:
    """Whether the worker runs ``registry`` on an event loop (its handlers are async)."""
    kinds = {binding.is_async for binding in registry}
    if kinds == {True, False}:
        names = {k: ", ".join(b.spec.name for b in registry if b.is_async == k) for k in kinds}
        raise ConfigError(
            "registry",
            f"a worker runs either async handlers or sync ones, not both: async {names[True]}; "
            f"sync {names[False]} (run two workers)",
        )
    if kinds == {True} and config.pool == "process":
        raise ConfigError(
            "pool",
            '"process" runs sync handlers in child processes; async handlers run on the '
            'worker\'s event loop: use pool = "thread" (the default) with AsyncHandlers',
        )
    return kinds == {True}
