"""Client side of task dependencies: a ``Ref`` passed as an argument (or in ``after=``).

A task whose dependencies have all ended is resolved on the spot: their results are put in
place and it is submitted as usual (or it fails with ``DependencyFailed`` without being sent).
Otherwise its args go, with ``null`` where results will go, as a *join record* to a join
partition queue. Before that, the partition is bound to the ``taskell.outcomes`` exchange with
each pending dependency's id, so the workers' outcome events reach it; and this client
forwards each dependency's outcome itself when it receives it (covering an outcome published
before the binding existed). A joiner (in some worker) holds records and outcomes
unacknowledged until the record fires. See docs/dependencies.md for why no join is lost.
"""

from __future__ import annotations

import functools
import logging
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import _wire
from .errors import DependencyFailed, PayloadError, TaskAborted, TaskellError, TaskFailed
from .handle import Ref, TaskHandle
from .spec import TaskSpec
from .transport import Message

if TYPE_CHECKING:
    from .connection import Connection

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
    if not isinstance(ref, TaskHandle):
        raise TypeError(f"a dependency must be a taskell.TaskHandle, not {type(ref).__name__}")
    return ref


def _set(args: dict[str, Any], path: Path, value: Any) -> None:
    name = str(path[0])
    if len(path) == 1:
        args[name] = value
    else:
        items = list(args[name])
        items[int(path[1])] = value
        args[name] = items


def submit(
    conn: Connection,
    spec: TaskSpec[Any, P, R],
    args: Mapping[str, object],
    refs: list[tuple[Path, TaskHandle[Any, Any]]],
    after: Sequence[Ref[object]],
) -> TaskHandle[P, R]:
    """Submit ``spec`` once its dependencies (``refs`` in ``args``, and ``after``) succeed."""
    deps = {h.id: h for h in [*(h for _, h in refs), *(_handle(r) for r in after)]}
    ended = {dep_id for dep_id, dep in deps.items() if dep.done()}  # one snapshot: deps end meanwhile
    pending = [dep for dep_id, dep in deps.items() if dep_id not in ended]
    resolved = dict(args)
    pending_refs: list[tuple[Path, str]] = []
    for path, dep in refs:
        if dep.id in ended:
            if dep._raw is not None and dep._raw[0] == _wire.RESULT:
                _set(resolved, path, dep.result())
        else:
            _set(resolved, path, None)
            pending_refs.append((path, dep.id))
    for dep in deps.values():  # a dependency that already failed fails this task at once
        if dep.id in ended and (dep._raw is None or dep._raw[0] != _wire.RESULT):
            handle: TaskHandle[P, R] = TaskHandle(conn, spec, str(uuid.uuid4()))  # never sent
            kind, body = dep._raw or (_wire.FAILED, b"{}")
            failure = _wire.dependency_failed_body(dep.id, dep.task, kind, body)
            handle._on_outcome(dependency_failed(handle.id, json.loads(failure)), (_wire.FAILED, failure))
            return handle
    if not pending:
        return conn.submit(spec, resolved)

    # Defaults filled in, JSON forms applied; validation happens on the worker (mypy checked the
    # types already), since the pending values are not known yet.
    template = spec.args.model_construct(**resolved).model_dump_json(warnings=False).encode()
    conn._declare_task_queue(spec.queue)
    _declare_join(conn)
    handle = conn._new_handle(spec)
    join_queue = _wire.join_queue(handle.id)
    binds = [conn._transport.bind(join_queue, _wire.OUTCOMES_EXCHANGE, dep.id) for dep in pending]
    for bound in binds:
        bound.result(conn.config.connect_timeout)
    record = Message(
        body=template,
        type=_wire.JOIN,
        message_id=handle.id,
        reply_to=conn.reply_queue,
        content_type=_wire.JSON,
        persistent=True,
        headers={
            _wire.TASK_HEADER: spec.name,
            _wire.QUEUE_HEADER: spec.queue,
            _wire.FINGERPRINT_HEADER: spec.fingerprint,
            _wire.DEPS_HEADER: [dep.id for dep in pending],
            _wire.REFS_HEADER: json.dumps([[list(path), dep_id] for path, dep_id in pending_refs]),
        },
    )
    conn._publish(join_queue, record, handle.id)
    if len(conn._watched) > 1000:  # keep the list short on long-lived connections
        conn._watched = [dep for dep in conn._watched if not dep.done()]
    for dep in pending:
        conn._watched.append(dep)
        dep._add_done_callback(functools.partial(_forward, conn, dep, join_queue))
    return handle


def _declare_join(conn: Connection) -> None:
    if conn._join_declared:
        return
    _wire.declare_joins(conn._transport, conn.config)
    conn._join_declared = True


def _forward(conn: Connection, dep: TaskHandle[Any, Any], join_queue: str) -> None:
    """Send ``dep``'s outcome to the join partition (the joiner ignores duplicates)."""
    if dep._raw is None or conn._closed:
        return
    kind, body = dep._raw
    conn._publish(join_queue, _wire.outcome(dep.id, dep.task, kind, body), None)


def settle_watched(conn: Connection) -> None:
    """Before closing: make sure every outcome that may have been published before its
    binding existed has reached this process (and so has been forwarded).

    Such an outcome was confirmed into the reply queue before it was routed, hence before our
    bind; a sync message sent to the reply queue now comes after it.
    """
    # Also for dependencies already done: their forwards run on the reply thread right after
    # the outcome is set, and the sync message is handled after that.
    owners = {id(dep._conn): dep._conn for dep in conn._watched if not dep._conn._closed}
    for owner in owners.values():
        try:
            sync_replies(owner, conn.config.connect_timeout)
        except (TaskellError, TimeoutError) as exc:  # closing must still flush what it can
            log.warning("could not sync the replies of %r: %s", owner, exc)
    conn._watched.clear()


def sync_replies(conn: Connection, timeout: float) -> None:
    """Wait until everything already in ``conn``'s reply queue has been processed."""
    token = str(uuid.uuid4())
    synced = conn._syncs[token] = threading.Event()
    message = Message(body=b"", type=_wire.SYNC, correlation_id=token)
    conn._transport.publish("", conn.reply_queue, message, mandatory=True).result(timeout)
    if not synced.wait(timeout):
        raise TimeoutError(f"reply queue not drained within {timeout} s")


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
    else:
        error_type, traceback = str(cause_info.get("error_type")), str(cause_info.get("traceback", ""))
        cause = TaskFailed(root_id, task, error_type, text, traceback)
    return DependencyFailed(task_id, root_id, cause)
