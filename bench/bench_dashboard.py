"""Dashboard page with 1,000 running tasks against the same page with 0: time to first paint
and live update rate in headless Chromium.

The data is synthetic (a stand-in poller publishing a new snapshot every 0.5 s, progress
advancing in every task), so this measures the page and its server, not the broker.
Bounded: 3 loads per size, 6 s of updates each. Prints one JSON object.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from typing import Any

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from taskell.dashboard.app import create_app

INTERVAL, WATCH, LOADS = 0.5, 6.0, 3


class FakePoller:
    def __init__(self, tasks: int) -> None:
        self.tasks, self.version, self.snapshot = tasks, 0, ""
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._publish()
        threading.Thread(target=self._run, daemon=True).start()

    def _publish(self) -> None:
        running = [
            {"task_id": f"t{i:06d}", "task": "demo.sleep", "seconds": self.version, "progress": self.version}
            for i in range(self.tasks)
        ]
        worker = {"worker": "w", "queues": ["taskell.default"], "parallelism": self.tasks, "running": running}
        data: dict[str, Any] = {"broker": "b", "workers": [worker], "schedulers": [], "queues": []}
        with self._changed:
            self.snapshot = json.dumps(data)
            self.version += 1
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self._publish()

    def stop(self) -> None:
        self._stop.set()

    def wait_change(self, version: int, timeout: float) -> int:
        with self._changed:
            self._changed.wait_for(lambda: self.version != version, timeout=timeout)
            return self.version

    def abort(self, task_id: str) -> None:
        pass


def measure(chrome: webdriver.Chrome, tasks: int) -> dict[str, float]:
    poller = FakePoller(tasks)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(poller)  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    paints, rates = [], []
    try:
        for _ in range(LOADS):
            started = time.perf_counter()
            chrome.get(f"http://127.0.0.1:{port}/")
            chrome.execute_script(
                "window.__n = 0; new MutationObserver(() => window.__n++)"
                ".observe(document.getElementById('status'), {childList: true, characterData: true, subtree: true})"
            )
            deadline = time.monotonic() + 30
            while chrome.execute_script("return document.querySelectorAll('#workers tbody tr').length") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            paints.append(time.perf_counter() - started)
            chrome.execute_script("window.__n = 0")
            time.sleep(WATCH)
            rates.append(chrome.execute_script("return window.__n") / WATCH)
    finally:
        server.should_exit = True
        poller.stop()
    return {
        "first_paint_s": round(sorted(paints)[len(paints) // 2], 3),
        "updates_per_s": round(sum(rates) / len(rates), 2),
    }


def main() -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    flags = (
        "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --disable-quic --no-first-run "
        "--disable-background-networking --disable-component-update --disable-sync"
    )
    for flag in flags.split():
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        chrome = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            base = measure(chrome, 0)
            full = measure(chrome, 1000)
        finally:
            chrome.quit()
    print(
        json.dumps(
            {
                "snapshot_interval_s": INTERVAL,
                "tasks_0": base,
                "tasks_1000": full,
                "ratio_first_paint_1000_to_0": round(full["first_paint_s"] / base["first_paint_s"], 2),
                "ratio_update_rate_1000_to_0": round(full["updates_per_s"] / base["updates_per_s"], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
