"""Durations as the schema and the command line write them."""

from __future__ import annotations

import pytest

from taskell.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("2d", 172800.0),
        ("500ms", 0.5),
        ("1s500ms", 1.5),
        ("0.1h", 360.0),
        (" 30s ", 30.0),
        ("30", 30.0),
        ("1.5", 1.5),
        (0, 0.0),
        (90, 90.0),
        (2.5, 2.5),
        # Decimal spellings come out as the nearest float, not a product of rounded factors.
        ("700ms", 0.7),
        ("1.1s", 1.1),
        ("100ms", 0.1),
        ("2h0.7s", 7200.7),
    ],
)
def test_parse(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "not a duration: 'soon'"),
        ("", "not a duration: ''"),
        ("1h30", "not a duration: '1h30'"),
        ("1m1h", "not a duration: '1m1h'"),
        ("1m 30s", "not a duration: '1m 30s'"),
        ("-5s", "not a duration: '-5s'"),
        ("1:30", "not a duration: '1:30'"),
        ("nan", "not a duration: 'nan'"),
        ("inf", "not a duration: 'inf'"),
        ("9" * 400 + "s", "not a duration: .9999"),
        ("-1", "a duration cannot be negative"),
        (-1, "a duration cannot be negative"),
        (float("inf"), "not a duration"),
        (True, "not a duration"),
    ],
)
def test_parse_rejects(text: str | float, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (30, "30s"),
        (90, "1m30s"),
        (5400, "1h30m"),
        (172800, "2d"),
        (0.5, "500ms"),
        (1.5, "1.5s"),
        (3600.5, "1h0.5s"),
        # Rounded to the millisecond before choosing the unit: not "1000ms".
        (0.9999, "1s"),
        (59.9999, "1m"),
        (0.0004, "0s"),
    ],
)
def test_format(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [0.0, 0.001, 0.25, 0.7, 1.0, 59.5, 61.0, 3599.999, 5400.0, 90061.5])
def test_format_parses_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
