"""Per-call submission options (``Connection.options``): checked once, combined, and turned into
what a task message carries (its delay, priority and expiry)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from . import _wire
from .transport.delays import MAX_DELAY_MS

__all__ = ["SubmitOptions"]

MAX_DELAY_S = MAX_DELAY_MS / 1000


@dataclass(frozen=True)
class SubmitOptions:
    """Options for the submissions made through a ``ConnectionView``; None: not set (the
    schema's value, or none). At most one of ``delay`` and ``eta`` is set."""

    delay: float | None = None  # seconds after submission
    eta: datetime | None = None  # aware
    priority: int | None = None
    expires: float | None = None  # seconds after the task becomes due

    @classmethod
    def make(
        cls,
        *,
        delay: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        expires: float | timedelta | None = None,
    ) -> SubmitOptions:
        """Check the options as ``Connection.options`` takes them.

        Raises:
            ValueError: naming the option that is wrong.
        """
        if delay is not None and eta is not None:
            raise ValueError("options: give delay or eta, not both")
        if eta is not None:
            if not isinstance(eta, datetime):
                raise ValueError(f"options: eta must be a datetime, not {type(eta).__name__}")
            if eta.tzinfo is None or eta.utcoffset() is None:
                raise ValueError(f"options: eta must be timezone-aware (e.g. datetime.now(UTC)), got {eta}")
        if priority is not None and (
            isinstance(priority, bool)
            or not isinstance(priority, int)
            or not 0 <= priority <= _wire.MAX_PRIORITY
        ):
            raise ValueError(
                f"options: priority must be a whole number from 0 to {_wire.MAX_PRIORITY}, got {priority!r}"
            )
        seconds = None if delay is None else _seconds("delay", delay)
        if seconds is not None and seconds > MAX_DELAY_S:
            raise ValueError(
                f"options: delay {seconds:g} s is over the longest one, {MAX_DELAY_S:.0f} s (8.7 years)"
            )
        lifetime = None if expires is None else _seconds("expires", expires)
        if lifetime == 0:
            raise ValueError("options: expires must be more than 0 seconds")
        return cls(seconds, eta, priority, lifetime)

    def combine(self, newer: SubmitOptions) -> SubmitOptions:
        """These options with those set in ``newer`` instead (a delay replaces an eta and back)."""
        combined = self
        if newer.delay is not None or newer.eta is not None:
            combined = replace(combined, delay=newer.delay, eta=newer.eta)
        if newer.priority is not None:
            combined = replace(combined, priority=newer.priority)
        if newer.expires is not None:
            combined = replace(combined, expires=newer.expires)
        return combined

    def delay_now(self) -> float:
        """Seconds from now until the task is due (0: at once).

        Raises:
            ValueError: an eta further away than a delay can be.
        """
        if self.eta is None:
            return self.delay or 0.0
        seconds = (self.eta - datetime.now(UTC)).total_seconds()
        if seconds > MAX_DELAY_S:
            raise ValueError(f"options: eta {self.eta} is further away than the longest delay (8.7 years)")
        return max(seconds, 0.0)

    @property
    def is_delayed(self) -> bool:
        return self.delay is not None or self.eta is not None


def _seconds(name: str, value: float | timedelta) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise ValueError(f"options: {name} must be seconds or a timedelta, not {type(value).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"options: {name} must be a duration >= 0, got {value!r}")
    return seconds
