"""Configuration: the ``[taskell]`` table of ``taskell.toml``, environment variables and flags.

Precedence, highest first: keyword overrides (command-line flags), ``TASKELL_*`` environment
variables, the TOML file, the defaults. Every problem is a :class:`~taskell.errors.ConfigError`
whose ``key`` is the dotted file key (``taskell.rabbitmq.port``), the environment variable
(``TASKELL_PARALLELISM``) or the override keyword (``parallelism``) the bad value came from::

    config = Config.load("taskell.toml", parallelism=args.parallelism)
    log.info("connecting to %s", config.masked_url())

Over 400 lines because every key is declared here once, with its default, type, validation
and documentation; splitting the tables apart would split that one list.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from .errors import ConfigError

__all__ = ["URL_SCHEMES", "Config", "RabbitMQ"]

URL_SCHEMES = ("amqp", "amqps", "memory")
"""Broker URL schemes: AMQP, AMQP over TLS, and ``memory://NAME`` for the in-memory broker."""

_ENV_PREFIX = "TASKELL_"
_LIST_FIELDS = frozenset({"queues", "hosts"})
_NULLABLE_FIELDS = frozenset({"prefetch", "metrics_port", "url", "ca_file", "cert_file", "key_file"})

_Path = tuple[str, ...]
_M = TypeVar("_M", bound=BaseModel)


def _check_url(url: str) -> None:
    """Raise ``ValueError`` (never echoing credentials) unless ``url`` is a usable broker URL."""
    parts = urlsplit(url)
    if parts.scheme not in URL_SCHEMES:
        shown = f"{parts.scheme!r}" if parts.scheme else "none"
        raise ValueError(f"URL scheme must be one of {', '.join(URL_SCHEMES)} (got {shown})")
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("URL port must be an integer in 0..65535") from None


def _mask(url: str) -> str:
    """Return ``url`` with the password part of its userinfo replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # Split at the last "@" of the whole rest, so an unquoted "/" in a password cannot leak;
    # at worst an odd URL is over-masked.
    userinfo, at, tail = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:***@{tail}"


# Default prefetch per unit of parallelism. A finished task keeps its slot until the broker has
# confirmed its reply (then it is acknowledged), so short tasks need a deep window to stream:
# at parallelism 1, round-trip throughput is 1,400/s at 4 per slot, 2,700/s at 16 and 3,100/s at
# 32 (bench/bench_throughput.py).
PREFETCH_PER_SLOT = 32


class RabbitMQ(BaseModel):
    """The ``[taskell.rabbitmq]`` table: where the broker is and how to log in.

    ``url``, when set, replaces ``host``, ``port``, ``vhost``, ``username`` and ``password``;
    ``hosts`` and the TLS files still apply. ``password`` and ``url`` are secrets: they show as
    ``**********`` in ``repr`` and logs.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="localhost", min_length=1)
    port: int = Field(default=5672, ge=1, le=65535)
    vhost: str = "/"
    username: str = "guest"
    password: SecretStr = SecretStr("guest")
    url: SecretStr | None = None
    hosts: list[str] = Field(default_factory=list)
    """Extra broker hosts (``host`` or ``host:port``), tried in turn after the main one."""
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_url(value.get_secret_value())
        return value

    @field_validator("hosts")
    @classmethod
    def _valid_hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or any(c in host for c in "/@?# "):
                raise ValueError(f"each host must be 'host' or 'host:port', got {host!r}")
            try:
                _ = urlsplit(f"//{host}").port
            except ValueError:
                raise ValueError(f"bad port in host {host!r}") from None
        return value


