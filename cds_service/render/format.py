"""Numbers, units, times and lists as a clinician reads them, per locale.

Values keep the precision their source reported (``1.40``, ``2.0``, ``OR 1.70``); a value
converted to another unit is rounded for reading only (magnesium 2 decimals in mmol/L,
1-2 in mg/dL; creatinine whole µmol/L). Units are spelled as clinicians write them
(``units.yaml``: the unit's key is its display spelling). Locale choices (which magnesium
and creatinine unit comes first, punctuation) are ``format:`` in ``text/<locale>.yaml``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.numbers import Reported, as_reported, decimals
from cds_service.rules.model import Bounds, Knowledge, NamedQuantity

QUANTITY_OF_KIND = {
    m.SERUM_MG: "magnesium",
    m.IONIZED_MG: "magnesium",
    m.CREATININE: "creatinine",
    m.ALBUMIN: "albumin",
    m.EGFR: "egfr",
    m.WEIGHT: "weight",
}
# Chinese runs on: no space between a Chinese character (or closing full-width bracket) and
# the Chinese character after it, however the filled placeholders ended or began.
_CJK_GAP = re.compile(r"(?<=[\u4e00-\u9fff）」』】])[ \t]+(?=[\u4e00-\u9fff])")
# A laboratory's range without a unit (HL7 v2 OBX-7 is in the units of OBX-6): ``1.7-2.5``.
_BARE_RANGE = re.compile(r"[\d\s.,\-–<>≤≥=]+")
_FULL_WIDTH_END = ("。", "；", "：", "，", "）", "！", "？")
_SYMBOLS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def fixed(x: float, places: int) -> str:
    """``x`` rounded half up to ``places`` decimals, zeros kept (``20``, ``0.70``)."""
    step = Decimal(1).scaleb(-places) if places > 0 else Decimal(1)
    return str(Decimal(repr(float(x))).quantize(step, rounding=ROUND_HALF_UP))


def fmt_num(x: float, places: int = 2) -> str:
    """A number with at most ``places`` decimals, trailing decimal zeros removed (20 stays 20)."""
    return trimmed(x, places)


def trimmed(x: float, places: int, keep: int = 0) -> str:
    """``x`` to at most ``places`` decimals, trailing zeros dropped down to ``keep`` decimals."""
    text = fixed(x, places)
    if "." not in text:
        return text
    head, tail = text.split(".")
    tail = tail.rstrip("0")
    tail = tail + "0" * (keep - len(tail)) if len(tail) < keep else tail
    return f"{head}.{tail}" if tail else head


class Formatter:
    """Formats values for one locale (``text/<locale>.yaml`` ``format:`` choices)."""

    def __init__(self, knowledge: Knowledge, texts: dict[str, Any]) -> None:
        self.k = knowledge
        self.f: dict[str, Any] = texts["format"]

    # --- units and plain numbers -----------------------------------------------------

    def unit(self, quantity: str, unit: str) -> str:
        """A unit's display spelling (``meq/l`` -> ``mEq/L``)."""
        q = self.k.units.quantities.get(quantity)
        if q is None:
            return unit
        return q.preferred.get(unit.strip(), unit)

    def number(self, x: float | int) -> str:
        """A number as reported (rule files, results): ``1.70``, ``16``; a computed float with
        more than 3 decimals is rounded to 3 (no ``0.6171569635877392 mmol/L`` on a card)."""
        if isinstance(x, float) and not isinstance(x, Reported) and decimals(x) > 3:
            return trimmed(x, 3)
        return as_reported(x)

    def amount(self, x: float | int, unit: str) -> str:
        """A dose: ``5.9 g``, ``3 g`` (never ``3.0 g``: a trailing zero on a dose is read as
        ten times the dose; ISMP error-prone notation)."""
        return f"{trimmed(float(x), 3)} {unit}"

    def minutes_up(self, minutes: float) -> str:
        """Whole minutes, rounded up (a rate limit is never exceeded by rounding)."""
        return f"{math.ceil(minutes - 1e-9)} {self.f['minutes']}"

    def duration(self, delta: timedelta) -> str:
        """``72 h``, ``7 days``, ``15 min`` (``format.hours``/``days``/``minutes``)."""
        seconds = delta.total_seconds()
        hours = seconds / 3600
        if hours > 72 and hours % 24 == 0:  # 48 h and 72 h stay in hours, as protocols say them
            days = int(hours // 24)
            return f"{days} {self.f['day' if days == 1 else 'days']}"
        if hours >= 1 and hours == int(hours):
            return f"{int(hours)} {self.f['hours']}"
        if hours >= 1:
            return f"{trimmed(hours, 1)} {self.f['hours']}"
        return self.minutes_up(seconds / 60)

    def days(self, n: int) -> str:
        """``3 days``."""
        return f"{n} {self.f['day' if n == 1 else 'days']}"

    def time(self, t: datetime) -> str:
        """A timestamp at minute precision with its zone."""
        zone = t.tzname()
        return t.strftime("%Y-%m-%d %H:%M") + (f" {zone}" if zone else "")

    def join(self, items: Iterable[str], sep: str = "list") -> str:
        """Items joined with the locale's separator (``list``: ``, ``/``、``; ``clause``)."""
        return str(self.f[f"{sep}_sep"]).join(items)

    @staticmethod
    def tidy(text: str) -> str:
        """Filled text with the spaces Chinese does not put between its characters removed."""
        return _CJK_GAP.sub("", text)

    def sentences(self, *parts: str) -> str:
        """Sentences (or a sentence and its links) one after the other: a space between them,
        none after full-width punctuation (Chinese text runs on after 。)."""
        out = ""
        for part in parts:
            if not part:
                continue
            if out and not out.endswith(_FULL_WIDTH_END):
                out += " "
            out += part
        return out

    def paren(self, text: str) -> str:
        """Text in the locale's brackets."""
        return f"{self.f['open']}{text}{self.f['close']}"

    def after(self, text: str, note: str) -> str:
        """``text (note)``: the note in brackets, spaced as the locale spaces them."""
        return f"{text}{self.f['paren_space']}{self.paren(note)}"

    # --- lab values --------------------------------------------------------------------

    def _primary_unit(self, quantity: str, received: str | None) -> str:
        """The unit shown first: the locale's choice, else the unit the value came in."""
        first = (self.f.get("first_unit") or {}).get(quantity)
        q = self.k.units.quantities[quantity]
        if first and first != "received":
            return str(q.preferred.get(first, first))
        if received and received.strip() in q.preferred:
            return q.preferred[received.strip()]
        return q.canonical

    def _other_unit(self, quantity: str, primary: str) -> str | None:
        """The unit shown in brackets for reading (magnesium and creatinine only)."""
        pair = (self.f.get("reading_units") or {}).get(quantity) or []
        others = [u for u in pair if u != primary]
        return others[0] if others else None

    def converted(self, quantity: str, canonical: float, unit: str) -> str:
        """A canonical value converted to ``unit``, rounded for reading."""
        value = self.k.units[quantity].from_canonical(canonical, unit)
        places = (self.f.get("converted_places") or {}).get(f"{quantity} {unit}")
        if places is None:
            return trimmed(value, 2, 1)
        return fixed(value, int(places))

    def lab(self, v: m.LabResult | Any, *, both: bool = True) -> str:
        """A result: ``1.40 mg/dL (0.58 mmol/L)``; the unit received (or the locale's) first."""
        quantity = QUANTITY_OF_KIND.get(v.kind, "magnesium")
        comp = v.comparator or ""
        primary = self._primary_unit(quantity, v.original_unit)
        received = self.k.units[quantity].preferred.get((v.original_unit or "").strip())
        # a median or an albumin-corrected value was computed: no reported precision
        computed = getattr(v, "corrected_from", None) is not None or "median" in getattr(
            v, "flags", ()
        )
        if received == primary and not computed:
            first = f"{comp}{self.number(v.original_value)} {primary}"
        else:
            first = f"{comp}{self.converted(quantity, v.value, primary)} {primary}"
        other = self._other_unit(quantity, primary) if both else None
        if other is None:
            return first
        if other == received and not computed:
            second = f"{comp}{self.number(v.original_value)} {other}"
        else:
            second = f"{comp}{self.converted(quantity, v.value, other)} {other}"
        return self.after(first, second)

    def lab_range(self, v: m.LabResult | Any) -> str | None:
        """The laboratory's reference range of a result, with the result's unit when the range
        came without one (``1.7-2.5`` sent beside ``mg/dL`` reads ``1.7-2.5 mg/dL``)."""
        text = (getattr(v, "reference_range", None) or "").strip()
        if not text:
            return None
        unit = (v.original_unit or "").strip()
        if unit and _BARE_RANGE.fullmatch(text):
            quantity = QUANTITY_OF_KIND.get(v.kind, "magnesium")
            return f"{text} {self.k.units[quantity].preferred.get(unit, unit)}"
        return text

    def canonical_value(self, quantity: str, canonical: float, *, both: bool = True) -> str:
        """A computed value (a median, a corrected Mg) in the locale's units."""
        primary = self._primary_unit(quantity, None)
        first = f"{self.converted(quantity, canonical, primary)} {primary}"
        other = self._other_unit(quantity, primary) if both else None
        if other is None:
            return first
        return self.after(first, f"{self.converted(quantity, canonical, other)} {other}")

    # --- bounds and named quantities ----------------------------------------------------

    def _bound_value(self, quantity: str, x: float, unit: str, shown: str) -> str:
        if self.k.units[quantity].preferred.get(unit, unit) == shown:
            return self.number(x)
        canonical = self.k.units[quantity].to_canonical(x, unit)
        return self.converted(quantity, canonical, shown)

    def bounds(self, quantity: str, b: Bounds, shown_unit: str | None = None) -> str:
        """``< 1.5 mg/dL``; several bounds joined with the locale's "and"."""
        shown = self._primary_unit(quantity, None) if shown_unit is None else shown_unit
        shown = self.k.units[quantity].preferred.get(shown, shown)
        parts = []
        for op, sym in _SYMBOLS:
            val = getattr(b, op)
            if val is not None:
                parts.append(f"{sym} {self._bound_value(quantity, val, b.unit, shown)}")
        return f" {self.f['and']} ".join(parts) + f" {shown}"

    def bounds_any(self, b: Bounds, quantity: str | None = None) -> str:
        """Bounds of any quantity: magnesium and creatinine in the locale's first unit, others
        (eGFR, weight) in their own, age in years or months. ``quantity`` names the quantity
        when the unit alone does not (mg/dL is a unit of magnesium and of creatinine)."""
        quantities = self.k.units.quantities
        candidates = (
            [(quantity, quantities[quantity])] if quantity in quantities else quantities.items()
        )
        for name, q in candidates:
            if b.unit in q.preferred:
                shown = None if name in self.f.get("reading_units", {}) else q.preferred[b.unit]
                return self.bounds(name, b, shown)
        unit = (self.f.get("units") or {}).get(b.unit, b.unit)
        parts = [
            f"{sym} {self.number(getattr(b, op))}"
            for op, sym in _SYMBOLS
            if getattr(b, op) is not None
        ]
        return f" {self.f['and']} ".join(parts) + f" {unit}"

    def shown_unit(self, quantity: str, received: str | None) -> str:
        """The unit a value of this quantity is shown in first."""
        return self._primary_unit(quantity, received)

    def named(self, quantity: str | None, q: NamedQuantity, *, both: bool = True) -> str:
        """A named number of a rule file: ``about 12 mg/dL``, ``4.8-8.4 mg/dL``, ``48-72 h``."""
        unit = q.unit
        conv = quantity is not None and quantity in self.k.units.quantities
        shown = self._primary_unit(quantity, None) if conv and quantity else unit

        def one(x: float) -> str:
            if conv and quantity:
                return self._bound_value(quantity, x, unit, shown)
            return self.number(x)

        if q.value is not None:
            text = one(q.value)
        else:
            assert q.low is not None and q.high is not None
            text = f"{one(q.low)}{self.f['range']}{one(q.high)}"
        unit_text = shown if conv else self.f.get("units", {}).get(unit, unit)
        text = f"{text} {unit_text}"
        other = self._other_unit(quantity, shown) if conv and quantity and both else None
        if other is not None and quantity is not None:
            vals = [q.value] if q.value is not None else [q.low, q.high]
            second = self.f["range"].join(
                self._bound_value(quantity, x, unit, other) for x in vals if x is not None
            )
            text = self.after(text, f"{second} {other}")
        return f"{self.f['about']}{text}" if q.about else text
