"""Magnesium sulfate orders from a rule's suggestion block (fixed or weight-based).

One ``Dose`` feeds both the card text and the FHIR MedicationRequest, so they state the
same dose, rate and duration. A weight-based bolus runs no faster than the rule's
``max_rate`` (minutes rounded up) and no shorter than ``min_bolus``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from cds_service.clinical import model as m
from cds_service.rules.context import EvalContext
from cds_service.rules.durations import parse_duration
from cds_service.rules.facts import parse_bounds
from cds_service.rules.model import Bounds, Dose

NO_WEIGHT = "no-weight"
WEIGHT_OUT_OF_RANGE = "weight-out-of-range"


@dataclass(frozen=True, slots=True)
class NoDose:
    """Why no dose could be computed: the reason code and what the text names."""

    reason: str
    window: timedelta | None = None
    weight: m.LabResult | None = None


def round_half_up(x: float, places: int) -> float:
    """``x`` rounded half up to ``places`` decimals (3.365 -> 3.37)."""
    step = Decimal(1).scaleb(-places)
    return float(Decimal(repr(x)).quantize(step, rounding=ROUND_HALF_UP))


def weight_bounds(s: dict[str, Any]) -> Bounds:
    """The weight range a weight-based suggestion accepts (e.g. 40-150 kg)."""
    return parse_bounds({k: v for k, v in s["weight"].items() if k != "within"}, "", None, None)


def compute_dose(s: dict[str, Any], ctx: EvalContext) -> Dose | NoDose:
    """The order a medication suggestion block prescribes for this patient, or why none."""
    diluent = s.get("diluent") or {}
    bounded = {"count": s.get("count"), "days": s.get("days")}
    common = {
        "route": s.get("route", "IV"),
        "volume_ml": diluent.get("volume_ml"),
        "fluid": diluent.get("fluid"),
        "per_day": s.get("per") == "day",
        **bounded,
    }
    if "dose" in s:
        over = parse_duration(s["rate"]["over"]) if "rate" in s else None
        return Dose(grams=s["dose"]["amount"], over=over, meq=s.get("dose_meq"), **common)
    wspec = s["weight"]
    within = parse_duration(wspec["within"])
    weight = ctx.latest(m.WEIGHT, within)
    if weight is None:
        return NoDose(NO_WEIGHT, window=within)
    if not ctx.meets(weight, weight_bounds(s)):
        return NoDose(WEIGHT_OUT_OF_RANGE, weight=weight)
    kg = ctx.convert(m.WEIGHT, weight.value, wspec["unit"])
    per_kg = float(s["dose_per_kg"]["amount"])
    grams = round_half_up(per_kg * kg / 1000, 2)
    max_rate = float(s["max_rate"]["amount"])
    min_minutes = parse_duration(s.get("min_bolus", "0m")).total_seconds() / 60
    minutes = math.ceil(max(min_minutes, grams * 1000 / max_rate) - 1e-9)
    infusion = s.get("infusion_per_kg")
    infusion_mg = float(infusion["amount"]) if infusion else None
    return Dose(
        grams=grams,
        over=timedelta(minutes=minutes),
        weight_kg=kg,
        mg_per_kg=per_kg,
        max_rate_mg_min=max_rate,
        infusion_mg_per_kg_h=infusion_mg,
        infusion_g_per_h=round_half_up(infusion_mg * kg / 1000, 2) if infusion_mg else None,
        **common,
    )