class Config(BaseModel):
    """The ``[taskell]`` table of ``taskell.toml`` plus the runtime's tuning knobs.

    Attributes:
        abort_exchange: Fanout exchange every worker binds a queue to, for abort notices.
            Aborts are also recorded in the stream named after it plus ``.log``.
        abort_retention: Seconds an abort is kept on the broker (default one day), so a
            worker that starts within that time still refuses the aborted task; ``0`` keeps
            none (an abort then reaches only the workers up at the time). The record stream
            also holds at most 20 MB (about 70,000 aborts), and a worker remembers the latest
            100,000 aborted ids. Clients and workers must agree on it: the stream is declared
            with it. See the operations guide (docs/operations.md).
        parallelism: Tasks a worker runs at once (>= 1).
        queues: Queues a worker consumes; ``None`` means the queues of its registered tasks.
        dead_letter_queue: Where undecodable, unknown or poison messages go.
        pool: Run handlers in a ``"thread"`` or ``"process"`` pool.
        queue_type: Declare task queues as ``"classic"`` or ``"quorum"`` queues.
        delivery_limit: Quorum queues dead-letter a task delivered this many times (a poison
            message that keeps killing its worker).
        prefetch: AMQP prefetch count; ``None`` means ``PREFETCH_PER_SLOT`` (32) ×
            ``parallelism``: tasks wait on the worker, so it never idles while replies are being
            confirmed. For long tasks set it to ``parallelism``, so none waits on a busy worker
            while another worker is idle.
        shutdown_grace: Seconds a stopping worker (SIGTERM) lets running tasks finish before it
            aborts and requeues them.
        schedule_catch_up: What a scheduler taking over does with the due times of a schedule
            missed while no scheduler ran: ``"latest"`` fires the latest one once, ``"all"``
            fires each (at most 100, the latest ones), ``"none"`` fires none.
        lease_after: Seconds a task runs before its worker leases it (acknowledges it and keeps
            a self-renewing copy), so the broker's ``consumer_timeout`` never applies to it.
        lease_ttl: Seconds after which a leased task whose worker died is delivered again.
        max_payload_bytes: Largest message body accepted or sent.
        connect_timeout: Seconds to wait for a broker connection.
        heartbeat: AMQP heartbeat in seconds (0 disables it).
        metrics_port: A worker serves Prometheus metrics at ``http://metrics_host:PORT/metrics``;
            ``None`` (the default) serves none, ``0`` picks a free port (logged).
        metrics_host: The address the metrics are served on; loopback by default.
        rabbitmq: The ``[taskell.rabbitmq]`` table.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    abort_exchange: str = Field(default="taskell.abort", min_length=1, max_length=255)
    abort_retention: float = Field(default=86400.0, ge=0)
    parallelism: int = Field(default=1, ge=1)
    queues: list[str] | None = Field(default=None, min_length=1)
    dead_letter_queue: str = Field(default="taskell.dead", min_length=1, max_length=255)
    pool: Literal["thread", "process"] = "thread"
    queue_type: Literal["classic", "quorum"] = "classic"
    delivery_limit: int = Field(default=5, ge=1)
    shutdown_grace: float = Field(default=60.0, ge=0)
    schedule_catch_up: Literal["latest", "all", "none"] = "latest"
    lease_after: float = Field(default=600.0, gt=0)
    lease_ttl: float = Field(default=60.0, gt=0)
    prefetch: int | None = Field(default=None, ge=1)
    max_payload_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    connect_timeout: float = Field(default=10.0, gt=0)
    heartbeat: int = Field(default=60, ge=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = Field(default="127.0.0.1", min_length=1)
    rabbitmq: RabbitMQ = Field(default_factory=RabbitMQ)

    @field_validator("abort_exchange")
    @classmethod
    def _valid_abort_exchange(cls, value: str) -> str:
        if len(value.encode()) > 251:  # AMQP names are at most 255 bytes
            raise ValueError("must be at most 251 bytes: its record stream is named after it plus '.log'")
        return value

    @field_validator("queues")
    @classmethod
    def _valid_queues(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        for name in value:
            if not name or len(name.encode()) > 255:
                raise ValueError("each queue name must be 1 to 255 bytes")
        if len(set(value)) != len(value):
            raise ValueError("queue names must be unique")
        return value

    @property
    def effective_prefetch(self) -> int:
        """The prefetch count to use: ``prefetch``, or ``PREFETCH_PER_SLOT × parallelism``."""
        return self.prefetch if self.prefetch is not None else PREFETCH_PER_SLOT * self.parallelism

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Return the default config with broker ``url`` (no file, no environment).

        Raises:
            ConfigError: ``url`` has an unsupported scheme or is malformed (key ``url``).
        """
        return cls.load(None, env={}, url=url)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Self:
        """Read ``path`` (TOML), overlay ``TASKELL_*`` variables from ``env``, then ``overrides``.

        Args:
            path: The config file; ``None`` reads no file. A given file must exist.
            env: Environment variables; defaults to ``os.environ``.
            **overrides: Command-line values by field name (``parallelism=4``,
                ``queues=[...]``), ``url=`` for the broker URL, or ``rabbitmq_<key>=``.
                ``None`` values are skipped, so unset flags can be passed straight through.

        Returns:
            The validated, frozen config.

        Raises:
            ConfigError: The file is missing or not TOML (key: the path), or a value is
                unknown or invalid (key: the dotted file key, variable or keyword name).
        """
        layers: list[tuple[dict[str, Any], dict[_Path, str]]] = []
        if path is not None:
            layers.append(_file_layer(cls, path))
        layers.append(_env_layer(cls, os.environ if env is None else env))
        layers.append(_override_layer(cls, overrides))
        merged: dict[str, Any] = {}
        origin: dict[_Path, str] = {}
        for data, names in layers:
            _deep_merge(merged, data)
            origin.update(names)
        return _validate(cls, merged, strict=False, name=lambda p: _lookup(origin, p), where="")

    def broker_url(self) -> str:
        """Return the broker URL: ``rabbitmq.url`` when set, else built from the fields.

        The built URL is ``amqps`` when a CA or client certificate file is set, else ``amqp``;
        the vhost is URL-quoted (``/`` becomes ``%2F``).
        """
        mq = self.rabbitmq
        if mq.url is not None:
            return mq.url.get_secret_value()
        return self._built_url(mq.password.get_secret_value())

    def broker_urls(self) -> list[str]:
        """Return ``broker_url()`` followed by one URL per extra host in ``rabbitmq.hosts``."""
        first = self.broker_url()
        urls = [first]
        parts = urlsplit(first)
        userinfo = parts.netloc.rpartition("@")[0]
        for host in self.rabbitmq.hosts:
            netloc = f"{userinfo}@{host}" if userinfo else host
            urls.append(parts._replace(netloc=netloc).geturl())
        return urls

    def masked_url(self) -> str:
        """Return ``broker_url()`` with the password replaced by ``***``, safe to log."""
        if self.rabbitmq.url is not None:
            return _mask(self.rabbitmq.url.get_secret_value())
        return self._built_url(None)

    def _built_url(self, password: str | None) -> str:
        mq = self.rabbitmq
        scheme = "amqps" if mq.ca_file or mq.cert_file else "amqp"
        secret = "***" if password is None else quote(password, safe="")
        host = f"[{mq.host}]" if ":" in mq.host and not mq.host.startswith("[") else mq.host
        return (
            f"{scheme}://{quote(mq.username, safe='')}:{secret}@{host}:{mq.port}/{quote(mq.vhost, safe='')}"
        )


