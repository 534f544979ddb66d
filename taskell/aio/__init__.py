"""taskell for asyncio: the same client, awaited instead of waited on.

``taskell.aio.connect`` is the twin of ``taskell.connect`` (``async with``); the generated
package's ``AsyncClient`` submits through it and returns ``taskell.aio.TaskHandle``s at once::

    async with taskell.aio.connect("amqp://guest:guest@localhost:5672/%2F") as conn:
        demo = AsyncClient(conn)
        h = demo.sum(numbers=[1, 2, 3])
        async for pct in h.progress():
            ...
        total = await h

Nothing here blocks the caller's event loop: see ``_connection`` for where each call waits.
"""

from ._connection import Connecting, Connection, ConnectionView, attach, connect, fire
from ._handle import TaskHandle

__all__ = ["Connecting", "Connection", "ConnectionView", "TaskHandle", "attach", "connect", "fire"]
