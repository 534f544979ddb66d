"""``taskell.connect()`` and ``Connection``: submit tasks, receive their replies, abort them.

One ``Connection`` owns one broker connection (one I/O thread), one exclusive reply queue and
the table of in-flight handles. It is safe to use from many threads at once.
It is a little over 400 lines: submit, replies and abort/inspect share that table and the
reply queue; dependencies (``_deps``) and handles (``handle``) already live apart.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from pydantic import ValidationError

from . import _abort_log, _tracing, _wire
from ._deps import DependencyTracker, dependency_failed, find_refs
from ._options import SubmitOptions
from .config import Config
from .errors import BrokerUnavailable, PayloadError, TaskAborted, TaskellError, TaskExpired, TaskFailed
from .handle import (
    HandleOwner,
    Ref,
    Retrying,
    TaskHandle,
    deliver_outcome,
    deliver_progress,
    deliver_retrying,
    spec_of,
)
from .spec import TaskSpec
from .transport import Delivery, Message, open_transport

__all__ = ["Connection", "ConnectionView", "connect"]

log = logging.getLogger("taskell.client")

REPLY_QUEUE_EXPIRES_MS = 10 * 60 * 1000  # a private reply queue unused this long is deleted
RESULTS_RETENTION_MS = 24 * 60 * 60 * 1000  # replies kept in a named results queue at most
MAX_UNCLAIMED = 100_000  # tasks whose replies a connection holds for a later attach

A = ParamSpec("A")
P = TypeVar("P")
R = TypeVar("R")


def connect(
    url: str | None = None, *, config: Config | None = None, results: str | None = None
) -> Connection:
    """Connect to the broker at ``url`` (or as ``config`` says, or from ``TASKELL_*`` variables).

    Use it as a context manager; leaving it waits until every submission is confirmed::

        with taskell.connect("amqp://guest:guest@localhost:5672/%2F") as conn:
            handle = Client(conn).sum(numbers=[1, 2, 3])
            print(handle.result(timeout=30))

    Args:
        url: the broker URL; or give ``config``.
        config: a loaded ``Config``.
        results: a durable results queue to use, by name, instead of a private one. Replies
            wait there (24 hours at most) while no client consumes it, so a later connection
            with the same ``results`` can re-attach to tasks by id: ``taskell.attach``. One
            connection consumes it at a time.

    Raises:
        BrokerUnavailable: the broker cannot be reached.
        ConfigError: the URL or configuration is invalid.
    """
    if config is None:
        config = Config.from_url(url) if url is not None else Config.load()
    elif url is not None:
        raise ValueError("give a url or a config, not both")
    return Connection(config, results=results)


def fire(stub: Callable[A, TaskHandle[Any, Any]], /, *args: A.args, **kwargs: A.kwargs) -> str:
    """Submit a task without asking for any reply (fire and forget); returns its task id.

    ``stub`` is a method of a generated ``Client``, with its arguments type-checked as usual::

        task_id = taskell.fire(demo.square, x=3)

    The task is published persistent and confirmed like any other (leaving ``with connect()``
    waits for the confirm); the worker acknowledges it as soon as it ran.
    """
    conn = getattr(stub, "__self__", None)
    conn = getattr(conn, "_conn", None)
    if isinstance(conn, ConnectionView):
        conn = conn.connection
    if not isinstance(conn, Connection):
        raise TypeError("fire() takes a method of a generated Client, e.g. taskell.fire(demo.square, x=3)")
    conn._local.fire_and_forget = True
    try:
        return stub(*args, **kwargs).id
    finally:
        conn._local.fire_and_forget = False


def attach(conn: Connection, spec: TaskSpec[Any, P, R], task_id: str) -> TaskHandle[P, R]:
    """A handle for task ``task_id`` of type ``spec`` (e.g. ``generated.demo.SUM``), submitted
    earlier through a connection that used the same ``results`` queue as ``conn``.

    The handle replays the progress and result the queue still holds for the task, then
    follows it live::

        with taskell.connect(results="taskell.reply.myapp") as conn:
            total = taskell.attach(conn, demo.SUM, task_id).result(timeout=60)
    """
    return conn.attach(spec, task_id)


class Connection:
    """A client connection: submits tasks and routes their replies to ``TaskHandle``s."""

    def __init__(self, config: Config, *, results: str | None = None) -> None:
        self.config = config
        self._named_results = results is not None
        # Replies for tasks nobody attached to yet (named results queue only): held, not
        # acknowledged, so they stay in the queue if this connection ends without claiming them.
        self._unclaimed: dict[str, list[Delivery]] = {}
        self._transport = open_transport(config, name="taskell-client")
        self._handles: dict[str, TaskHandle[Any, Any]] = {}
        self._unconfirmed: set[Future[None]] = set()
        self._declared: set[str] = set()
        self._answers: dict[str | None, list[dict[str, Any]]] = {}
        self._local = _SubmissionMode()
        self._warned_retention = False
        self._declare_lock = threading.Lock()
        self._closed = False
        try:
            # Named, durable, and removed only after some unused minutes: replies survive a
            # reconnect and a broker restart (final replies are persistent).
            if results is None:
                self.reply_queue = f"taskell.reply.{uuid.uuid4().hex}"
                arguments: dict[str, Any] = {"x-expires": REPLY_QUEUE_EXPIRES_MS}
            else:
                self.reply_queue = results
                arguments = {"x-message-ttl": RESULTS_RETENTION_MS, "x-single-active-consumer": True}
            arguments = _wire.reply_queue_arguments(config, arguments)
            self._transport.declare_queue(self.reply_queue, durable=True, arguments=arguments).result()
            self._deps = DependencyTracker(
                self._transport,
                config,
                self.reply_queue,
                new_handle=self._new_handle,
                submit=self._submit,
                publish=self._publish,
                declare_queue=self._declare_task_queue,
                is_open=lambda: not self._closed,
            )
            self._owner = HandleOwner(
                abort=self.abort,
                sync_replies=self._deps.sync_replies,
                run_loop_until=self._run_loop_until,
            )
            self._transport.consume(self.reply_queue, self._on_reply).result()
        except BaseException:
            self._transport.close()
            raise
        self._transport.add_on_lost(self._on_lost)

    def __repr__(self) -> str:
        return f"<taskell.Connection {self.config.masked_url()}>"

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(flush=exc_type is None)

    # Submitting

    def submit(
        self, spec: TaskSpec[Any, P, R], args: Mapping[str, object], *, after: Sequence[Ref[object]] = ()
    ) -> TaskHandle[P, R]:
        """Validate ``args`` and publish one task; generated ``Client`` methods call this.

        Returns at once with the handle; the publish is confirmed in the background (a refused
        or unroutable submission makes ``result()`` raise ``BrokerUnavailable``).

        Raises:
            PayloadError: ``args`` do not validate against the task's model.
            BrokerUnavailable: the connection is closed or lost.
            ConfigError: the task declares a priority but ``queue_type`` is ``"quorum"``.
        """
        return self._submit(spec, args, after, _DEFAULTS)

    def submit_json(self, spec: TaskSpec[Any, P, R], json_args: str | bytes) -> TaskHandle[P, R]:
        """Like ``submit``, with the arguments as JSON (as ``taskell call`` takes them)."""
        return self._submit_json(spec, json_args, _DEFAULTS)

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        expires: float | timedelta | None = None,
    ) -> ConnectionView:
        """A view of this connection whose submissions carry these options; give it to a
        generated ``Client`` in place of the connection::

            Client(conn.options(delay=60, priority=9)).square(x=3)

        Options given here override the schema's. A view's ``options`` makes another view
        with some options changed (a delay replaces an eta and back).

        Args:
            delay: seconds (or a ``timedelta``) the broker holds the task before it is queued.
            eta: an aware ``datetime`` the task is held until (give ``delay`` or ``eta``).
                With dependencies, the wait starts once they are done.
            priority: 0 (lowest) to 9; workers start waiting tasks of higher priority first.
            expires: seconds (or a ``timedelta``): a task not started that long after it is
                due (submitted, or at the end of its delay) never runs and its handle raises
                ``TaskExpired``.

        Raises:
            ValueError: an option out of range, ``delay`` and ``eta`` both, or a naive ``eta``.
        """
        return ConnectionView(
            self, SubmitOptions.make(delay=delay, eta=eta, priority=priority, expires=expires)
        )

    def _submit(
        self,
        spec: TaskSpec[Any, P, R],
        args: Mapping[str, object],
        after: Sequence[Ref[object]],
        options: SubmitOptions,
    ) -> TaskHandle[P, R]:
        if after:
            return self._deps.submit(spec, args, find_refs(args), after, options)
        try:
            body = spec.args.model_validate(args).model_dump_json().encode()
        except ValidationError as exc:
            # No schema type accepts a Ref, so only args that fail can hold one: a long list
            # argument is not scanned on every plain submission.
            refs = find_refs(args)
            if not refs:
                raise PayloadError(spec.name, _wire.describe(exc)) from None
            return self._deps.submit(spec, args, refs, after, options)
        return self._publish_task(spec, body, options)

    def _submit_json(
        self, spec: TaskSpec[Any, P, R], json_args: str | bytes, options: SubmitOptions
    ) -> TaskHandle[P, R]:
        try:
            body = spec.args.model_validate_json(json_args).model_dump_json().encode()
        except ValidationError as exc:
            raise PayloadError(spec.name, _wire.describe(exc)) from None
        return self._publish_task(spec, body, options)

    def _publish_task(
        self, spec: TaskSpec[Any, P, R], body: bytes, options: SubmitOptions
    ) -> TaskHandle[P, R]:
        if self._closed:
            raise BrokerUnavailable("connection is closed")
        if len(body) > self.config.max_payload_bytes:
            raise PayloadError(spec.name, f"args are {len(body)} bytes, over max_payload_bytes")
        delay = options.delay_now()
        self._check_delay(delay)
        self._declare_task_queue(spec)
        fire_and_forget = self._local.fire_and_forget
        handle = self._new_handle(spec, expect_reply=not fire_and_forget)  # fired: never completed
        message = _wire.task_message(
            spec,
            handle.id,
            body,
            None if fire_and_forget else self.reply_queue,
            priority=options.priority,
            expires=options.expires,
            delay=delay,
        )
        with _tracing.sending(spec.name, spec.queue, handle.id, message.headers) as traced:
            handle._trace = traced  # dependents link to it
            self._publish(spec.queue, message, None if fire_and_forget else handle.id, delay)
        return handle

    def _check_delay(self, delay: float) -> None:
        """Warn (once per connection) of a delay that outlasts the aborts kept on the broker."""
        retention = self.config.abort_retention
        if delay > retention and not self._warned_retention:
            self._warned_retention = True
            log.warning(
                "a task is delayed %.0f s, longer than abort_retention (%.0f s): an abort sent more "
                "than %.0f s before it is due may not stop it (see the operations guide)",
                delay,
                retention,
                retention,
            )

    def _new_handle(self, spec: TaskSpec[Any, P, R], *, expect_reply: bool = True) -> TaskHandle[P, R]:
        made: TaskHandle[P, R] | None = self._local.made
        if made is not None:  # made beforehand by taskell.aio, which hands it out before submitting
            self._local.made = None
        handle = made if made is not None else TaskHandle(self._owner, spec, str(uuid.uuid4()))
        if expect_reply:
            self._handles[handle.id] = handle
        return handle

    def _publish(self, queue: str, message: Message, task_id: str | None, delay: float = 0.0) -> Future[None]:
        """Publish (mandatory) in the background, to reach ``queue`` after ``delay`` seconds;
        a refusal fails task ``task_id``'s handle. Returns the broker's confirm."""
        if delay > 0:
            confirmed = self._transport.publish_delayed(queue, message, delay)
        else:
            confirmed = self._transport.publish("", queue, message, mandatory=True)
        self._unconfirmed.add(confirmed)
        confirmed.add_done_callback(lambda f: self._on_confirmed(f, task_id))
        return confirmed

    def _declare_task_queue(self, spec: TaskSpec[Any, Any, Any]) -> None:
        """Declare ``spec``'s queue once, with the arguments its workers use: priorities where
        the schema asks for them, which a quorum queue refuses (``ConfigError``; the schema is
        only known here, at the first submission, not at ``connect()``)."""
        queue = spec.queue
        if queue in self._declared:
            return
        with self._declare_lock:
            if queue not in self._declared:
                arguments = _wire.queue_arguments(self.config, priorities=spec.queue_priorities, queue=queue)
                self._transport.declare_queue(queue, durable=True, arguments=arguments).result()
                self._declared.add(queue)

    def _on_confirmed(self, future: Future[None], task_id: str | None) -> None:
        self._unconfirmed.discard(future)
        error = future.exception()
        if error is None:
            return
        handle = self._handles.pop(task_id, None) if task_id else None
        if handle is not None:
            _fail(handle, error if isinstance(error, TaskellError) else BrokerUnavailable(str(error)))
        else:
            log.error("a message was not confirmed by the broker: %s (%s)", error, future)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every submission so far is confirmed by the broker.

        Raises:
            TimeoutError: some are still unconfirmed after ``timeout`` seconds.
        """
        pending = list(self._unconfirmed)
        if pending:
            _, not_done = wait(pending, timeout)
            if not_done:
                raise TimeoutError(f"{len(not_done)} submissions unconfirmed after {timeout} s")

    # Aborting and inspecting

    def abort(self, task_id: str, *, wait: float = 0.0) -> list[dict[str, Any]]:
        """Ask every worker to abort task ``task_id`` (queued or running); idempotent.

        A running task is interrupted, a queued one never starts, and its handle raises
        ``TaskAborted``; a finished or unknown task is left alone. The abort is also kept on
        the broker for ``abort_retention`` seconds, so a worker that starts within that time
        refuses the task too.

        Args:
            wait: seconds to collect the workers' answers (``{"worker", "task_id", "state"}``
                with state ``aborting``, ``finished`` or ``not running here``).
        """
        if self.config.abort_retention > 0:
            stream = _abort_log.stream_name(self.config)
            if stream not in self._declared:
                _abort_log.declare(self._transport, self.config).result()
                self._declared.add(stream)
            _abort_log.append(self._transport, self.config, task_id).result(self.config.connect_timeout)
        return self._broadcast(_wire.ABORT, {"task_id": task_id}, wait)

    def inspect(self, *, wait: float = 1.0) -> list[dict[str, Any]]:
        """Ask every live worker for its status (queues, running tasks, their progress);
        returns the answers received within ``wait`` seconds."""
        return self._broadcast(_wire.INSPECT, {}, wait)

    def _broadcast(self, kind: str, body: Mapping[str, Any], wait: float) -> list[dict[str, Any]]:
        exchange = self.config.abort_exchange
        if exchange not in self._declared:
            self._transport.declare_exchange(exchange, "fanout").result()
            self._declared.add(exchange)
        message_id = str(uuid.uuid4())
        answers: list[dict[str, Any]] = []
        if wait > 0:
            self._answers[message_id] = answers
        message = _wire.control_request(kind, message_id, self.reply_queue, body)
        try:
            self._transport.publish(exchange, "", message, mandatory=False).result(
                self.config.connect_timeout
            )
            if wait > 0:
                time.sleep(wait)
        finally:
            self._answers.pop(message_id, None)
        return list(answers)

    def _run_loop_until(self, done: Callable[[], bool], timeout: float | None) -> bool:
        # Worth it for a caller waiting for the one reply in flight: the reply then wakes it
        # directly. With more in flight the I/O thread has their replies to handle anyway, and
        # lending it the loop back and forth costs more than it saves (bench/bench_borrow.py).
        if len(self._handles) > 1:
            return False
        return self._transport.run_loop_until(done, timeout)

    # Replies (on the transport's thread)

    def _on_reply(self, delivery: Delivery) -> None:
        # Acknowledged once handled (not auto-ack): a reply in flight when the connection
        # drops is redelivered after the reconnect instead of being lost.
        held = False
        try:
            held = self._handle_reply(delivery)
        finally:
            if not held:
                self._transport.ack(delivery.tag)

    def _handle_reply(self, delivery: Delivery) -> bool:
        """Route one reply; True if it is held (unclaimed) instead of acknowledged."""
        message = delivery.message
        task_id = message.correlation_id
        if message.type == _wire.SYNC:
            self._deps.on_sync(task_id)
            return False
        if task_id in self._answers:
            try:
                self._answers[task_id].append(json.loads(message.body))
            except ValueError:
                log.warning("malformed %s from a worker", message.type)
            return False
        handle = self._handles.get(task_id) if task_id else None
        if handle is None:
            if self._named_results and task_id and len(self._unclaimed) < MAX_UNCLAIMED:
                self._unclaimed.setdefault(task_id, []).append(delivery)
                return True
            log.debug("reply %s for unknown task %s", message.type, task_id)
            return False
        self._deliver(handle, delivery)
        return False

    def _deliver(self, handle: TaskHandle[Any, Any], delivery: Delivery) -> None:
        message = delivery.message
        task_id = handle.id
        kind = message.type
        if kind == _wire.PROGRESS:
            deliver_progress(handle, message.body)
            return
        if kind == _wire.RETRYING:  # not final: the task runs again
            notice = _retrying(message.body)
            if notice is not None:
                deliver_retrying(handle, notice)
            else:
                log.warning("malformed retrying notice for task %s", task_id)
            return
        self._handles.pop(task_id, None)
        raw = (kind or _wire.FAILED, message.body)
        if kind == _wire.RESULT:
            deliver_outcome(handle, message.body, raw)
        else:
            deliver_outcome(handle, _reply_error(kind, handle, message.body), raw)

    def attach(self, spec: TaskSpec[Any, P, R], task_id: str) -> TaskHandle[P, R]:
        """See ``taskell.attach``."""
        if not self._named_results:
            raise ValueError("attach needs a connection opened with a named results queue (results=...)")
        handle: TaskHandle[P, R] = TaskHandle(self._owner, spec, task_id)
        claimed = threading.Event()

        def claim() -> None:  # on the transport's thread, in order with arriving replies
            self._handles[task_id] = handle
            for delivery in self._unclaimed.pop(task_id, []):
                self._deliver(handle, delivery)
                self._transport.ack(delivery.tag)
            claimed.set()

        self._transport.call_soon(claim)
        if not claimed.wait(self.config.connect_timeout):
            raise TimeoutError("attach: the connection's thread did not answer")
        return handle

    def _on_lost(self, error: BaseException) -> None:
        lost = error if isinstance(error, BrokerUnavailable) else BrokerUnavailable(str(error))
        self._fail_pending(lost)

    def _fail_pending(self, error: TaskellError) -> None:
        handles, self._handles = list(self._handles.values()), {}
        for handle in handles:
            deliver_outcome(handle, error, None)  # the task itself may still succeed: nothing to forward

    def close(self, *, flush: bool = True) -> None:
        """Wait for unconfirmed submissions (unless ``flush`` is False), then close.

        Handles still waiting for a result then raise ``BrokerUnavailable``.
        """
        if self._closed:
            return
        try:
            if flush and self._transport.is_open:
                self._deps.settle()
                self.flush(self.config.connect_timeout)
        finally:
            self._closed = True
            self._transport.close()
            self._fail_pending(BrokerUnavailable("connection closed before the task ended"))