# --- sources ---------------------------------------------------------------------------------


def _file_layer(cls: type[Config], path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[_Path, str]]:
    """Read and validate the file on its own, so errors name the dotted file key."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(shown, "config file not found") from None
    except OSError as exc:
        raise ConfigError(shown, f"cannot read config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(shown, f"invalid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(shown, "invalid TOML: file is not UTF-8") from None
    for key in doc:
        if key != "taskell":
            raise ConfigError(key, f"unknown top-level key (only [taskell] is allowed) in {shown}")
    data = doc.get("taskell", {})
    if not isinstance(data, dict):
        raise ConfigError("taskell", f"must be a table in {shown}")
    _validate(cls, data, strict=True, name=lambda p: ".".join(("taskell", *p)), where=f" in {shown}")
    return data, {}


def _env_layer(cls: type[Config], env: Mapping[str, str]) -> tuple[dict[str, Any], dict[_Path, str]]:
    """Pick the known ``TASKELL_*`` variables, parse lists and empties, validate them."""
    top = {k for k in cls.model_fields if k != "rabbitmq"}
    nested = set(RabbitMQ.model_fields)
    data: dict[str, Any] = {}
    names: dict[_Path, str] = {}
    # TASKELL_URL is read last so it wins over TASKELL_RABBITMQ_URL.
    for var in sorted(env, key=lambda v: v == "TASKELL_URL"):
        if not var.startswith(_ENV_PREFIX):
            continue
        key = var[len(_ENV_PREFIX) :]
        if key == "URL":
            where: _Path = ("rabbitmq", "url")
        elif key.startswith("RABBITMQ_") and key[9:].lower() in nested and key[9:].isupper():
            where = ("rabbitmq", key[9:].lower())
        elif key.lower() in top and key.isupper():
            where = (key.lower(),)
        else:
            continue
        raw = env[var]
        value: Any = raw
        if where[-1] in _LIST_FIELDS:
            value = [item.strip() for item in raw.split(",") if item.strip()]
        elif where[-1] in _NULLABLE_FIELDS and not raw.strip():
            value = None
        _set(data, where, value)
        names[where] = var
    _validate(cls, data, strict=False, name=lambda p: _lookup(names, p), where=" (environment)")
    return data, names


def _override_layer(
    cls: type[Config], overrides: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[_Path, str]]:
    """Map keyword overrides onto field paths, skipping ``None``, and validate them."""
    top = set(cls.model_fields)
    data: dict[str, Any] = {}
    names: dict[_Path, str] = {}
    for kw, value in overrides.items():
        if value is None:
            continue
        if kw == "url":
            where: _Path = ("rabbitmq", "url")
        elif kw.startswith("rabbitmq_") and kw[9:] in RabbitMQ.model_fields:
            where = ("rabbitmq", kw[9:])
        elif kw in top:
            where = (kw,)
        else:
            raise ConfigError(kw, f"unknown setting{_suggest(kw, sorted(top | {'url'}))}")
        if isinstance(value, RabbitMQ):
            value = value.model_dump()
        if isinstance(value, tuple):
            value = list(value)
        _set(data, where, value)
        names[where] = kw
    _validate(cls, data, strict=False, name=lambda p: _lookup(names, p), where="")
    return data, names


# --- helpers ---------------------------------------------------------------------------------


def _validate(
    cls: type[_M], data: dict[str, Any], *, strict: bool, name: Callable[[_Path], str], where: str
) -> _M:
    """Validate ``data`` as ``cls``; turn the first pydantic error into a ``ConfigError``.

    ``name`` maps a field path (``("rabbitmq", "port")``) to the key reported to the user.
    """
    try:
        return cls.model_validate(data, strict=strict)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = tuple(str(p) for p in err["loc"] if isinstance(p, str))
        if err["type"] == "extra_forbidden":
            raise ConfigError(name(loc), _unknown_key(loc, where)) from None
        message = str(err["msg"]).removeprefix("Value error, ")
        indices = [p for p in err["loc"] if isinstance(p, int)]
        if indices:
            message = f"item {indices[0]}: {message}"
        raise ConfigError(name(loc), message + where) from None


def _unknown_key(loc: _Path, where: str) -> str:
    """The message for an unknown key: the closest valid one (in its table, else in the other
    table, dotted), then every valid key of its table."""
    if loc[:1] == ("rabbitmq",) and len(loc) == 2:
        table, known = "[taskell.rabbitmq]", sorted(RabbitMQ.model_fields)
        other, other_known = "taskell", sorted(set(Config.model_fields) - {"rabbitmq"})
    else:
        table, known = "[taskell]", sorted(Config.model_fields)
        other, other_known = "taskell.rabbitmq", sorted(RabbitMQ.model_fields)
    hint = _suggest(loc[-1], known)
    if not hint:
        close = difflib.get_close_matches(loc[-1], other_known, n=1)
        hint = f" (did you mean '{other}.{close[0]}'?)" if close else ""
    return f"unknown key{where}{hint}; valid keys in {table}: {', '.join(known)}"


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _lookup(names: Mapping[_Path, str], path: _Path) -> str:
    """Return the source name of ``path`` or of its nearest recorded ancestor or descendant."""
    for i in range(len(path), 0, -1):
        if path[:i] in names:
            return names[path[:i]]
    for known, var in names.items():
        if known[: len(path)] == path:
            return var
    return ".".join(("taskell", *path))


def _set(data: dict[str, Any], path: _Path, value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def _deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value
