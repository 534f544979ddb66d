"""Tests for taskell.config: sources, precedence, error keys, URL building and masking."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from taskell.config import Config
from taskell.errors import ConfigError

FULL = """
[taskell]
abort_exchange = "x.abort"
parallelism = 3
queues = ["taskell.q1", "taskell.q2"]
dead_letter_queue = "x.dead"
pool = "process"
queue_type = "quorum"
connect_timeout = 2

[taskell.rabbitmq]
host = "rabbit.example"
port = 5673
vhost = "prod"
username = "alice"
password = "s3cret"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "taskell.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path | None, text: str | None = None, env: dict[str, str] | None = None) -> ConfigError:
    path = write(tmp_path, text) if tmp_path is not None and text is not None else None
    with pytest.raises(ConfigError) as info:
        Config.load(path, env=env or {})
    return info.value


def test_defaults() -> None:
    c = Config.load(env={})
    assert c.abort_exchange == "taskell.abort"
    assert c.abort_retention == 86400.0
    assert c.parallelism == 1
    assert c.queues is None  # a worker then consumes its registered tasks' queues
    assert c.dead_letter_queue == "taskell.dead"
    assert (c.pool, c.queue_type, c.prefetch, c.effective_prefetch) == ("thread", "classic", None, 32)
    assert c.max_payload_bytes == 16 * 1024 * 1024
    assert (c.connect_timeout, c.heartbeat) == (10.0, 60)
    mq = c.rabbitmq
    assert (mq.host, mq.port, mq.vhost, mq.username) == ("localhost", 5672, "/", "guest")
    assert mq.password.get_secret_value() == "guest"
    assert mq.url is None and mq.hosts == [] and mq.ca_file is None
    assert c.broker_url() == "amqp://guest:guest@localhost:5672/%2F"
    assert Config.load(env={}) == Config()


def test_frozen() -> None:
    c = Config()
    with pytest.raises(pydantic.ValidationError):
        c.parallelism = 2  # type: ignore[misc]


def test_file_values(tmp_path: Path) -> None:
    c = Config.load(write(tmp_path, FULL), env={})
    assert c.abort_exchange == "x.abort"
    assert c.parallelism == 3 and c.effective_prefetch == 96
    assert c.queues == ["taskell.q1", "taskell.q2"]
    assert (c.dead_letter_queue, c.pool, c.queue_type, c.connect_timeout) == (
        "x.dead",
        "process",
        "quorum",
        2.0,
    )
    assert c.broker_url() == "amqp://alice:s3cret@rabbit.example:5673/prod"
    assert Config.load(str(write(tmp_path, "")), env={}) == Config()


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {"TASKELL_PARALLELISM": "4", "TASKELL_RABBITMQ_HOST": "envhost", "TASKELL_RABBITMQ_PORT": "1234"}
    c = Config.load(write(tmp_path, FULL), env=env)
    assert c.parallelism == 4
    assert (c.rabbitmq.host, c.rabbitmq.port, c.rabbitmq.username) == ("envhost", 1234, "alice")


def test_flags_override_env(tmp_path: Path) -> None:
    env = {"TASKELL_PARALLELISM": "4", "TASKELL_QUEUES": "e1"}
    c = Config.load(write(tmp_path, FULL), env=env, parallelism=8, queues=["f1"], prefetch=None)
    assert (c.parallelism, c.queues, c.prefetch) == (8, ["f1"], None)
    c = Config.load(None, env=env, parallelism=None, rabbitmq_host="flaghost", url=None)
    assert (c.parallelism, c.rabbitmq.host) == (4, "flaghost")


def test_abort_retention_from_env_and_its_limits(tmp_path: Path) -> None:
    assert Config.load(env={"TASKELL_ABORT_RETENTION": "600"}).abort_retention == 600.0
    assert Config.load(env={}, abort_retention=0).abort_retention == 0.0  # no records kept
    exc = error(tmp_path, f'[taskell]\nabort_exchange = "{"x" * 252}"\n')
    assert "251 bytes" in exc.message and "'.log'" in exc.message
    assert Config.load(env={}, abort_exchange="x" * 251).abort_exchange == "x" * 251


def test_metrics_port_from_each_source(tmp_path: Path) -> None:
    assert (Config.load(env={}).metrics_port, Config.load(env={}).metrics_host) == (None, "127.0.0.1")
    path = write(tmp_path, "[taskell]\nmetrics_port = 9464\n")
    assert Config.load(path, env={}).metrics_port == 9464
    assert Config.load(path, env={"TASKELL_METRICS_PORT": "9000"}).metrics_port == 9000
    assert Config.load(path, env={"TASKELL_METRICS_PORT": ""}).metrics_port is None  # empty: unset
    assert Config.load(path, env={}, metrics_port=0).metrics_port == 0  # --metrics-port 0: any port
    assert error(None, env={"TASKELL_METRICS_PORT": "70000"}).key == "TASKELL_METRICS_PORT"
    assert error(tmp_path, '[taskell]\nmetrics_port = "9464"\n').key == "taskell.metrics_port"


