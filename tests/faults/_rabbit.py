"""Private RabbitMQ nodes for the fault suite: started, restarted, killed and stopped by the tests.

Each node has its own node name, AMQP port, distribution port, data / log directories and PID
file under a temporary directory, listens on 127.0.0.1 only, and is run as the current user
straight from ``/usr/lib/rabbitmq/bin`` (not the ``/usr/sbin`` wrapper, which switches to the
``rabbitmq`` user and ``/var/lib/rabbitmq``). Nodes of one cluster share an Erlang cookie through
a common ``HOME``. The shared test broker (``rabbit@<host>``, port 5672) is never touched: every
``rabbitmqctl`` call names its node with ``-n`` and every signal goes to a PID this module
started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

ADVANCED_CONFIG = Path(__file__).resolve().parents[2] / "scripts" / "rabbitmq-advanced.config"
RABBIT_BIN = Path(os.environ.get("TASKELL_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
CTL_TIMEOUT = 90.0  # seconds any single rabbitmqctl call may take


class NodeError(RuntimeError):
    """A private node could not be started, stopped or reached."""


def available() -> str | None:
    """None if private nodes can be run here, else why not."""
    if not (RABBIT_BIN / "rabbitmq-server").exists():
        return f"rabbitmq-server not found in {RABBIT_BIN} (set TASKELL_RABBITMQ_BIN)"
    return None


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Erlang does: TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def prepare_home(home: Path, cookie: str) -> None:
    """A ``HOME`` holding the Erlang cookie shared by a cluster's nodes and their CLI calls."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / ".erlang.cookie"
    if not path.exists():
        path.write_text(cookie)
        path.chmod(0o400)


