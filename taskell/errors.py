"""Every error taskell raises, under one root.

    TaskellError
    ├── SchemaError            a schema file is invalid (one line per problem)
    ├── ConfigError            a config key or environment variable is invalid (.key)
    ├── BrokerUnavailable      the broker cannot be reached, or the connection was lost
    ├── PayloadError           bytes in or out do not fit a task's model (.task, .detail)
    ├── TaskFailed             the remote handler raised (.task_id, .task, .error_type, ...)
    │   ├── TimeLimitExceeded  the handler ran past the task's time_limit (.limit_s)
    │   └── (generated)        one class per declared error of a schema, with its fields
    ├── TaskAborted            the task was aborted (.task_id)
    ├── TaskExpired            the task was not started before it expired (.task_id)
    └── DependencyFailed       an upstream task failed or was aborted (.dependency_id, .cause)

Catch ``TaskellError`` to handle all of them::

    try:
        total = handle.result(timeout=30)
    except taskell.TaskFailed as exc:
        print(exc.error_type, exc.message)
    except taskell.TaskellError:
        ...

A timeout is the builtin ``TimeoutError``, never a taskell class.
"""

from __future__ import annotations

__all__ = [
    "BrokerUnavailable",
    "ConfigError",
    "DependencyFailed",
    "PayloadError",
    "SchemaError",
    "TaskAborted",
    "TaskExpired",
    "TaskFailed",
    "TaskellError",
    "TimeLimitExceeded",
]


class TaskellError(Exception):
    """Base class of every taskell error."""


class SchemaError(TaskellError):
    """A schema file is invalid; ``errors`` holds one ``FILE:LINE:COL: message`` line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class ConfigError(TaskellError):
    """A configuration value is invalid; ``key`` is the dotted file key or the variable name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class BrokerUnavailable(TaskellError):
    """The broker cannot be reached, refused an operation, or the connection was lost."""


class PayloadError(TaskellError):
    """Bytes in or out do not decode or validate against the task's model."""

    def __init__(self, task: str, detail: str) -> None:
        super().__init__(f"{task}: {detail}")
        self.task = task
        self.detail = detail


class TaskFailed(TaskellError):
    """The remote handler raised; its type, message and traceback text are kept.

    The exception classes generated for a schema's ``errors`` are subclasses: a handler raises
    one with its fields, and the client's ``result()`` raises the same class with the same
    fields. Until it has crossed the wire, ``task_id``, ``task`` and ``traceback`` are empty.
    """

    def __init__(self, task_id: str, task: str, error_type: str, message: str, traceback: str) -> None:
        super().__init__(f"{task} [{task_id}] failed: {error_type}: {message}")
        self.task_id = task_id
        self.task = task
        self.error_type = error_type
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        if not self.task_id:  # a declared error raised in a handler, not sent yet
            return f"{self.error_type}: {self.message}"
        return f"{self.task} [{self.task_id}] failed: {self.error_type}: {self.message}"


class TimeLimitExceeded(TaskFailed):
    """The handler ran longer than the task's ``time_limit`` and was stopped; ``limit_s`` is
    the limit in seconds."""

    def __init__(
        self, task_id: str, task: str, limit_s: float, message: str = "", traceback: str = ""
    ) -> None:
        message = message or f"stopped after its time limit of {limit_s:g} s"
        super().__init__(task_id, task, "taskell.TimeLimitExceeded", message, traceback)
        self.limit_s = limit_s


class TaskExpired(TaskellError):
    """The task was still unstarted when it expired (``expires``), so it never ran."""

    def __init__(self, task_id: str, message: str = "expired before it started") -> None:
        super().__init__(f"task {task_id}: {message}")
        self.task_id = task_id


class TaskAborted(TaskellError):
    """The task was aborted before or while it ran."""

    def __init__(self, task_id: str, message: str = "aborted") -> None:
        super().__init__(f"task {task_id}: {message}")
        self.task_id = task_id


class DependencyFailed(TaskellError):
    """A task this one depends on failed or was aborted, so this one never ran."""

    def __init__(self, task_id: str, dependency_id: str, cause: TaskellError) -> None:
        super().__init__(f"task {task_id}: dependency {dependency_id} failed: {cause}")
        self.task_id = task_id
        self.dependency_id = dependency_id
        self.cause = cause
