"""TLS (issue 6): a private RabbitMQ node with a TLS listener on 127.0.0.1, using certificates
generated here; taskell connects with ``amqps://`` verifying the server against the test CA,
and refuses a server whose certificate it cannot verify. A second node verifies peers (issue
16): a client certificate of its CA is accepted, none or another CA's is refused.

Private nodes: run under ``flock /tmp/taskell-private-nodes.lock``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskell
from examples.worker import Impl
from generated.demo import Client, registry

NODE = "taskell-tls-test@localhost"
AMQP_PORT, TLS_PORT, DIST_PORT = 5720, 5721, 25720
VERIFYING_NODE = "taskell-tls-verify-test@localhost"
VERIFYING_PORTS = (5722, 5723, 25722)  # amqp, amqps, distribution


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


def _make_client_certificate(where: Path, name: str, ca: str = "ca") -> None:
    """``name.pem`` / ``name.key``: a client certificate signed by ``ca.pem`` / ``ca.key``."""
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
         "-subj", f"/CN={name}", cwd=where)  # fmt: skip
    _run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
         "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", cwd=where)  # fmt: skip


def _start_node(node: str, ports: tuple[int, int, int], ssl_lines: str) -> Iterator[Path]:
    """Start a private node with a TLS listener (server certificate from the test CA, and
    ``ssl_lines`` for the rest of ``ssl_options``); yields the folder holding the certificates."""
    if shutil.which("rabbitmq-server") is None or shutil.which("openssl") is None:
        pytest.fail("rabbitmq-server and openssl are needed (scripts/test installs them)")
    amqp_port, tls_port, dist_port = ports
    base = Path(tempfile.mkdtemp(prefix="taskell-tls-"))
    _make_certificates(base)
    (base / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{amqp_port}\n"
        f"listeners.ssl.default = 127.0.0.1:{tls_port}\n"
        f"ssl_options.cacertfile = {base}/ca.pem\n"
        f"ssl_options.certfile = {base}/server.pem\n"
        f"ssl_options.keyfile = {base}/server.key\n"
        f"{ssl_lines}"
        "loopback_users = none\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    for sub in ("mnesia", "log"):
        (base / sub).mkdir()
    subprocess.run(["chown", "-R", "rabbitmq:rabbitmq", str(base)], check=False, timeout=30)
    os.chmod(base, 0o755)
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_DIST_PORT": str(dist_port),
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
        _run("rabbitmqctl", "-n", node, "wait", "--timeout", "120", f"{base}/pid")
        yield base
    finally:
        subprocess.run(["rabbitmqctl", "-n", node, "stop"], capture_output=True, timeout=120, check=False)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[Path]:
    """A node that asks for no client certificate; yields the folder holding ``ca.pem``."""
    yield from _start_node(
        NODE,
        (AMQP_PORT, TLS_PORT, DIST_PORT),
        "ssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n",
    )


@pytest.fixture(scope="module")
def verifying_broker() -> Iterator[Path]:
    """A node that verifies peers and refuses clients without a certificate; yields the folder
    holding ``ca.pem``, a client certificate from the test CA (``client.pem``, ``client.key``)
    and one from another CA (``stranger.pem``, ``stranger.key``)."""
    for base in _start_node(
        VERIFYING_NODE,
        VERIFYING_PORTS,
        "ssl_options.verify = verify_peer\nssl_options.fail_if_no_peer_cert = true\n",
    ):
        _make_client_certificate(base, "client")
        _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key",
             "-out", "other-ca.pem", "-days", "2", "-subj", "/CN=taskell-other-ca", cwd=base)  # fmt: skip
        _make_client_certificate(base, "stranger", ca="other-ca")
        yield base


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


def _verifying_config(base: Path, cert: str | None) -> taskell.Config:
    files = {"rabbitmq_cert_file": str(base / f"{cert}.pem"), "rabbitmq_key_file": str(base / f"{cert}.key")}
    return taskell.Config.load(
        None,
        env={},
        url=f"amqps://guest:guest@localhost:{VERIFYING_PORTS[1]}/%2F",
        rabbitmq_ca_file=str(base / "ca.pem"),
        connect_timeout=10,
        **(files if cert else {}),
    )


def test_a_client_certificate_is_accepted_by_a_server_that_verifies_peers(verifying_broker: Path) -> None:
    config = _verifying_config(verifying_broker, "client")
    with taskell.Worker(registry(Impl()), config), taskell.connect(config=config) as conn:
        assert Client(conn).square(x=7).result(timeout=30) == 49


@pytest.mark.parametrize("cert", [None, "stranger"], ids=["no-certificate", "certificate-of-another-ca"])
def test_a_server_that_verifies_peers_refuses_a_client_without_a_valid_certificate(
    verifying_broker: Path, cert: str | None
) -> None:
    config = _verifying_config(verifying_broker, cert)
    started = time.monotonic()
    with pytest.raises(taskell.BrokerUnavailable) as info:
        taskell.connect(config=config)
    assert time.monotonic() - started < 20, "the refusal should end the attempt, not a timeout"
    message = str(info.value)
    assert f"localhost:{VERIFYING_PORTS[1]}" in message, message
    assert re.search(r"certificate|handshake|TLS|SSL", message, re.IGNORECASE), message
