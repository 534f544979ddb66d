"""``python -m tests.integration.sched_lossy``: a scheduler of ``sched_tick`` whose state updates
never reach the broker once it has fired: each is dropped before it is sent, so never confirmed,
as when a broker restart or the leader's death falls between a submission and the state after
it. It prints ``dropped a state`` for each and otherwise leads as usual, until killed."""

from __future__ import annotations

import time
from concurrent.futures import Future
from typing import Any

import taskell
from taskell.scheduler import STATE_TYPE
from taskell.transport import Message
from tests.integration.sched_tick import SCHEDULES


def main() -> None:
    scheduler = taskell.Scheduler(SCHEDULES)
    scheduler.start()
    transport: Any = scheduler._transport
    publish = transport.publish

    def lossy(
        exchange: str, routing_key: str, message: Message, *, mandatory: bool, replay: bool = True
    ) -> Future[None]:
        if message.type == STATE_TYPE and scheduler.fired:
            print("dropped a state", flush=True)
            return Future()
        return publish(exchange, routing_key, message, mandatory=mandatory, replay=replay)  # type: ignore[no-any-return]

    transport.publish = lossy
    print("started", flush=True)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main()