def test_schedule_catch_up_from_each_source(tmp_path: Path) -> None:
    assert Config.load(env={}).schedule_catch_up == "latest"  # the latest missed due time, once
    path = write(tmp_path, '[taskell]\nschedule_catch_up = "all"\n')
    assert Config.load(path, env={}).schedule_catch_up == "all"
    assert Config.load(path, env={"TASKELL_SCHEDULE_CATCH_UP": "none"}).schedule_catch_up == "none"
    assert error(None, env={"TASKELL_SCHEDULE_CATCH_UP": "some"}).key == "TASKELL_SCHEDULE_CATCH_UP"
    assert error(tmp_path, '[taskell]\nschedule_catch_up = "every"\n').key == "taskell.schedule_catch_up"


def test_env_queue_list_parsing() -> None:
    c = Config.load(env={"TASKELL_QUEUES": "a, b,,c ", "TASKELL_RABBITMQ_HOSTS": "h1,h2:5673"})
    assert c.queues == ["a", "b", "c"]
    assert c.rabbitmq.hosts == ["h1", "h2:5673"]
    assert c.broker_urls() == [
        "amqp://guest:guest@localhost:5672/%2F",
        "amqp://guest:guest@h1/%2F",
        "amqp://guest:guest@h2:5673/%2F",
    ]


def test_env_url_replaces_fields(tmp_path: Path) -> None:
    url = "amqps://bob:pw@broker:5671/vh"
    c = Config.load(write(tmp_path, FULL), env={"TASKELL_URL": url})
    assert c.broker_url() == url
    assert c.masked_url() == "amqps://bob:***@broker:5671/vh"
    c = Config.load(env={"TASKELL_URL": "amqp://a:b@x/", "TASKELL_RABBITMQ_URL": "amqp://c:d@y/"})
    assert c.broker_url() == "amqp://a:b@x/"
    assert Config.load(env={"TASKELL_URL": ""}).rabbitmq.url is None


def test_file_url(tmp_path: Path) -> None:
    c = Config.load(write(tmp_path, '[taskell.rabbitmq]\nurl = "memory://t1"\n'), env={})
    assert c.broker_url() == "memory://t1"
    assert Config.from_url("memory://x").broker_url() == "memory://x"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[taskell]\nbogus = 1\n", "taskell.bogus"),
        ("[taskell.rabbitmq]\nbogus = 1\n", "taskell.rabbitmq.bogus"),
        ("[other]\nx = 1\n", "other"),
        ("taskell = 1\n", "taskell"),
        ('[taskell]\nrabbitmq = "x"\n', "taskell.rabbitmq"),
    ],
)
def test_unknown_key_in_file(tmp_path: Path, text: str, key: str) -> None:
    assert error(tmp_path, text).key == key


def test_unknown_key_suggests(tmp_path: Path) -> None:
    assert "'parallelism'" in error(tmp_path, "[taskell]\nparalelism = 2\n").message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[taskell.rabbitmq]\nport = "abc"\n', "taskell.rabbitmq.port"),
        ('[taskell.rabbitmq]\nport = "5672"\n', "taskell.rabbitmq.port"),
        ("[taskell.rabbitmq]\nport = 70000\n", "taskell.rabbitmq.port"),
        ("[taskell]\nparallelism = 0\n", "taskell.parallelism"),
        ("[taskell]\nparallelism = true\n", "taskell.parallelism"),
        ('[taskell]\nqueues = "q"\n', "taskell.queues"),
        ("[taskell]\nqueues = [1]\n", "taskell.queues"),
        ("[taskell]\nqueues = []\n", "taskell.queues"),
        ('[taskell]\npool = "fork"\n', "taskell.pool"),
        ("[taskell]\nabort_retention = -1\n", "taskell.abort_retention"),
        (f'[taskell]\nabort_exchange = "{"x" * 252}"\n', "taskell.abort_exchange"),
        ('[taskell.rabbitmq]\nurl = "http://x"\n', "taskell.rabbitmq.url"),
    ],
)
def test_wrong_type_in_file(tmp_path: Path, text: str, key: str) -> None:
    exc = error(tmp_path, text)
    assert exc.key == key
    assert "taskell.toml" in exc.message


