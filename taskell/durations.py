"""Durations as the schema writes them: ``30s``, ``10m``, ``1h30m``, ``500ms``, ``2d``, or a
plain number of seconds. One parser for the schema compiler and the command line."""

from __future__ import annotations

import math
import re
from decimal import Decimal

__all__ = ["format_duration", "parse_duration"]

_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}
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
    # Summed exactly, rounded once: "700ms" is 0.7, not 700 * 0.001.
    position, total, last_scale = 0, Decimal(0), Decimal("Infinity")
    for match in _PART.finditer(spelled):
        scale = _UNITS[match.group(2)]
        if match.start() != position or scale >= last_scale:
            break
        total += Decimal(match.group(1)) * scale
        position, last_scale = match.end(), scale
    seconds = float(total)
    if position == 0 or position != len(spelled) or not math.isfinite(seconds):
        raise ValueError(f"not a duration: {text!r} (write e.g. 30s, 10m, 1h30m, 500ms, 2d)")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest schema spelling of ``seconds`` to the millisecond (``90`` -> ``1m30s``)."""
    rest = round(seconds * 1000)
    if 0 < rest < 1000:
        return f"{rest}ms"
    parts = []
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, int(_UNITS[unit] * 1000))
        if count:
            parts.append(f"{count}{unit}")
    if rest or not parts:
        parts.append(f"{rest / 1000:g}s")
    return "".join(parts)
