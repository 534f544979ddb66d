"""The public surface is explicit: every name in ``taskell.__all__`` exists and is documented."""

from __future__ import annotations

import taskell


def test_all_names_exist() -> None:
    for name in taskell.__all__:
        assert hasattr(taskell, name), name


def test_public_names_have_docstrings() -> None:
    for name in taskell.__all__:
        assert getattr(taskell, name).__doc__, f"taskell.{name} has no docstring"


def test_error_tree() -> None:
    for name in ["BrokerUnavailable", "ConfigError", "DependencyFailed", "PayloadError", "SchemaError"]:
        assert issubclass(getattr(taskell, name), taskell.TaskellError)
    assert issubclass(taskell.TaskFailed, taskell.TaskellError)
    assert issubclass(taskell.TaskAborted, taskell.TaskellError)
    assert not issubclass(taskell.TaskellError, TimeoutError)
