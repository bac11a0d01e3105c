"""Magnesium sulfate doses from a rule's suggestion block (fixed or weight-based)."""

from __future__ import annotations

from typing import Any

from cds_service.clinical import model as m
from cds_service.rules.context import EvalContext
from cds_service.rules.durations import parse_duration
from cds_service.rules.facts import parse_bounds
from cds_service.rules.model import Dose


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def compute_dose(
    s: dict[str, Any], ctx: EvalContext
) -> tuple[Dose | None, str | None, dict[str, Any]]:
    """The dose a suggestion block prescribes: (dose, reason when none, weight info)."""
    diluent = s.get("diluent") or {}
    volume, fluid = diluent.get("volume_ml"), diluent.get("fluid")
    if "dose" in s:
        grams = float(s["dose"]["amount"])
        over = parse_duration(s["rate"]["over"]).total_seconds() / 60 if "rate" in s else None
        return (
            Dose(
                grams=grams,
                route=s.get("route", "IV"),
                text=f"{_fmt(grams)} g",
                meq=s.get("dose_meq"),
                volume_ml=volume,
                fluid=fluid,
                over_minutes=over,
                per_day=s.get("per") == "day",
                days=s.get("days"),
            ),
            None,
            {},
        )
    wspec = s["weight"]
    within = parse_duration(wspec["within"])
    weight = ctx.latest(m.WEIGHT, within)
    if weight is None:
        return None, "no-weight", {"window": within}
    kg = ctx.convert(m.WEIGHT, weight.value, wspec["unit"])
    bounds = parse_bounds({k: v for k, v in wspec.items() if k != "within"}, "weight", None, None)
    if not ctx.meets(weight, bounds):
        return None, "weight-out-of-range", {"weight": kg, "bounds": bounds}
    mg_total = float(s["dose_per_kg"]["amount"]) * kg
    max_rate = float(s["max_rate"]["amount"])
    min_minutes = parse_duration(s.get("min_bolus", "0m")).total_seconds() / 60
    bolus_minutes = max(min_minutes, mg_total / max_rate)
    infusion = s.get("infusion_per_kg")
    infusion_g_h = float(infusion["amount"]) * kg / 1000 if infusion else None
    return (
        Dose(
            grams=mg_total / 1000,
            route=s.get("route", "IV"),
            text=f"{_fmt(mg_total / 1000)} g",
            weight_kg=kg,
            bolus_minutes=bolus_minutes,
            infusion_g_per_h=infusion_g_h,
            volume_ml=volume,
            fluid=fluid,
            over_minutes=bolus_minutes,
        ),
        None,
        {"weight": kg},
    )