def test_bad_file_value_is_an_error_even_if_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "[taskell]\nparallelism = 0\n")
    with pytest.raises(ConfigError) as info:
        Config.load(path, env={"TASKELL_PARALLELISM": "2"})
    assert info.value.key == "taskell.parallelism"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TASKELL_PARALLELISM": "many"}, "TASKELL_PARALLELISM"),
        ({"TASKELL_PARALLELISM": "0"}, "TASKELL_PARALLELISM"),
        ({"TASKELL_RABBITMQ_PORT": "abc"}, "TASKELL_RABBITMQ_PORT"),
        ({"TASKELL_QUEUES": ""}, "TASKELL_QUEUES"),
        ({"TASKELL_URL": "http://u:pw@x"}, "TASKELL_URL"),
        ({"TASKELL_RABBITMQ_URL": "ftp://x"}, "TASKELL_RABBITMQ_URL"),
        ({"TASKELL_ABORT_RETENTION": "a day"}, "TASKELL_ABORT_RETENTION"),
    ],
)
def test_wrong_type_in_env(env: dict[str, str], key: str) -> None:
    exc = error(None, env=env)
    assert exc.key == key
    assert "pw" not in str(exc)


def test_bad_override_names_keyword() -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, parallelism=0)
    assert info.value.key == "parallelism"
    with pytest.raises(ConfigError) as info:
        Config.load(env={}, paralelism=2)
    assert info.value.key == "paralelism"
    with pytest.raises(ConfigError) as info:
        Config.from_url("redis://x")
    assert info.value.key == "url"


def test_unknown_env_ignored() -> None:
    env = {
        "TASKELL_FOO": "1",
        "TASKELL_RABBITMQ_BAR": "x",
        "TASKELL_RABBITMQ": "x",
        "taskell_parallelism": "x",
    }
    assert Config.load(env=env) == Config()


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[taskell]\nparallelism = \n")
    exc = error(tmp_path, "[taskell]\nparallelism = \n")
    assert exc.key == str(path)
    assert "line 2" in exc.message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        Config.load(missing, env={})
    assert info.value.key == str(missing)


def test_password_masked() -> None:
    c = Config.load(env={"TASKELL_RABBITMQ_PASSWORD": "hunter2", "TASKELL_RABBITMQ_USERNAME": "u"})
    assert "hunter2" not in repr(c) and "hunter2" not in str(c)
    assert c.masked_url() == "amqp://u:***@localhost:5672/%2F"
    assert c.broker_url() == "amqp://u:hunter2@localhost:5672/%2F"
    c = Config.from_url("amqp://u:hunter2@h/v")
    assert "hunter2" not in repr(c)
    assert c.masked_url() == "amqp://u:***@h/v"
    with pytest.raises(ConfigError) as info:  # unquoted "/" in the password: malformed
        Config.from_url("amqp://u:hunter2/x@h/v")
    assert "hunter2" not in str(info.value)
    assert Config.from_url("amqp://h/v").masked_url() == "amqp://h/v"


def test_vhost_and_credentials_quoting() -> None:
    def url(**kw: str) -> str:
        return Config.load(env={}, **{f"rabbitmq_{k}": v for k, v in kw.items()}).broker_url()

    assert url(vhost="/").endswith("/%2F")
    assert url(vhost="a/b").endswith("/a%2Fb")
    assert url(vhost="dev").endswith("/dev")
    assert url(username="a@b", password="p:w/") == "amqp://a%40b:p%3Aw%2F@localhost:5672/%2F"
    assert url(host="::1").startswith("amqp://guest:guest@[::1]:5672/")
    assert Config.load(env={}, rabbitmq_ca_file="ca.pem").broker_url().startswith("amqps://")


def test_unknown_key_lists_the_valid_keys_and_suggests_the_closest(tmp_path: Path) -> None:
    exc = error(tmp_path, '[taskell]\nurl = "amqp://x"\n')
    assert exc.key == "taskell.url" and str(exc).startswith("taskell.url: unknown key")
    assert "did you mean 'taskell.rabbitmq.url'?" in exc.message  # it belongs to the other table
    assert all(key in exc.message for key in ("parallelism", "queues", "dead_letter_queue", "rabbitmq"))
    assert "taskell.toml" in exc.message

    nested = error(tmp_path, '[taskell.rabbitmq]\nhots = ["a"]\n')
    assert nested.key == "taskell.rabbitmq.hots"
    assert "did you mean 'hosts'?" in nested.message
    assert all(key in nested.message for key in ("host", "port", "vhost", "username", "url"))
    assert "parallelism" not in nested.message
