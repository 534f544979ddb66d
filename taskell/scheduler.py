"""``Scheduler``: submits the tasks of a package's schedules when due, leader-elected on the broker.

Every scheduler consumes the durable queue ``taskell.scheduler``, declared with
``x-single-active-consumer``: the broker delivers to one consumer only, the leader. The queue
holds the state, a persistent JSON message: for each schedule, the due time up to which it is
done (fired, or skipped by the catch-up policy, or when a leader first saw it). The leader
keeps one message of the queue unacknowledged while it leads (prefetch 1), so when its
connection dies the broker requeues it and hands it to the next consumer, which takes over.

Exactly once: a submission is published with ``BCC: taskell.scheduler``, so the one publish
puts the task in its task queue and a copy in the state queue, behind the state it was fired
from; the copy says "done up to this due time" like a state does. Rules:

- the leader fires nothing before the state of its previous firing is confirmed;
- it acknowledges a message of the state queue (a state or a copy) only once a state of its
  own that covers it is confirmed, so it is behind it in the queue;
- on taking over, it first stores the state it received again (at the tail), and fires only
  once that comes back: every copy in between has been read by then.
- it publishes its submissions and states on the connection whose channel holds that message,
  never again on another (``replay=False``): the broker handles a channel's frames in order
  and requeues the held message last, so nothing of a leadership that ended arrives later.

A leader that dies between a submission and the state after it leaves the copy in the queue,
and the next leader reads it before it fires anything: that due time is not submitted again.

Everything below runs on the state connection's I/O thread (deliveries, timers, confirms are
handed to it), so the state needs no lock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from . import _tracing, _wire
from .config import Config
from .errors import BrokerUnavailable, PayloadError
from .schedule import Schedule
from .transport import BCC_HEADER, Delivery, Message, Transport, open_transport

__all__ = ["CATCH_UP_LIMIT", "STATE_QUEUE", "Scheduler", "due_to_fire", "task_id"]

log = logging.getLogger("taskell.scheduler")

STATE_QUEUE = "taskell.scheduler"
STATE_TYPE = "taskell-schedule-state"
SCHEDULE_HEADER = "taskell-schedule"  # on a scheduled task: its schedule's name
DUE_HEADER = "taskell-due"  # on a scheduled task: its due time (ISO 8601 UTC)
CATCH_UP_LIMIT = 100  # due times fired at most per schedule by catch-up policy "all"
MAX_SLEEP = 60.0  # seconds: the timer re-reads the clock at least this often
RETRY_AFTER = 1.0  # seconds before a leader whose submission failed tries again
# A quorum state queue counts returns (each failover returns the held message once); RabbitMQ 4
# drops a message returned 20 times unless the queue says otherwise. -1 ("unlimited" on 4)
# would drop it at its first return on 3.x, so: a limit never reached.
DELIVERY_LIMIT = 1_000_000
_NAMESPACE = uuid.UUID("5b3b0a52-7c0e-4f43-9c5e-2f7a1d2b9e61")

CatchUp = Literal["latest", "all", "none"]


def task_id(schedule: str, due: datetime) -> str:
    """The task id of ``schedule``'s submission for ``due``: the same on every scheduler."""
    return str(uuid.uuid5(_NAMESPACE, f"{schedule}@{_wire.utc_iso(due)}"))


def due_to_fire(
    schedule: Schedule, done_until: datetime, now: datetime, policy: CatchUp, *, taking_over: bool
) -> tuple[list[datetime], datetime | None]:
    """The due times of ``schedule`` to submit at ``now``, given that it is done up to
    ``done_until``; and the new ``done_until`` (None: unchanged).

    The due times in (done_until, now]: on time, only the latest is due (one); more are ones
    missed. ``latest`` fires the latest, ``all`` each of them (at most ``CATCH_UP_LIMIT``, the
    latest ones), ``none`` the latest only when not ``taking_over`` (a leader firing on time)."""
    count, last = _due_between(schedule, done_until, now, CATCH_UP_LIMIT)
    if not count:
        return [], None
    if count > 1:
        log.warning(
            "schedule %s missed %d due times from %s to %s (schedule_catch_up = %r)",
            schedule.name,
            count - 1 if not taking_over else count,
            _wire.utc_iso(last[0]) if count <= CATCH_UP_LIMIT else "earlier",
            _wire.utc_iso(last[-1]),
            policy,
        )
    if policy == "all":
        if count > CATCH_UP_LIMIT:
            log.warning("schedule %s: firing the latest %d only", schedule.name, CATCH_UP_LIMIT)
        fire = list(last)
    elif policy == "none" and taking_over:
        fire = []
    else:
        fire = [last[-1]]
    return fire, last[-1]


