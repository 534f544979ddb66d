"""Client side of task dependencies: a ``Ref`` passed as an argument (or in ``after=``).

A task whose dependencies have all ended is resolved on the spot: their results are put in
place and it is submitted as usual (or it fails with ``DependencyFailed`` without being sent).
Otherwise its args go, with ``null`` where results will go, as a *join record* to a join
partition queue. Before that, the partition is bound to the ``taskell.outcomes`` exchange with
each pending dependency's id, so the workers' outcome events reach it; and this client
forwards each dependency's outcome itself when it receives it (covering an outcome published
before the binding existed). A joiner (in some worker) holds records and outcomes
unacknowledged until the record fires. See docs/dependencies.md for why no join is lost.

Each ``Connection`` owns one ``DependencyTracker``, built with the few things of the connection
it uses. A dependency may be a handle of another connection: its outcome arrives on that
connection's thread, and closing syncs that connection's reply queue through the handle's
``HandleOwner``.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from . import _tracing, _wire
from ._options import SubmitOptions
from .config import Config
from .errors import DependencyFailed, PayloadError, TaskAborted, TaskellError, TaskExpired
from .handle import Ref, TaskHandle, deliver_outcome, final_reply, owner_of, when_done
from .spec import TaskSpec
from .transport import Message, Transport

log = logging.getLogger("taskell.client")

P = TypeVar("P")
R = TypeVar("R")

Path = tuple[str | int, ...]


def find_refs(args: Mapping[str, object]) -> list[tuple[Path, TaskHandle[Any, Any]]]:
    """Every ``Ref`` among ``args``: whole arguments, or items of a list argument."""
    refs: list[tuple[Path, TaskHandle[Any, Any]]] = []
    for name, value in args.items():
        if isinstance(value, Ref):
            refs.append(((name,), _handle(value)))
        elif isinstance(value, (list, tuple)):
            refs.extend(((name, i), _handle(item)) for i, item in enumerate(value) if isinstance(item, Ref))
    return refs


def _handle(ref: Ref[Any]) -> TaskHandle[Any, Any]:
    handle = ref._task_handle()  # a taskell.aio handle gives the handle it wraps
    if handle is None:
        raise TypeError(f"a dependency must be a taskell.TaskHandle, not {type(ref).__name__}")
    return handle


def _set(args: dict[str, Any], path: Path, value: Any) -> None:
    name = str(path[0])
    if len(path) == 1:
        args[name] = value
    else:
        items = list(args[name])
        items[int(path[1])] = value
        args[name] = items


class NewHandle(Protocol):
    """The connection's factory of handles for new task ids."""

    def __call__(self, spec: TaskSpec[Any, P, R], *, expect_reply: bool = True) -> TaskHandle[P, R]: ...


class Submit(Protocol):
    """The connection's submission (validate, publish) with options."""

    def __call__(
        self,
        spec: TaskSpec[Any, P, R],
        args: Mapping[str, object],
        after: Sequence[Ref[object]],
        options: SubmitOptions,
    ) -> TaskHandle[P, R]: ...


