"""JSON forms (SPEC §7) of the generated models, and load_specs producing the very same bytes."""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import pydantic
import pytest

from generated.demo import models
from taskell.codegen import fingerprint, load_schema, load_specs
from tests.support import ROOT

SCHEMA = str(ROOT / "tasks.schema.yaml")

UTC = datetime.UTC
PLUS2 = datetime.timezone(datetime.timedelta(hours=2))
ORDER = models.Order(
    id=uuid.UUID("12345678-1234-5678-1234-56781234ABCD"),
    placed_at=datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=PLUS2),
    amount=decimal.Decimal("12.50"),
    color=models.Color.blue,
    tags=("a", "é"),
    due=datetime.date(2024, 6, 1),
)
IMAGE = models.Image(width=2, height=1, pixels=b"\xff\x00\xfe\x80", label=None)


@pytest.fixture(scope="module")
def specs() -> dict[str, Any]:
    return load_specs(SCHEMA)


def test_json_forms() -> None:
    data = json.loads(models.BookArgs(order=ORDER, discount=decimal.Decimal("0.1")).model_dump_json())
    assert data == {
        "order": {
            "id": "12345678-1234-5678-1234-56781234abcd",
            "placed_at": "2024-05-06T07:08:09.123456+02:00",
            "amount": "12.50",
            "color": "blue",
            "tags": ["a", "é"],
            "due": "2024-06-01",
        },
        "discount": "0.1",
        "coupon": "AP8=",
    }
    assert json.loads(IMAGE.model_dump_json())["pixels"] == "/wD+gA=="


@pytest.mark.parametrize(
    ("task", "args"),
    [
        ("sum", {"numbers": [1, -2, 3]}),
        ("book", {"order": ORDER, "discount": None}),
        ("thumbnail", {"image": IMAGE, "size": 64}),
        (
            "tree_sum",
            {"tree": models.Tree(value=1, children=[models.Tree(value=2, children=[models.Tree(value=3)])])},
        ),
        ("fail", {}),
    ],
)
def test_round_trip_and_live_specs_agree(task: str, args: dict[str, Any], specs: dict[str, Any]) -> None:
    generated_spec = getattr(models, task.upper())
    model = generated_spec.args(**args)
    wire = model.model_dump_json()
    assert generated_spec.args.model_validate_json(wire) == model
    live = specs[task].args.model_validate_json(wire)
    assert live.model_dump_json() == wire
    # Defaults, filled in on each side from an empty-ish body, give the same bytes too.
    minimal = {
        k: v for k, v in json.loads(wire).items() if k not in {"size", "discount", "coupon", "message"}
    }
    body = json.dumps(minimal)
    assert specs[task].args.model_validate_json(body).model_dump_json() == (
        generated_spec.args.model_validate_json(body).model_dump_json()
    )


@pytest.mark.parametrize(
    ("task", "value"),
    [
        ("book", models.Receipt(order=ORDER, total=decimal.Decimal("1E+3"), notes={"k": "v"})),
        ("thumbnail", IMAGE),
        ("sleep", 1.5),
        ("fail", None),
    ],
)
def test_results_agree(task: str, value: Any, specs: dict[str, Any]) -> None:
    generated_spec = getattr(models, task.upper())
    wire = generated_spec.result.dump_json(value)
    assert generated_spec.result.validate_json(wire) == value
    assert specs[task].result.dump_json(specs[task].result.validate_json(wire)) == wire


def test_specs_metadata_agree(specs: dict[str, Any]) -> None:
    schema, _ = load_schema(SCHEMA)
    assert list(specs) == [t.name for t in schema.tasks]
    for task in schema.tasks:
        ours, live = getattr(models, task.name.upper()), specs[task.name]
        assert (live.name, live.queue, live.fingerprint) == (ours.name, ours.queue, ours.fingerprint)
        assert live.fingerprint == fingerprint(schema, task)
        assert live.args.model_json_schema()["properties"].keys() == ours.args.model_fields.keys()


def test_bytes_are_base64_incl_non_utf8() -> None:
    raw = bytes(range(256))
    wire = models.ThumbnailArgs(image=models.Image(width=1, height=1, pixels=raw)).model_dump_json()
    assert models.ThumbnailArgs.model_validate_json(wire).image.pixels == raw
    with pytest.raises(pydantic.ValidationError):
        models.ThumbnailArgs.model_validate_json('{"image": {"width": 1, "height": 1, "pixels": "%%%"}}')


def test_naive_datetime_rejected() -> None:
    body = json.loads(models.BookArgs(order=ORDER).model_dump_json())
    body["order"]["placed_at"] = "2024-05-06T07:08:09"
    with pytest.raises(pydantic.ValidationError, match="timezone"):
        models.BookArgs.model_validate_json(json.dumps(body))


def test_enum_by_name_and_extra_forbidden() -> None:
    assert models.Color("green") is models.Color.green
    assert models.Color.green.value == "green"
    with pytest.raises(pydantic.ValidationError):
        models.SumArgs.model_validate_json('{"numbers": [1], "extra": 1}')
    with pytest.raises(pydantic.ValidationError):
        models.SumArgs(numbers=[1]).numbers = []  # type: ignore[misc]


def test_defaults_decoded() -> None:
    args = models.BookArgs(order=ORDER)
    assert args.coupon == b"\x00\xff"
    assert args.discount is None
    assert models.ThumbnailArgs(image=IMAGE).size == 128
    assert models.Order.model_fields["tags"].default == ()
    assert models.Tree(value=1).children == []


def test_fingerprint_ignores_docs_not_types(tmp_path: Path) -> None:
    text = (ROOT / "tasks.schema.yaml").read_text()

    def fingerprints(source: str) -> dict[str, str]:
        path = tmp_path / "s.yaml"
        path.write_text(source)
        return {name: spec.fingerprint for name, spec in load_specs(str(path)).items()}

    base = fingerprints(text)
    assert fingerprints(text.replace("Square a number.", "Squares.")) == base
    changed = fingerprints(text.replace("pixels: {type: bytes,", "pixels: {type: str,"))
    assert changed["thumbnail"] != base["thumbnail"]
    assert changed["sum"] == base["sum"]
    assert len(set(base.values())) == len(base)
