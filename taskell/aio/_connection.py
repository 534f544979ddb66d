"""``taskell.aio.connect()`` and ``taskell.aio.Connection``: the asyncio twin of the sync client.

An async connection wraps a sync ``taskell.Connection``: the same I/O thread publishes, takes
the confirms and the replies, reconnects and republishes, so every guarantee of the sync side
holds. What differs is only where the caller waits:

* a submission that needs no broker round trip (its queue is declared, no dependency) is
  published from the loop: validating and queueing the publish for the I/O thread;
* one that does (the first to a queue declares it; a dependency binds its join partition)
  runs on the connection's submission thread while its handle is returned at once; the
  submissions after it wait in a queue on the loop and are published, in call order, once it
  is done (only slow ones ever go to that thread: a thread busy with many quick ones would
  take the GIL from the loop);
* connecting, flushing, closing, aborting, inspecting and attaching run in the loop's default
  executor;
* replies wake the loop through the handles' ``Waker``, once per loop turn.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections import deque
from collections.abc import Callable, Generator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from pydantic import ValidationError

from .. import _wire
from .. import connection as _sync
from .._deps import find_refs
from .._options import SubmitOptions
from ..config import Config
from ..errors import BrokerUnavailable, PayloadError, TaskellError
from ..handle import Ref
from ..handle import TaskHandle as SyncTaskHandle
from ..spec import TaskSpec
from ._handle import TaskHandle, Waker

__all__ = ["Connection", "ConnectionView", "attach", "connect", "fire"]

A = ParamSpec("A")
P = TypeVar("P")
R = TypeVar("R")


class Connecting:
    """What ``connect()`` returns: ``await`` it for the connection, or use it with ``async with``."""

    __slots__ = ("_conn", "_open")

    def __init__(self, open_sync: Callable[[], _sync.Connection]) -> None:
        self._open = open_sync
        self._conn: Connection | None = None

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._connect().__await__()

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, self._open)
        try:
            sync_conn = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # it may still open: close it then
            raise
        return Connection(sync_conn, loop)

    async def __aenter__(self) -> Connection:
        self._conn = await self._connect()
        return self._conn

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._conn is not None
        await self._conn.close(flush=exc_type is None)


def _close_opened(opening: asyncio.Future[_sync.Connection]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        conn = opening.result()
        asyncio.get_running_loop().run_in_executor(None, functools.partial(conn.close, flush=False))


def connect(
    url: str | None = None, *, config: Config | None = None, results: str | None = None
) -> Connecting:
    """Connect to the broker, as ``taskell.connect`` does, without blocking the event loop::

        async with taskell.aio.connect("amqp://guest:guest@localhost:5672/%2F") as conn:
            total = await AsyncClient(conn).sum(numbers=[1, 2, 3])

    or ``conn = await taskell.aio.connect(...)`` and later ``await conn.close()``. Leaving
    ``async with`` waits (without blocking the loop) until every submission is confirmed.

    Args:
        url: the broker URL; or give ``config``.
        config: a loaded ``Config``.
        results: a durable results queue to use, by name (see ``taskell.connect``).

    Raises:
        BrokerUnavailable: the broker cannot be reached.
        ConfigError: the URL or configuration is invalid.
    """
    if config is not None and url is not None:
        raise ValueError("give a url or a config, not both")
    return Connecting(functools.partial(_sync.connect, url, config=config, results=results))


def fire(stub: Callable[A, TaskHandle[Any, Any]], /, *args: A.args, **kwargs: A.kwargs) -> str:
    """Submit a task without asking for any reply (fire and forget); returns its task id at once.

    ``stub`` is a method of a generated ``AsyncClient``::

        task_id = taskell.aio.fire(demo.square, x=3)

    The task is published persistent and confirmed like any other (leaving ``async with
    connect()`` waits for the confirm).
    """
    conn = getattr(getattr(stub, "__self__", None), "_conn", None)
    if isinstance(conn, ConnectionView):
        conn = conn.connection
    if not isinstance(conn, Connection):
        raise TypeError(
            "fire() takes a method of a generated AsyncClient, e.g. taskell.aio.fire(demo.square, x=3)"
        )
    conn._firing = True  # the loop runs one submission at a time: only this call sees it
    try:
        return stub(*args, **kwargs).id
    finally:
        conn._firing = False


async def attach(conn: Connection, spec: TaskSpec[Any, P, R], task_id: str) -> TaskHandle[P, R]:
    """A handle for task ``task_id`` of type ``spec``, submitted earlier through a connection
    with the same ``results`` queue as ``conn`` (see ``taskell.attach``)::

        async with taskell.aio.connect(results="taskell.reply.myapp") as conn:
            total = await (await taskell.aio.attach(conn, demo.SUM, task_id))
    """
    return await conn.attach(spec, task_id)


class Connection:
    """An asyncio client connection: submits tasks and hands out ``taskell.aio.TaskHandle``s.

    Use it from the event loop that opened it.
    """

    def __init__(self, conn: _sync.Connection, loop: asyncio.AbstractEventLoop) -> None:
        self._conn = conn
        self._loop = loop
        self._waker = Waker(loop)
        # Submissions not yet handed to the I/O thread, in call order: a slow one (it waits for
        # the broker) runs on the submission thread, and the ones after it wait their turn.
        self._queue: deque[_Pending] = deque()
        self._busy = False  # a slow one is running
        self._idle = asyncio.Event()  # the queue is empty and none is running
        self._idle.set()
        self._submitter: ThreadPoolExecutor | None = None
        self._firing = False
        self._closing = False

    def __repr__(self) -> str:
        return f"<taskell.aio.Connection {self.config.masked_url()}>"

    @property
    def config(self) -> Config:
        """The connection's configuration."""
        return self._conn.config

    @property
    def sync(self) -> _sync.Connection:
        """The sync ``taskell.Connection`` underneath (for code that runs in other threads)."""
        return self._conn

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close(flush=exc_type is None)

    # Submitting

    def submit(
        self, spec: TaskSpec[Any, P, R], args: Mapping[str, object], *, after: Sequence[Ref[object]] = ()
    ) -> TaskHandle[P, R]:
        """Validate ``args`` and publish one task; generated ``AsyncClient`` methods call this.

        Returns the handle at once, without blocking the loop. Errors in the arguments raise
        here; a broker error (a refused publish, a queue the broker would not declare) comes
        out of ``await handle``.

        Raises:
            PayloadError: ``args`` do not validate against the task's model.
            BrokerUnavailable: the connection is closed.
        """
        return self._submit(spec, args, after, _DEFAULTS)

    def submit_json(self, spec: TaskSpec[Any, P, R], json_args: str | bytes) -> TaskHandle[P, R]:
        """Like ``submit``, with the arguments as JSON."""
        return self._submit_json(spec, json_args, _DEFAULTS)

    def options(
        self,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        expires: float | timedelta | None = None,
    ) -> ConnectionView:
        """A view of this connection whose submissions carry these options (see
        ``taskell.Connection.options``); give it to a generated ``AsyncClient``::

            AsyncClient(conn.options(delay=60, priority=9)).square(x=3)
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
        body = None
        if not after:
            try:
                body = spec.args.model_validate(args).model_dump_json().encode()
            except ValidationError as exc:
                if not find_refs(args):  # a Ref makes validation fail: then the joiner checks
                    raise PayloadError(spec.name, _wire.describe(exc)) from None
        return self._send(spec, args, body, after, options)

    def _submit_json(
        self, spec: TaskSpec[Any, P, R], json_args: str | bytes, options: SubmitOptions
    ) -> TaskHandle[P, R]:
        try:
            body = spec.args.model_validate_json(json_args).model_dump_json().encode()
        except ValidationError as exc:
            raise PayloadError(spec.name, _wire.describe(exc)) from None
        return self._send(spec, {}, body, (), options)

    def _send(
        self,
        spec: TaskSpec[Any, P, R],
        args: Mapping[str, object],
        body: bytes | None,
        after: Sequence[Ref[object]],
        options: SubmitOptions,
    ) -> TaskHandle[P, R]:
        """Publish a task whose ``body`` is validated (None: ``args`` hold dependencies)."""
        conn = self._conn
        if self._closing or conn._closed:
            raise BrokerUnavailable("connection is closed")
        if body is not None and len(body) > conn.config.max_payload_bytes:
            raise PayloadError(spec.name, f"args are {len(body)} bytes, over max_payload_bytes")
        options.delay_now()  # an eta too far away raises ValueError here
        made: SyncTaskHandle[P, R] = SyncTaskHandle(conn._owner, spec, str(uuid.uuid4()))
        handle = TaskHandle(self._waker, made)
        if body is not None and not self._queue and not self._busy and spec.queue in conn._declared:
            with _making(conn, made, self._firing):  # quick, and nothing before it: errors raise here
                conn._publish_task(spec, body, options)
        else:
            self._queue.append(_Pending(made, spec, args, body, after, options, self._firing))
            self._pump()
        return handle

    def _pump(self) -> None:
        """Publish the queued submissions in order (on the loop): the quick ones from here,
        the next slow one on the submission thread, which calls this again once it is done."""
        conn = self._conn
        while self._queue and not self._busy:
            pending = self._queue.popleft()
            if pending.quick(conn):
                pending.run(conn)
                continue
            self._busy = True
            self._idle.clear()
            if self._submitter is None:
                self._submitter = ThreadPoolExecutor(1, thread_name_prefix="taskell-aio-submit")
            done = self._submitter.submit(pending.run, conn)
            done.add_done_callback(lambda _f: self._loop.call_soon_threadsafe(self._slow_done))
        if not self._queue and not self._busy:
            self._idle.set()

    def _slow_done(self) -> None:
        self._busy = False
        self._pump()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every submission so far is confirmed by the broker.

        Raises:
            TimeoutError: some are still unconfirmed after ``timeout`` seconds.
        """
        await self._submitted()
        await self._loop.run_in_executor(None, self._conn.flush, timeout)

    async def _submitted(self) -> None:
        """Wait until every submission is handed to the I/O thread."""
        await self._idle.wait()

    # Aborting, inspecting, attaching

    async def abort(self, task_id: str, *, wait: float = 0.0) -> list[dict[str, Any]]:
        """Ask every worker to abort task ``task_id`` (see ``taskell.Connection.abort``)."""
        return await self._loop.run_in_executor(None, functools.partial(self._conn.abort, task_id, wait=wait))

    async def inspect(self, *, wait: float = 1.0) -> list[dict[str, Any]]:
        """Ask every live worker for its status; the answers received within ``wait`` seconds."""
        return await self._loop.run_in_executor(None, functools.partial(self._conn.inspect, wait=wait))

    async def attach(self, spec: TaskSpec[Any, P, R], task_id: str) -> TaskHandle[P, R]:
        """See ``taskell.aio.attach``."""
        made = await self._loop.run_in_executor(None, self._conn.attach, spec, task_id)
        return TaskHandle(self._waker, made)

    # Closing

    async def close(self, *, flush: bool = True) -> None:
        """Wait for unconfirmed submissions (unless ``flush`` is False), then close; handles
        still waiting for a result then raise ``BrokerUnavailable``."""
        if self._closing:
            return
        self._closing = True
        try:
            await self._submitted()
        finally:
            await self._loop.run_in_executor(None, functools.partial(self._conn.close, flush=flush))
            if self._submitter is not None:
                self._submitter.shutdown(wait=False)


