"""Durations as the schema writes them: ``30s``, ``10m``, ``1h30m``, ``500ms``, ``2d``, or a
plain number of seconds. One parser for the schema compiler and the command line."""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str | int | float) -> float:
    """Seconds in ``text``: a number (seconds) or ``<number><unit>`` groups, largest unit
    first (``1h30m``); units ``d``, ``h``, ``m``, ``s``, ``ms``.

    Raises:
        ValueError: not a duration, or a negative one.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a duration: {text!r}")
    if isinstance(text, (int, float)):
        if not math.isfinite(text):
            raise ValueError(f"not a duration: {text!r}")
        if text < 0:
            raise ValueError(f"a duration cannot be negative: {text!r}")
        return float(text)
    spelled = text.strip()
    try:
        return parse_duration(float(spelled))
    except ValueError as exc:
        if "negative" in str(exc):
            raise
    position, total, last_scale = 0, 0.0, float("inf")
    for match in _PART.finditer(spelled):
        scale = _UNITS[match.group(2)]
        if match.start() != position or scale >= last_scale:
            break
        total += float(match.group(1)) * scale
        position, last_scale = match.end(), scale
    if position == 0 or position != len(spelled):
        raise ValueError(f"not a duration: {text!r} (write e.g. 30s, 10m, 1h30m, 500ms, 2d)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest schema spelling of ``seconds`` (``90`` -> ``1m30s``)."""
    if seconds < 1 and seconds != 0:
        return f"{round(seconds * 1000):d}ms"
    parts = []
    rest = round(seconds, 3)
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, _UNITS[unit])
        if count:
            parts.append(f"{int(count)}{unit}")
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)
