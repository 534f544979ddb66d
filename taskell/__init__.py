"""taskell: typed task distribution over RabbitMQ.

Declare tasks once in ``tasks.schema.yaml``, run ``taskell gen`` and use the generated
``Client`` (submit), ``Handlers`` (implement) and ``registry(impl)`` (serve).
"""

from ._version import __version__ as __version__
from .config import Config
from .connection import Connection, ConnectionView, attach, connect, fire
from .context import Context
from .errors import (
    BrokerUnavailable,
    ConfigError,
    DependencyFailed,
    PayloadError,
    SchemaError,
    TaskAborted,
    TaskellError,
    TaskExpired,
    TaskFailed,
    TimeLimitExceeded,
)
from .handle import Ref, Retrying, TaskHandle
from .registry import Registry
from .schedule import Schedule
from .scheduler import Scheduler
from .spec import Base64Bytes, ErrorSpec, RetryPolicy, TaskSpec
from .worker import Worker

__all__ = [
    # Generated code
    "Base64Bytes",
    # Errors
    "BrokerUnavailable",
    # Client side
    "Config",
    "ConfigError",
    "Connection",
    "ConnectionView",
    # Worker side
    "Context",
    "DependencyFailed",
    "ErrorSpec",
    "PayloadError",
    "Ref",
    "Registry",
    "RetryPolicy",
    "Retrying",
    "Schedule",
    "Scheduler",
    "SchemaError",
    "TaskAborted",
    "TaskExpired",
    "TaskFailed",
    "TaskHandle",
    "TaskSpec",
    "TaskellError",
    "TimeLimitExceeded",
    "Worker",
    "attach",
    "connect",
    "fire",
]