_DEFAULTS = SubmitOptions()


class _SubmissionMode(threading.local):
    """How this thread submits now (class attributes: the defaults, read without a miss)."""

    fire_and_forget = False  # set by taskell.fire and taskell.aio around one submission
    made: TaskHandle[Any, Any] | None = None  # the handle taskell.aio made beforehand


class ConnectionView:
    """A ``Connection`` whose submissions carry options (``Connection.options``): a delay or
    an eta, a priority, an expiry. Give it to a generated ``Client`` like a connection; it has
    no state of its own, so any number of views may share one connection."""

    __slots__ = ("_conn", "_options")

    def __init__(self, conn: Connection, options: SubmitOptions) -> None:
        self._conn = conn
        self._options = options

    def __repr__(self) -> str:
        set_options = {k: v for k, v in vars(self._options).items() if v is not None}
        return f"<taskell.ConnectionView {self._conn.config.masked_url()} {set_options}>"

    @property
    def connection(self) -> Connection:
        """The connection the submissions go through."""
        return self._conn

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        expires: float | timedelta | None = None,
    ) -> ConnectionView:
        """A view with these options changed, the others kept (see ``Connection.options``)."""
        newer = SubmitOptions.make(delay=delay, eta=eta, priority=priority, expires=expires)
        return ConnectionView(self._conn, self._options.combine(newer))

    def submit(
        self, spec: TaskSpec[Any, P, R], args: Mapping[str, object], *, after: Sequence[Ref[object]] = ()
    ) -> TaskHandle[P, R]:
        """``Connection.submit`` with this view's options."""
        return self._conn._submit(spec, args, after, self._options)

    def submit_json(self, spec: TaskSpec[Any, P, R], json_args: str | bytes) -> TaskHandle[P, R]:
        """``Connection.submit_json`` with this view's options."""
        return self._conn._submit_json(spec, json_args, self._options)


