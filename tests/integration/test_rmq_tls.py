"""TLS (issue 6): a private RabbitMQ node with a TLS listener on 127.0.0.1, using certificates
generated here; taskell connects with ``amqps://`` verifying the server against the test CA,
and refuses a server whose certificate it cannot verify."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskell
from examples.worker import Impl
from generated.demo import Client, registry

NODE = "taskell-tls-test@localhost"
AMQP_PORT, TLS_PORT, DIST_PORT = 5720, 5721, 25720


def _run(*args: str, cwd: Path | None = None) -> None:
    done = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}"


def _make_certificates(where: Path) -> None:
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-days", "2", "-subj", "/CN=taskell-test-ca", cwd=where)  # fmt: skip
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=localhost", cwd=where)  # fmt: skip
    (where / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "san.cnf", cwd=where)  # fmt: skip


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[Path]:
    """Start the private node; yields the folder holding ``ca.pem``."""
    if shutil.which("rabbitmq-server") is None or shutil.which("openssl") is None:
        pytest.fail("rabbitmq-server and openssl are needed (scripts/test installs them)")
    base = Path(tempfile.mkdtemp(prefix="taskell-tls-"))
    _make_certificates(base)
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{AMQP_PORT}\n"
        f"listeners.ssl.default = 127.0.0.1:{TLS_PORT}\n"
        f"ssl_options.cacertfile = {base}/ca.pem\n"
        f"ssl_options.certfile = {base}/server.pem\n"
        f"ssl_options.keyfile = {base}/server.key\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
        "loopback_users = none\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    for sub in ("mnesia", "log"):
        (base / sub).mkdir()
    subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(base)], check=False, timeout=30)
    os.chmod(base, 0o755)
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": NODE,
        "RABBITMQ_DIST_PORT": str(DIST_PORT),
        "RABBITMQ_MNESIA_BASE": f"{base}/mnesia",
        "RABBITMQ_LOG_BASE": f"{base}/log",
        "RABBITMQ_PID_FILE": f"{base}/pid",
        "RABBITMQ_CONFIG_FILE": f"{base}/rabbitmq.conf",
        "RABBITMQ_ENABLED_PLUGINS_FILE": f"{base}/enabled_plugins",
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    subprocess.run(["rabbitmq-server", "-detached"], env=env, check=True, timeout=60)
    try:
        _run("rabbitmqctl", "-n", NODE, "wait", "--timeout", "120", f"{base}/pid")
        yield base
    finally:
        subprocess.run(["rabbitmqctl", "-n", NODE, "stop"], capture_output=True, timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_amqps_with_the_test_ca_works_end_to_end(tls_broker: Path) -> None:
    url = f"amqps://guest:guest@localhost:{TLS_PORT}/%2F"
    config = taskell.Config.load(None, env={}, url=url, rabbitmq_ca_file=str(tls_broker / "ca.pem"))
    assert "guest:***@" in config.masked_url()
    with taskell.Worker(registry(Impl()), config), taskell.connect(config=config) as conn:
        assert Client(conn).square(x=9).result(timeout=30) == 81


def test_a_server_certificate_that_does_not_verify_is_refused(tls_broker: Path) -> None:
    # Without the test CA, the system's CAs cannot verify the server: no connection.
    config = taskell.Config.load(None, env={}, url=f"amqps://guest:guest@localhost:{TLS_PORT}/%2F")
    with pytest.raises(taskell.BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        taskell.connect(config=config)
