"""A task with a retry policy for worker subprocesses (``taskell worker
tests.integration.retry_handlers:handlers``): ``demo.sum`` retried up to 3 times.

Each run reports ``100 * ctx.attempt`` as progress, plus 1 when it is a redelivery. A first
delivery then blocks for a minute (the test kills its worker there); a redelivery of attempt 1
fails, so it is retried; a redelivery of a later attempt returns the attempt number.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import taskell
from generated.demo import SUM

RETRIED_SUM = dataclasses.replace(SUM, retry=taskell.RetryPolicy(attempts=3, delay=0.2))


def blocking_until_redelivered(ctx: taskell.Context[int], args: Any) -> int:
    ctx.progress(100 * ctx.attempt + int(ctx.redelivered))
    if not ctx.redelivered:
        time.sleep(60)
    if ctx.attempt == 1:
        raise ValueError("attempt 1 fails")
    return ctx.attempt


handlers = taskell.Registry()
handlers.add(RETRIED_SUM, blocking_until_redelivered)