@dataclass(frozen=True, eq=False)
class _Pending:
    """A submission whose handle is out, not yet handed to the I/O thread."""

    made: SyncTaskHandle[Any, Any]
    spec: TaskSpec[Any, Any, Any]
    args: Mapping[str, object]
    body: bytes | None  # validated; None: ``args`` hold dependencies
    after: Sequence[Ref[object]]
    options: SubmitOptions
    fire: bool

    def quick(self, conn: _sync.Connection) -> bool:
        """True if it needs no broker round trip: its queue is declared, no dependency."""
        return self.body is not None and self.spec.queue in conn._declared

    def run(self, conn: _sync.Connection) -> None:
        """Hand it to the I/O thread (waiting for the broker if not ``quick``); an error ends
        the handle, which is out already."""
        try:
            with _making(conn, self.made, self.fire):
                if self.body is not None:
                    conn._publish_task(self.spec, self.body, self.options)
                else:
                    conn._submit(self.spec, self.args, self.after, self.options)
        except Exception as exc:
            conn._handles.pop(self.made.id, None)
            error = exc if isinstance(exc, TaskellError) else BrokerUnavailable(f"submission failed: {exc!r}")
            _sync._fail(self.made, error)


class _making:
    """Inside: the sync connection's next handle on this thread is ``made``, and the
    submission is fire-and-forget if ``fire``."""

    def __init__(self, conn: _sync.Connection, made: SyncTaskHandle[Any, Any], fire: bool) -> None:
        self._conn, self._made, self._fire = conn, made, fire

    def __enter__(self) -> None:
        self._conn._local.made = self._made
        self._conn._local.fire_and_forget = self._fire

    def __exit__(self, *exc: object) -> None:
        self._conn._local.made = None
        self._conn._local.fire_and_forget = False


_DEFAULTS = SubmitOptions()


class ConnectionView:
    """An async ``Connection`` whose submissions carry options (``Connection.options``)."""

    __slots__ = ("_conn", "_options")

    def __init__(self, conn: Connection, options: SubmitOptions) -> None:
        self._conn = conn
        self._options = options

    def __repr__(self) -> str:
        set_options = {k: v for k, v in vars(self._options).items() if v is not None}
        return f"<taskell.aio.ConnectionView {self._conn.config.masked_url()} {set_options}>"

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
        """A view with these options changed, the others kept."""
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