class DependencyTracker:
    """One connection's side of task dependencies: join records, bindings, forwards, and the
    sync of its reply queue at close. Thread-safe; forwards run on the connection's thread.

    It gets what it needs of its connection explicitly:

    Args:
        transport: binds join partitions, declares the join topology, publishes syncs.
        config: timeouts and queue arguments.
        reply_queue: the connection's reply queue (join records name it as ``reply_to``).
        new_handle: a handle for a new task id; registered for replies if ``expect_reply``.
        submit: submit a task whose arguments hold no dependency any more.
        publish: publish to a queue in the background, confirm awaited at close; a refusal
            fails the given task's handle.
        declare_queue: declare a task's queue (once).
        is_open: False once the connection is closed.
    """

    def __init__(
        self,
        transport: Transport,
        config: Config,
        reply_queue: str,
        *,
        new_handle: NewHandle,
        submit: Submit,
        publish: Callable[[str, Message, str | None], object],
        declare_queue: Callable[[TaskSpec[Any, Any, Any]], None],
        is_open: Callable[[], bool],
    ) -> None:
        self._transport = transport
        self._config = config
        self._reply_queue = reply_queue
        self._new_handle = new_handle
        self._submit = submit
        self._publish = publish
        self._declare_queue = declare_queue
        self._is_open = is_open
        self._lock = threading.Lock()
        self._watched: list[TaskHandle[Any, Any]] = []  # dependencies whose outcome we forward
        self._syncs: dict[str, threading.Event] = {}
        self._join_declared = False

    def submit(
        self,
        spec: TaskSpec[Any, P, R],
        args: Mapping[str, object],
        refs: list[tuple[Path, TaskHandle[Any, Any]]],
        after: Sequence[Ref[object]],
        options: SubmitOptions,
    ) -> TaskHandle[P, R]:
        """Submit ``spec`` once its dependencies (``refs`` in ``args``, and ``after``) succeed;
        a delay (or eta) of ``options`` counts from then."""
        options.delay_now()  # an eta too far away fails now, not in a joiner
        deps = {h.id: h for h in [*(h for _, h in refs), *(_handle(r) for r in after)]}
        # One snapshot: dependencies end meanwhile. A final reply is set before done() is true.
        ended = {dep_id: final_reply(dep) for dep_id, dep in deps.items() if dep.done()}
        pending = [dep for dep_id, dep in deps.items() if dep_id not in ended]
        resolved = dict(args)
        pending_refs: list[tuple[Path, str]] = []
        for path, dep in refs:
            if dep.id in ended:
                raw = ended[dep.id]
                if raw is not None and raw[0] == _wire.RESULT:
                    _set(resolved, path, dep.result())
            else:
                _set(resolved, path, None)
                pending_refs.append((path, dep.id))
        for dep_id, raw in ended.items():  # a dependency that already failed fails this task at once
            if raw is None or raw[0] != _wire.RESULT:
                handle = self._new_handle(spec, expect_reply=False)  # never sent
                kind, body = raw or (_wire.FAILED, b"{}")
                failure = _wire.dependency_failed_body(dep_id, deps[dep_id].task, kind, body)
                error = dependency_failed(handle.id, json.loads(failure))
                deliver_outcome(handle, error, (_wire.FAILED, failure))
                return handle
        if not pending:
            return self._submit(spec, resolved, (), options)

        # Defaults filled in, JSON forms applied; validation happens on the worker (mypy checked
        # the types already), since the pending values are not known yet.
        template = spec.args.model_construct(**resolved).model_dump_json(warnings=False).encode()
        self._declare_queue(spec)
        self._declare_join()
        handle = self._new_handle(spec)
        join_queue = _wire.join_queue(handle.id)
        binds = [self._transport.bind(join_queue, _wire.OUTCOMES_EXCHANGE, dep.id) for dep in pending]
        for bound in binds:
            bound.result(self._config.connect_timeout)
        record = Message(
            body=template,
            type=_wire.JOIN,
            message_id=handle.id,
            reply_to=self._reply_queue,
            content_type=_wire.JSON,
            persistent=True,
            headers={
                _wire.TASK_HEADER: spec.name,
                _wire.QUEUE_HEADER: spec.queue,
                _wire.FINGERPRINT_HEADER: spec.fingerprint,
                _wire.DEPS_HEADER: [dep.id for dep in pending],
                _wire.REFS_HEADER: json.dumps([[list(path), dep_id] for path, dep_id in pending_refs]),
                **_wire.join_options(
                    delay=options.delay,
                    eta=options.eta,
                    expires=spec.expires if options.expires is None else options.expires,
                ),
            },
            priority=spec.priority if options.priority is None else options.priority,
        )
        # The record carries the trace context to the task it fires; its span links to the
        # dependencies' own submissions.
        links = [dep._trace for dep in deps.values()]
        with _tracing.sending(spec.name, spec.queue, handle.id, record.headers, links) as traced:
            handle._trace = traced
            self._publish(join_queue, record, handle.id)
        with self._lock:
            if len(self._watched) > 1000:  # keep the list short on long-lived connections
                self._watched = [dep for dep in self._watched if not dep.done()]
            self._watched.extend(pending)
        for dep in pending:
            when_done(dep, functools.partial(self._forward, dep, join_queue))
        return handle

    def _declare_join(self) -> None:
        if not self._join_declared:
            _wire.declare_joins(self._transport, self._config)
            self._join_declared = True

    def _forward(self, dep: TaskHandle[Any, Any], join_queue: str) -> None:
        """Send ``dep``'s outcome to the join partition (the joiner ignores duplicates)."""
        raw = final_reply(dep)
        if raw is None or not self._is_open():
            return
        kind, body = raw
        self._publish(join_queue, _wire.outcome(dep.id, dep.task, kind, body), None)

    def settle(self) -> None:
        """Before closing: make sure every outcome that may have been published before its
        binding existed has reached this process (and so has been forwarded).

        Such an outcome was confirmed into its connection's reply queue before it was routed,
        hence before our bind; a sync message sent to that reply queue now comes after it.
        """
        # Also for dependencies already done: their forwards run on the reply thread right
        # after the outcome is set, and the sync message is handled after that.
        with self._lock:
            watched, self._watched = self._watched, []
        for owner in dict.fromkeys(map(owner_of, watched)):  # each connection once, in order
            try:
                owner.sync_replies(self._config.connect_timeout)
            except (TaskellError, TimeoutError) as exc:  # closing must still flush what it can
                log.warning("could not sync the replies of a connection: %s", exc)

    def sync_replies(self, timeout: float) -> None:
        """Wait until everything already in this connection's reply queue has been handled
        (at once if the connection is closed)."""
        if not self._is_open():
            return
        token = str(uuid.uuid4())
        synced = self._syncs[token] = threading.Event()
        message = Message(body=b"", type=_wire.SYNC, correlation_id=token)
        try:
            self._transport.publish("", self._reply_queue, message, mandatory=True).result(timeout)
            if not synced.wait(timeout):
                raise TimeoutError(f"reply queue not drained within {timeout} s")
        finally:
            self._syncs.pop(token, None)

    def on_sync(self, token: str | None) -> None:
        """A sync message came back through the reply queue (on the connection's thread)."""
        synced = self._syncs.get(token or "")
        if synced is not None:
            synced.set()


def dependency_failed(task_id: str, info: Mapping[str, Any]) -> DependencyFailed:
    """The ``DependencyFailed`` described by a failure body (see ``_wire.dependency_failed_body``)."""
    root_id = str(info.get("dependency_id"))
    cause_info = info.get("cause") if isinstance(info.get("cause"), dict) else {}
    assert isinstance(cause_info, dict)
    kind, task = str(cause_info.get("kind")), str(cause_info.get("task"))
    text = str(cause_info.get("message", ""))
    cause: TaskellError
    if kind == _wire.ABORTED:
        cause = TaskAborted(root_id, text)
    elif kind == _wire.REJECTED:
        cause = PayloadError(task, text)
    elif cause_info.get("error_type") == _wire.TASK_EXPIRED:
        cause = TaskExpired(root_id, text)
    else:
        cause = _wire.task_failed(None, root_id, cause_info)
    return DependencyFailed(task_id, root_id, cause)