class RabbitNode:
    """One RabbitMQ node of our own.

    Args:
        name: short node name; the node is ``NAME@localhost``.
        port: AMQP port on 127.0.0.1.
        base: directory for the node's data, logs, PID file and config.
        home: ``HOME`` with the ``.erlang.cookie`` (see ``prepare_home``).
    """

    def __init__(self, name: str, port: int, base: Path, home: Path) -> None:
        self.node = f"{name}@localhost"
        self.port = port
        self.dist_port = port + 20000
        self.base = base
        self.home = home
        self.pid_file = base / "pid"
        self.started = False
        base.mkdir(parents=True, exist_ok=True)
        (base / "rabbitmq.conf").write_text("log.file.level = info\nlog.console = false\n")
        (base / "enabled_plugins").write_text("[].\n")

    def __repr__(self) -> str:
        return f"<RabbitNode {self.node} :{self.port}>"

    @property
    def host(self) -> str:
        """``host:port`` as the taskell ``rabbitmq.hosts`` config takes it."""
        return f"127.0.0.1:{self.port}"

    def url(self, vhost: str = "/") -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "TASKELL_"))}
        env.update(
            HOME=str(self.home),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            # As scripts/rabbitmq has it: the settings taskell's delay levels rely on.
            RABBITMQ_ADVANCED_CONFIG_FILE=str(ADVANCED_CONFIG),
            ERL_EPMD_ADDRESS="127.0.0.1",
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
        )
        return env

    # Lifecycle

    def start(self, timeout: float = 90.0) -> None:
        """Boot the node (its data directory is kept across restarts) and wait until it runs."""
        # A port just closed can stay unbindable a while (TIME_WAIT, under gVisor even with
        # SO_REUSEADDR): wait for the AMQP port (clients need that one), and take any free
        # distribution port near the preferred one (the CLI finds it through epmd).
        deadline = time.monotonic() + 75
        while not port_free(self.port):
            if time.monotonic() > deadline:
                raise NodeError(f"port {self.port} of {self.node} is in use (a leftover node?)")
            time.sleep(0.5)
        preferred = self.port + 20000
        # Steps of 100: nodes on neighbouring AMQP ports never pick the same one.
        free = [p for p in range(preferred, preferred + 2000, 100) if port_free(p)]
        if not free:
            raise NodeError(f"no free distribution port among {preferred}, {preferred + 100}, ...")
        self.dist_port = free[0]
        self.pid_file.unlink(missing_ok=True)
        subprocess.run(
            [str(RABBIT_BIN / "rabbitmq-server"), "-detached"],
            env=self.env(),
            cwd=self.base,
            check=True,
            timeout=60,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.started = True
        deadline = time.monotonic() + timeout
        while not (self.pid_file.exists() and self.pid_file.read_text().strip()):
            if time.monotonic() > deadline:
                raise NodeError(f"{self.node}: no PID file after {timeout} s; see {self.base / 'log'}")
            time.sleep(0.1)
        self.ctl("wait", "--timeout", str(int(timeout)), str(self.pid_file), timeout=timeout + 10)

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def alive(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> None:
        """Stop the node and wait for its process to end (SIGKILL if it will not)."""
        pid = self.pid
        if pid is None or not self.alive():
            return
        self.resume()  # a paused node cannot stop
        with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
            self.ctl("stop", str(self.pid_file), timeout=60)
        deadline = time.monotonic() + 30
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(NodeError):  # a teardown: the caller cannot do better
                self._wait_gone(pid, 10)

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: a crashed machine, as far as its peers can tell.
        Raises ``NodeError`` unless the VM was running and is gone afterwards."""
        pid = self.pid
        if pid is None:
            raise NodeError(f"{self.node}: no PID in {self.pid_file}: nothing to kill")
        if not self.alive():
            raise NodeError(f"{self.node}: PID {pid} is not running: nothing to kill")
        os.kill(pid, signal.SIGKILL)
        self._wait_gone(pid, 10)

    def pause(self) -> None:
        """SIGSTOP the node's VM: its sockets stay open but nothing answers (a network stall)."""
        pid = self.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        pid = self.pid
        if pid is not None and self.alive():
            os.kill(pid, signal.SIGCONT)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self, timeout: float = 60.0) -> int:
        """Start the rabbit app again; returns the attempts it took.

        Right after ``stop_app`` with clients reconnecting, the AMQP listener sometimes cannot
        be opened at once (``eaddrinuse``; seen under gVisor); that is retried, bounded.
        """
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            try:
                self.ctl("start_app")
                break
            except NodeError as exc:
                if "eaddrinuse" not in str(exc) or time.monotonic() > deadline:
                    raise NodeError(f"{exc}\n{self.log_tail()}\n{_sockets(self.port)}") from None
                time.sleep(1)
        self.ctl("await_startup", "--timeout", "60")
        return attempts

    def restart_node(self) -> None:
        """Stop the whole node (the VM ends), then boot it again on the same data."""
        self.stop()
        self.start()

    def add_vhost(self, vhost: str) -> None:
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")

    def join(self, other: RabbitNode) -> None:
        """Make this node a disc member of ``other``'s cluster."""
        self.ctl("stop_app")
        self.ctl("join_cluster", other.node)
        self.start_app()

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        """Run ``rabbitmqctl -n NODE ARGS...`` against this node only."""
        result = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-q", "-n", self.node, *args],
            check=False,
            env=self.env(),
            cwd=self.base,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise NodeError(f"rabbitmqctl -n {self.node} {' '.join(args)}: {result.stderr or result.stdout}")
        return result.stdout

    def log_tail(self, lines: int = 40) -> str:
        path = self.base / "log" / f"{self.node}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def queue_leaders(self, vhost: str = "/") -> dict[str, str]:
        """Quorum queue name -> the node of its leader, as this node sees them ('' if none)."""
        out = self.ctl("list_queues", "-p", vhost, "--no-table-headers", "name", "type", "leader")
        leaders = {}
        for line in out.splitlines():
            name, kind, leader = [*line.split("\t"), "", ""][:3]
            if kind == "quorum":
                leaders[name] = leader
        return leaders

    def _wait_gone(self, pid: int, timeout: float) -> None:
        """Wait for the VM ``pid`` to end (a zombie child counts as ended); ``NodeError`` if not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if state == "Z":
                return
            time.sleep(0.05)
        raise NodeError(f"{self.node}: PID {pid} still runs {timeout} s after SIGKILL")


def _sockets(port: int) -> str:
    try:
        out = subprocess.run(["ss", "-tanp"], check=False, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return "\n".join(line for line in out.splitlines() if f":{port} " in line)


def stop_all(nodes: Sequence[RabbitNode], base: Path | None = None) -> None:
    """Stop every node that was started (in parallel), then remove ``base``."""
    import threading

    threads = [threading.Thread(target=n.stop) for n in nodes if n.started]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)