def _due_between(
    schedule: Schedule, after: datetime, until: datetime, keep: int
) -> tuple[int, list[datetime]]:
    """How many due times fall in (after, until], and the last ``keep`` of them."""
    if until <= after:
        return 0, []
    if schedule.every is not None:  # arithmetic: a long outage must not iterate every second
        step = timedelta(seconds=schedule.every)
        first = next(schedule.due_after(after))
        if first > until:
            return 0, []
        count = math.floor((until - first) / step) + 1
        start = max(0, count - keep)
        return count, [first + i * step for i in range(start, count)]
    kept: deque[datetime] = deque(maxlen=keep)
    count = 0
    for due in schedule.due_after(after):
        if due > until:
            break
        kept.append(due)
        count += 1
    return count, list(kept)


class Scheduler:
    """Submits each schedule's task when due; any number may run, one leads.

    Examples:
        >>> Scheduler(generated.demo.SCHEDULES, Config.load("taskell.toml")).run()

    Args:
        schedules: the schedules to fire (the generated package's ``SCHEDULES``).
        config: broker and ``schedule_catch_up``; defaults to ``Config.load()``.

    Raises:
        ValueError: two schedules have the same name.
        PayloadError: a schedule's args do not validate against its task's model.
    """

    def __init__(self, schedules: Sequence[Schedule], config: Config | None = None) -> None:
        self.config = config or Config.load()
        self.schedules = {s.name: s for s in schedules}
        if len(self.schedules) != len(schedules):
            raise ValueError("two schedules have the same name")
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._bodies = {name: _body(s) for name, s in self.schedules.items()}  # args, validated
        self._transport: Transport | None = None
        self._task_queues: dict[str, dict[str, Any]] = {}  # queue name -> its declare arguments
        self._state: dict[str, datetime] = {}  # schedule -> done until (the leader's view)
        self._held: Delivery | None = None  # a message of the state queue, unacked while leading
        self._leading = False
        self._taking_over = False  # leading, and not yet fired from a state of its own
        self._epoch = 0  # bumped when leadership ends: late callbacks of an older one are void
        self._seq = 0  # the latest state message's sequence number
        self._published: int | None = None  # sequence number of this leader's latest stored state
        self._stored: dict[str, datetime] | None = None  # and what it says
        self._busy = False  # a firing is in flight
        self._timer = 0
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._stopped = threading.Event()
        self._lost: BaseException | None = None
        self.fired = 0  # due times submitted by this scheduler (for logs and tests)

    def __enter__(self) -> Scheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # Lifecycle

    def start(self) -> None:
        """Connect, stand by on the state queue (leading if the broker makes this consumer
        the active one) and answer inspect requests; returns at once."""
        config = self.config
        if config.broker_url().startswith("memory://"):
            raise ValueError("taskell scheduler needs RabbitMQ (single active consumers), not memory://")
        transport = self._transport = open_transport(config, name="taskell-scheduler")
        try:
            arguments: dict[str, Any] = {"x-single-active-consumer": True, "x-queue-type": config.queue_type}
            if config.queue_type == "quorum":
                arguments["x-delivery-limit"] = DELIVERY_LIMIT
            _bootstrap(config, arguments)
            transport.declare_queue(STATE_QUEUE, durable=True, arguments=arguments).result()
            for spec in {s.task.queue: s.task for s in self.schedules.values()}.values():
                task_queue = _wire.queue_arguments(config, priorities=spec.queue_priorities, queue=spec.queue)
                self._task_queues[spec.queue] = task_queue
                transport.declare_queue(spec.queue, durable=True, arguments=task_queue).result()
            transport.declare_exchange(config.abort_exchange, "fanout").result()
            control = transport.declare_queue(_wire.control_queue(), durable=False, auto_delete=True).result()
            transport.bind(control, config.abort_exchange).result()
            transport.consume(control, self._on_control, auto_ack=True).result()
            transport.set_prefetch(1, per_consumer=True).result()
            transport.add_on_reconnect(self._on_reconnect)
            transport.consume(STATE_QUEUE, self._on_state).result()
        except BaseException:
            transport.close()
            raise
        transport.add_on_lost(self._on_lost)
        log.info("scheduler %s standing by with %d schedule(s)", self.name, len(self.schedules))

    def stop(self) -> None:
        """Stop firing, let a firing in flight finish (10 s at most), then disconnect: the
        state message goes back to the queue, for the next scheduler."""
        if self._stopping:
            return
        self._stopping = True
        if self._transport is not None:
            self._idle.wait(10)
            self._transport.close()
        self._stopped.set()

    def run(self) -> int:
        """Start, then block until SIGTERM/SIGINT (a clean stop) and return 0.

        Raises:
            BrokerUnavailable: starting failed, or the broker connection was lost for good.
        """
        self.start()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            threading.Thread(target=self.stop, name="taskell-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not self._stopped.wait(0.5):
            pass
        if self._lost is not None:
            raise BrokerUnavailable(f"scheduler {self.name} lost its broker connection: {self._lost}")
        return 0

    def status(self) -> dict[str, Any]:
        """What ``taskell inspect`` shows: the role and each schedule's next due time."""
        now = datetime.now(UTC)
        schedules = []
        for name, schedule in self.schedules.items():
            after = max(self._state.get(name, now), now) if self._leading else now
            schedules.append(
                {
                    "name": name,
                    "task": schedule.task.name,
                    "next_due": _wire.utc_iso(next(schedule.due_after(after))),
                }
            )
        return {
            "scheduler": self.name,
            "role": "leader" if self._leading else "standby",
            "schedules": schedules,
        }

    def _on_lost(self, error: BaseException) -> None:
        log.error("scheduler %s lost its broker connection: %s", self.name, error)
        self._lost = error
        self._stopping = True
        self._stopped.set()

    def _on_reconnect(self) -> None:
        # The broker requeued the state message with the old connection; whoever is active now
        # receives it. Until then this scheduler does not lead.
        if self._leading:
            log.warning("scheduler %s: connection lost, no longer leading", self.name)
        self._end_leadership()

    def _end_leadership(self) -> None:
        self._leading = False
        self._taking_over = False
        self._held = None
        self._state = {}  # what is stored is in the queue; anything else was not
        self._published = None
        self._stored = None
        self._busy = False
        self._idle.set()
        self._epoch += 1
        self._timer += 1

    # Control requests (I/O thread)

    def _on_control(self, delivery: Delivery) -> None:
        message = delivery.message
        if message.type != _wire.INSPECT or not message.reply_to or self._transport is None:
            return  # aborts are for workers
        reply = _wire.control_reply(message.type, message.message_id, self.status())
        self._transport.publish("", message.reply_to, reply, mandatory=False)

    # The state (I/O thread)

    def _on_state(self, delivery: Delivery) -> None:
        """A message of the state queue: a state, or a copy of a submission (see the top)."""
        transport = self._transport
        assert transport is not None
        if self._stopping:
            transport.reject(delivery.tag, requeue=True)
            return
        seq, by, done = _parse(delivery.message)
        if seq is not None:
            self._seq = max(self._seq, seq)
        for name, when in done.items():
            self._state[name] = max(when, self._state.get(name, when))
        if not self._leading:
            self._leading = self._taking_over = True
            log.info("scheduler %s is leading (state %s)", self.name, seq)
        elif by == self.name and seq == self._published:
            self._held = delivery  # its own state came back: everything before it is read
            self._tick()
            return
        elif self._stored is not None and all(
            name in self._stored and when <= self._stored[name] for name, when in done.items()
        ):
            transport.ack(delivery.tag)  # a stored state behind it in the queue says as much
            return
        self._held = delivery
        self._commit([])  # store what it says behind it before acknowledging it

    def _tick(self) -> None:
        """Fire what is due, or sleep until the next due time."""
        if self._stopping or not self._leading or self._busy or self._held is None:
            return
        taking_over, self._taking_over = self._taking_over, False
        if taking_over:
            log.info("scheduler %s took over: its state is stored, firing from it", self.name)
        now = datetime.now(UTC)
        fires: list[tuple[Schedule, datetime]] = []
        changed = False
        for name, schedule in self.schedules.items():
            done_until = self._state.get(name)
            if done_until is None:
                self._state[name] = now  # first seen: from now on
                changed = True
                continue
            due, until = due_to_fire(
                schedule, done_until, now, self.config.schedule_catch_up, taking_over=taking_over
            )
            fires.extend((schedule, d) for d in due)
            if until is not None:
                self._state[name] = until
                changed = True
        if changed:
            self._commit(fires)
        else:
            self._sleep(now)

    def _sleep(self, now: datetime) -> None:
        upcoming = [next(s.due_after(max(self._state.get(n, now), now))) for n, s in self.schedules.items()]
        if not upcoming:
            return
        delay = min(MAX_SLEEP, max(0.0, (min(upcoming) - datetime.now(UTC)).total_seconds()))
        self._timer += 1
        timer = self._timer
        assert self._transport is not None

        def wake() -> None:
            if timer == self._timer:
                self._tick()

        self._transport.call_later(delay, wake)

    def _commit(self, fires: Sequence[tuple[Schedule, datetime]]) -> None:
        """Submit ``fires`` (each with a copy to the state queue); once confirmed, publish the
        state; once that is confirmed, ack the message held until then (and the broker
        delivers the next one).

        Everything goes out on the connection whose channel holds that message, and never again
        on another (``replay=False``): a leader's connection that closes ends its leadership,
        and nothing it sent after that reaches the broker (the broker processes a channel's
        frames in order, the requeue of the held message last)."""
        assert self._transport is not None
        transport = self._transport
        self._busy = True
        self._idle.clear()
        epoch = self._epoch
        self._seq += 1
        seq = self._seq
        state = dict(self._state)
        confirms = []
        for schedule, due in fires:
            headers = {
                SCHEDULE_HEADER: schedule.name,
                DUE_HEADER: _wire.utc_iso(due),
                BCC_HEADER: [STATE_QUEUE],
            }
            ident = task_id(schedule.name, due)
            message = _wire.task_message(
                schedule.task, ident, self._bodies[schedule.name], None, headers=headers
            )
            # Declared again before each submission, on the same channel (so before it): a task
            # queue deleted under a running scheduler would otherwise leave the copy in the state
            # queue as the only route, and the submission would count as fired, unseen.
            queue = schedule.task.queue
            transport.declare_queue(queue, durable=True, arguments=self._task_queues[queue])
            # A submission like a client's: a producer span, whose context the handler continues.
            with _tracing.sending(schedule.task.name, schedule.task.queue, ident, message.headers):
                confirms.append(
                    transport.publish("", schedule.task.queue, message, mandatory=True, replay=False)
                )
        on_thread = transport.call_soon

        def submitted() -> None:
            if epoch != self._epoch:
                return
            error = next((f.exception() for f in confirms if f.exception() is not None), None)
            if error is not None:
                self._give_back(f"a submission failed: {error}")
                return
            for schedule, due in fires:
                log.info(
                    "fired %s due %s (task %s)",
                    schedule.name,
                    _wire.utc_iso(due),
                    task_id(schedule.name, due),
                )
            self.fired += len(fires)
            assert self._transport is not None
            message = _state_message(seq, state, self.name)
            published = self._transport.publish("", STATE_QUEUE, message, mandatory=True, replay=False)
            published.add_done_callback(lambda f: on_thread(lambda: stored(f)))

        def stored(published: Future[None]) -> None:
            if epoch != self._epoch:
                return
            if published.exception() is not None:
                self._give_back(f"the state was not stored: {published.exception()}")
                return
            assert self._transport is not None and self._held is not None
            self._published, self._stored = seq, state
            self._transport.ack(self._held.tag)
            self._held = None
            self._busy = False
            self._idle.set()

        _when_all(confirms, lambda: on_thread(submitted))

    def _give_back(self, reason: str) -> None:
        """Requeue the state and lead again from it after a while (the broker redelivers it
        here while this consumer stays the active one)."""
        log.error("scheduler %s: %s; retrying in %.0f s", self.name, reason, RETRY_AFTER)
        held = self._held
        self._end_leadership()
        if held is not None and self._transport is not None:
            transport = self._transport
            transport.call_later(RETRY_AFTER, lambda: transport.reject(held.tag, requeue=True))


def _bootstrap(config: Config, arguments: Mapping[str, Any]) -> None:
    """Put a first (empty) state in the state queue if it holds none and nobody consumes it:
    without a message, no scheduler would ever lead. Two schedulers starting at once may both
    do it; the leader drops the extra copy."""
    import pika  # type: ignore[import-untyped]

    from .transport.pika_connection import pika_parameters

    connection = pika.BlockingConnection([pika_parameters(url, config) for url in config.broker_urls()])
    try:
        channel = connection.channel()
        ok = channel.queue_declare(STATE_QUEUE, durable=True, arguments=dict(arguments))
        if ok.method.message_count == 0 and ok.method.consumer_count == 0:
            channel.confirm_delivery()
            message = _state_message(0, {})
            channel.basic_publish(
                "",
                STATE_QUEUE,
                message.body,
                _pika_properties(message),
                mandatory=True,
            )
    except Exception as exc:
        raise BrokerUnavailable(f"cannot set up {STATE_QUEUE}: {exc!r}") from exc
    finally:
        if connection.is_open:
            connection.close()


def _pika_properties(message: Message) -> Any:
    import pika

    return pika.BasicProperties(
        content_type=message.content_type, type=message.type, delivery_mode=pika.DeliveryMode.Persistent.value
    )


def _state_message(seq: int, state: Mapping[str, datetime], by: str = "") -> Message:
    """A state: its sequence number, the scheduler that stored it, and the done-until times."""
    done = {name: _wire.utc_iso(when) for name, when in sorted(state.items())}
    body = {"seq": seq, "by": by, "done_until": done}
    return Message(body=json.dumps(body).encode(), type=STATE_TYPE, content_type=_wire.JSON, persistent=True)


def _parse(message: Message) -> tuple[int | None, str, dict[str, datetime]]:
    """What a message of the state queue says is done: a state's sequence number, the scheduler
    that stored it and its done-until times, or (None, "", {schedule: due}) for the copy of a
    submission. A malformed one says nothing (logged), so a bad message cannot stop the
    schedules."""
    try:
        if message.type == STATE_TYPE:
            body = json.loads(message.body)
            done = {str(k): datetime.fromisoformat(v).astimezone(UTC) for k, v in body["done_until"].items()}
            return int(body["seq"]), str(body.get("by", "")), done
        schedule, due = message.headers[SCHEDULE_HEADER], message.headers[DUE_HEADER]
        return None, "", {_text(schedule): datetime.fromisoformat(_text(due)).astimezone(UTC)}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.error("ignoring a malformed message in %s: %r (%s)", STATE_QUEUE, message.body[:200], exc)
        return None, "", {}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _body(schedule: Schedule) -> bytes:
    """The task message body of ``schedule``'s args.

    Raises:
        PayloadError: the args do not validate against the task's model.
    """
    try:
        model: BaseModel = schedule.task.args.model_validate(schedule.args)
        return model.model_dump_json().encode()
    except ValidationError as exc:
        raise PayloadError(schedule.task.name, f"schedule {schedule.name}: {_wire.describe(exc)}") from None


def _when_all(futures: Sequence[Future[None]], then: Callable[[], None]) -> None:
    """Call ``then`` (on whichever thread settles the last) once every future is settled."""
    remaining = [len(futures)]
    lock = threading.Lock()
    if not futures:
        then()
        return

    def one(_future: Future[None]) -> None:
        with lock:
            remaining[0] -= 1
            last = remaining[0] == 0
        if last:
            then()

    for future in futures:
        future.add_done_callback(one)
