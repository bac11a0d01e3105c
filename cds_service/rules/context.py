"""Per-evaluation context: the snapshot, ``now``, and lazily computed shared facts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.aki import AkiStatus, assess_aki
from cds_service.rules.model import Bounds, Knowledge

DAY = timedelta(days=1)
WEEK = timedelta(days=7)
MAGNESIUM_SETS = ("magnesium-sulfate", "oral-magnesium")
# Which unit quantity each lab series is measured in (mappings/units.yaml names).
SERIES_QUANTITY = {
    m.SERUM_MG: "magnesium",
    m.IONIZED_MG: "magnesium",
    m.CREATININE: "creatinine",
    m.ALBUMIN: "albumin",
    m.EGFR: "egfr",
    m.WEIGHT: "weight",
}


def usable_in_window(result: m.LabResult, start: datetime, end: datetime) -> bool:
    """Whether a result lies in the closed window (date-only results need >= 7 days)."""
    if result.date_only and end - start < WEEK:
        return False
    return start <= result.time <= end


# Relative tolerance of every threshold comparison. A value exactly at a boundary but
# sent in another unit (1.7 mg/dL = 1.7/2.4305 mmol/L) comes back from the unit
# conversion a few ulps off (1.6999999999999997); it must still count as "at" the
# boundary (evidence.md §1: "<" vs "≤" exact, no rounding beyond float noise).
REL_TOLERANCE = 1e-9


def _tol(bound: float) -> float:
    return REL_TOLERANCE * max(1.0, abs(bound))


def satisfies(comparator: str | None, bounds: Bounds, value_in_unit: float) -> bool:
    """Whether a (possibly censored) value decidedly meets every bound.

    ``value_in_unit`` is the value converted to ``bounds.unit``; a comparator
    result (``<1.0``) satisfies a bound only when the comparator decides it.
    Values within float noise of a bound (``REL_TOLERANCE``) count as equal to it.
    """
    v = value_in_unit
    upper_ok = comparator in (None, "<", "<=")
    lower_ok = comparator in (None, ">", ">=")
    if bounds.lt is not None:
        b, t = bounds.lt, _tol(bounds.lt)
        if not upper_ok:
            return False
        if not (v < b - t or (comparator == "<" and v <= b + t)):
            return False
    if bounds.le is not None and not (upper_ok and v <= bounds.le + _tol(bounds.le)):
        return False
    if bounds.gt is not None:
        b, t = bounds.gt, _tol(bounds.gt)
        if not lower_ok:
            return False
        if not (v > b + t or (comparator == ">" and v >= b - t)):
            return False
    return not (bounds.ge is not None and not (lower_ok and v >= bounds.ge - _tol(bounds.ge)))


@dataclass
class EvalContext:
    """Everything one evaluation shares: snapshot, now, knowledge, cached derivations."""

    snapshot: m.ClinicalSnapshot
    now: datetime
    knowledge: Knowledge
    _cache: dict[str, Any] = field(default_factory=dict)

    def convert(self, series: str, value: float, unit: str) -> float:
        """Convert a canonical value of a series into ``unit``."""
        return self.knowledge.units[SERIES_QUANTITY[series]].from_canonical(value, unit)

    def meets(self, result: m.LabResult, bounds: Bounds) -> bool:
        """Whether a lab result decidedly meets the bounds (in the bounds' unit)."""
        in_unit = self.convert(result.kind, result.value, bounds.unit)
        return satisfies(result.comparator, bounds, in_unit)

    def results(self, kind: str, start: datetime, end: datetime) -> list[m.LabResult]:
        """Usable results of a kind in [start, end], clipped at now, oldest first."""
        end = min(end, self.now)
        return [r for r in self.snapshot.series(kind) if usable_in_window(r, start, end)]

    def latest(self, kind: str, within: timedelta) -> m.LabResult | None:
        """The newest usable result of a kind in [now - within, now]."""
        found = self.results(kind, self.now - within, self.now)
        return found[-1] if found else None

    @cached_property
    def encounter(self) -> m.Encounter | None:
        """The current encounter."""
        return self.snapshot.current_encounter

    @cached_property
    def admission(self) -> datetime | None:
        """Admission time: start of the current inpatient or emergency encounter."""
        enc = self.encounter
        if enc is None or enc.klass not in ("inpatient", "emergency"):
            return None
        return enc.start

    @cached_property
    def latest_mg_start(self) -> datetime:
        """Start of the latest-serum-Mg window: encounter start or now - 7 d, the earlier."""
        start = self.now - WEEK
        enc = self.encounter
        if enc is not None and enc.start is not None and enc.start < start:
            start = enc.start
        return start

    @cached_property
    def conditions(self) -> tuple[m.Condition, ...]:
        """Conditions known at now (onset or record time not after now)."""
        out = []
        for cond in self.snapshot.conditions:
            when = cond.onset or cond.recorded
            if when is None or when <= self.now:
                out.append(cond)
        return tuple(out)

    def condition_matches(self, set_ids: Iterable[str]) -> list[m.Condition]:
        """Counting conditions in any of the value sets."""
        vs = self.knowledge.valuesets
        ids = tuple(set_ids)
        return [c for c in self.conditions if vs.concept_match(c.concept, ids)]

    @cached_property
    def active_medications(self) -> tuple[m.Medication, ...]:
        """Medications that count now: active orders/statements, draft orders, recent doses."""
        out = []
        for med in self.snapshot.medications:
            if med.draft:
                out.append(med)
            elif med.source == "MedicationAdministration":
                if med.time is not None and self.now - DAY <= med.time <= self.now:
                    out.append(med)
            elif med.status == "active" and (med.authored is None or med.authored <= self.now):
                out.append(med)
        return tuple(out)

    def medication_matches(self, set_ids: Iterable[str]) -> list[tuple[m.Medication, str]]:
        """Counting medications in any of the sets, with how they matched (code/text)."""
        vs = self.knowledge.valuesets
        ids = tuple(set_ids)
        out = []
        for med in self.active_medications:
            how = vs.concept_match(med.concept, ids)
            if how:
                out.append((med, how))
        return out

    @cached_property
    def aki(self) -> AkiStatus:
        """KDIGO/NHS AKI status at now."""
        coded = tuple(self.condition_matches(["aki"]))
        dialysis = [
            p.start or p.end
            for p in self.snapshot.procedures
            if not p.planned
            and (p.start or p.end) is not None
            and self.knowledge.valuesets.concept_match(p.concept, ["dialysis"])
        ]
        started = max((d for d in dialysis if d is not None and d <= self.now), default=None)
        return assess_aki(
            self.snapshot.creatinine,
            self.now,
            self.knowledge.aki,
            coded_aki=coded,
            dialysis_started=started,
            units=self.knowledge.units["creatinine"],
        )
