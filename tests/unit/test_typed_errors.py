"""Declared errors on the in-memory broker: a handler raises a generated error class and the
client's ``result()`` raises the same class with the same fields, in both pools and through a
dependency; anything else stays a plain ``TaskFailed``."""

from __future__ import annotations

import datetime
import decimal
import itertools
import json
import uuid
from collections.abc import Iterator

import pytest

import taskell
from examples.worker import Impl
from generated.demo import BOOK, Client, DiscountTooLarge, Order, registry
from taskell import _wire

_names = itertools.count()

ORDER = Order(
    id=uuid.UUID(int=7),
    placed_at=datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC),
    amount=decimal.Decimal("10.50"),
)


class RaisesUndeclared(Impl):
    """``square`` raises an error that only ``book`` declares."""

    def square(self, ctx: taskell.Context[None], x: int) -> int:
        raise DiscountTooLarge(discount=decimal.Decimal(x), limit=decimal.Decimal(1))


@pytest.fixture(params=["thread", "process"])
def demo(request: pytest.FixtureRequest) -> Iterator[Client]:
    config = taskell.Config.load(
        None, env={}, url=f"memory://typed-{next(_names)}", parallelism=2, pool=request.param
    )
    with taskell.Worker(registry(RaisesUndeclared()), config), taskell.connect(config=config) as conn:
        yield Client(conn)


def test_declared_error_reaches_the_client_typed(demo: Client) -> None:
    handle = demo.book(order=ORDER, discount=decimal.Decimal("1.5"))
    with pytest.raises(DiscountTooLarge) as info:
        handle.result(timeout=10)
    error = info.value
    assert (error.discount, error.limit) == (decimal.Decimal("1.5"), decimal.Decimal(1))
    assert isinstance(error, taskell.TaskFailed)
    assert (error.task_id, error.task, error.error_type) == (handle.id, "demo.book", "demo.DiscountTooLarge")
    assert error.message == "discount=Decimal('1.5'), limit=Decimal('1')"
    assert "raise DiscountTooLarge" in error.traceback
    assert str(error) == f"demo.book [{handle.id}] failed: demo.DiscountTooLarge: {error.message}"


def test_error_not_declared_by_the_task_stays_plain(demo: Client) -> None:
    with pytest.raises(taskell.TaskFailed) as info:
        demo.square(x=3).result(timeout=10)
    assert type(info.value) is taskell.TaskFailed
    assert info.value.error_type == "generated.demo.models.DiscountTooLarge"


def test_dependency_failure_keeps_the_typed_cause(demo: Client) -> None:
    booked = demo.book(order=ORDER, discount=decimal.Decimal(2))
    with pytest.raises(taskell.DependencyFailed) as info:
        demo.square(x=2, after=[booked]).result(timeout=10)
    cause = info.value.cause
    assert isinstance(cause, DiscountTooLarge)
    assert (cause.discount, cause.task_id, cause.task) == (decimal.Decimal(2), booked.id, "demo.book")


def test_raised_in_a_handler_it_reads_without_remote_parts() -> None:
    error = DiscountTooLarge(discount=decimal.Decimal(2), limit=decimal.Decimal(1))
    assert (error.task_id, error.task, error.traceback) == ("", "", "")
    assert str(error) == "demo.DiscountTooLarge: discount=Decimal('2'), limit=Decimal('1')"


def test_failure_body_carries_the_fields_as_json() -> None:
    error = DiscountTooLarge(discount=decimal.Decimal("1.25"), limit=decimal.Decimal(1))
    body = json.loads(_wire.failure_body(BOOK, error, "tb"))
    assert body == {
        "error_type": "demo.DiscountTooLarge",
        "message": error.message,
        "traceback": "tb",
        "error": {"discount": "1.25", "limit": "1"},
    }


def test_fields_that_do_not_fit_make_a_payload_failure() -> None:
    error = DiscountTooLarge(discount="lots", limit=decimal.Decimal(1))  # type: ignore[arg-type]
    body = json.loads(_wire.failure_body(BOOK, error, ""))
    assert body["error_type"] == _wire.PAYLOAD_ERROR
    assert "error demo.DiscountTooLarge does not fit its type: discount" in body["message"]


@pytest.mark.parametrize(
    "error",
    [{"discount": "not a number", "limit": "1"}, {"discount": "1"}, "a string"],
    ids=["bad-value", "missing-field", "not-an-object"],
)
def test_undecodable_fields_give_a_plain_task_failed(error: object) -> None:
    info = {"error_type": "demo.DiscountTooLarge", "message": "m", "traceback": "", "error": error}
    failure = _wire.task_failed(BOOK, "id-1", info)
    assert type(failure) is taskell.TaskFailed
    assert (failure.task_id, failure.task, failure.error_type) == (
        "id-1",
        "demo.book",
        "demo.DiscountTooLarge",
    )
