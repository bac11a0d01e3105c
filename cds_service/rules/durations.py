"""Durations as written in mappings/ (``30m``, ``12h``, ``-7d``)."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(-?\d+(?:\.\d+)?)\s*(m|h|d)$")
_SCALE = {"m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: object) -> timedelta:
    """Parse ``12h``, ``-7d`` or ``15m`` into a timedelta.

    :raises ValueError: not a duration of that form.
    """
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"not a duration (expected e.g. 12h, 7d, 15m): {text!r}")
    return timedelta(seconds=float(match.group(1)) * _SCALE[match.group(2)])


def describe_duration(delta: timedelta) -> str:
    """A short human form of a duration: ``72 h``, ``7 d``."""
    hours = delta.total_seconds() / 3600
    if hours >= 48 and hours % 24 == 0:
        return f"{int(hours // 24)} d"
    if hours >= 1:
        return f"{hours:g} h"
    return f"{delta.total_seconds() / 60:g} min"
