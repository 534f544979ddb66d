"""The README's first command: a worker and a client end to end, with progress shown.

Uses the embedded in-memory broker unless ``TASKELL_URL`` points at RabbitMQ. The worker runs
in this process (in the background) either way; with RabbitMQ every message goes through it.
"""

from __future__ import annotations

import logging
import os

from rich.console import Console

import taskell
from examples.client import run
from examples.worker import Impl
from generated.demo import registry


def main() -> None:
    """Start a worker, run the client's calls against it, stop the worker."""
    logging.basicConfig(level=logging.WARNING)
    console = Console()
    url = os.environ.get("TASKELL_URL") or "memory://demo"
    config = taskell.Config.load(None, url=url, parallelism=2)
    console.print(f"broker: {config.masked_url()}")
    with taskell.Worker(registry(Impl(delay=0.04)), config), taskell.connect(config=config) as conn:
        run(conn, console)
    console.print("demo finished")


if __name__ == "__main__":
    main()