def _fail(handle: TaskHandle[Any, Any], error: TaskellError) -> None:
    """End ``handle`` with a local error (also forwarded to dependents as a failure)."""
    deliver_outcome(handle, error, (_wire.FAILED, _wire.error_body(_wire.type_name(type(error)), str(error))))


def _retrying(body: bytes) -> Retrying | None:
    try:
        info = json.loads(body)
        return Retrying(
            attempt=int(info["attempt"]),
            delay_s=float(info["delay_s"]),
            error_type=str(info["error_type"]),
            message=str(info["message"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _reply_error(kind: str | None, handle: TaskHandle[Any, Any], body: bytes) -> TaskellError:
    try:
        info = json.loads(body)
        error_type, text, traceback = str(info["error_type"]), str(info["message"]), str(info["traceback"])
    except (ValueError, KeyError, TypeError):
        error_type, text, traceback = _wire.PAYLOAD_ERROR, f"malformed {kind} reply", ""
    if error_type == _wire.DEPENDENCY_FAILED:
        return dependency_failed(handle.id, info)
    if kind == _wire.ABORTED:
        return TaskAborted(handle.id, text)
    if kind == _wire.REJECTED:
        return PayloadError(handle.task, text)
    if error_type == _wire.TASK_EXPIRED:
        return TaskExpired(handle.id, text)
    if isinstance(info, dict):
        return _wire.task_failed(spec_of(handle), handle.id, info)
    return TaskFailed(handle.id, handle.task, error_type, text, traceback)
