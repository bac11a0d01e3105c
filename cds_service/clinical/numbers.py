"""Numbers as they were reported: ``1.40`` keeps its trailing zero, ``2.0`` its decimal.

JSON (FHIR) and YAML (mappings) are parsed with ``Reported`` for their decimals, so card
text shows a value with the precision its source gave ("OR 1.70", "Mg 2.0 mg/dL").
"""

from __future__ import annotations

import json
import math
from decimal import Decimal, InvalidOperation
from typing import Any


class Reported(float):
    """A float that remembers the decimal text it was read from."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> Reported:
        """Parse ``text`` as a float and keep the text."""
        self = super().__new__(cls, text)
        self.text = text.strip()
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (Reported, (self.text,))


def loads(text: str | bytes) -> Any:
    """``json.loads`` with decimals read as ``Reported``."""
    return json.loads(text, parse_float=Reported)


def decimals(x: float | int) -> int:
    """How many decimals a number was reported with (shortest form for a plain float)."""
    if isinstance(x, bool):
        return 0
    if isinstance(x, int):
        return 0
    if isinstance(x, Reported):
        try:
            exponent = Decimal(x.text).as_tuple().exponent
        except InvalidOperation:
            return 0
        return max(0, -exponent) if isinstance(exponent, int) else 0
    if not math.isfinite(x):
        return 0
    text = repr(float(x))
    if "e" in text or "E" in text:
        exponent = Decimal(text).as_tuple().exponent
        return max(0, -exponent) if isinstance(exponent, int) else 0
    return len(text.split(".")[1]) if "." in text else 0


def as_reported(x: float | int) -> str:
    """A number written with the decimals it was reported with (``1.40``, ``2.0``, ``16``)."""
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, int):
        return str(x)
    places = decimals(x)
    return f"{x:.{places}f}"
