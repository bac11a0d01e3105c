"""Per-evaluation context: the snapshot, ``now``, and lazily computed shared facts."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING

from cds_service.clinical import model as m
from cds_service.clinical.aki import AkiStatus, assess_aki
from cds_service.clinical.egfr import computed_egfr
from cds_service.clinical.terminology import ItemsBySet
from cds_service.rules.model import Bounds, EgfrValue, GateHit, Knowledge

AKI_SET = "aki"  # coded AKI diagnoses (value set ids the loader requires)
DIALYSIS_SET = "dialysis"  # dialysis procedures: the AKI assessment's dialysis criterion

if TYPE_CHECKING:
    from cds_service.rules.measures import MeasureResult

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
    # Work done at most once per evaluation: the usable results per window and the times of
    # each series (``results``), the value of each measure per anchor (rules/measures.py),
    # and the exact age in months per time (the ``age`` fact).
    _results: dict[tuple[str, datetime, datetime], tuple[m.LabResult, ...]] = field(
        default_factory=dict
    )
    _times: dict[str, list[datetime] | None] = field(default_factory=dict)
    measured: dict[tuple[str, datetime], MeasureResult | None] = field(default_factory=dict)
    ages: dict[datetime, float] = field(default_factory=dict)
    # The safety-gate conditions that hold (gate.yaml order), set once by the engine.
    gate: tuple[GateHit, ...] = ()

    def convert(self, series: str, value: float, unit: str) -> float:
        """Convert a canonical value of a series into ``unit``."""
        return self.knowledge.units[SERIES_QUANTITY[series]].from_canonical(value, unit)

    def meets(self, result: m.LabResult, bounds: Bounds) -> bool:
        """Whether a lab result decidedly meets the bounds (in the bounds' unit)."""
        in_unit = self.convert(result.kind, result.value, bounds.unit)
        return satisfies(result.comparator, bounds, in_unit)

    def results(self, kind: str, start: datetime, end: datetime) -> tuple[m.LabResult, ...]:
        """Usable results of a kind in [start, end], clipped at now, oldest first.

        Date-only results count only in windows of 7 days or longer.
        """
        end = min(end, self.now)
        key = (kind, start, end)
        if key not in self._results:
            series = self.snapshot.series(kind)
            times = self._sorted_times(kind)
            if times is not None:  # only the results timed in [start, end] can be usable
                series = series[bisect_left(times, start) : bisect_right(times, end)]
            dates = end - start >= WEEK
            self._results[key] = tuple(
                [r for r in series if start <= r.time <= end and (dates or not r.date_only)]
            )
        return self._results[key]

    def _sorted_times(self, kind: str) -> list[datetime] | None:
        """The result times of a series in time order (as extraction builds it), else None."""
        if kind not in self._times:
            times = [r.time for r in self.snapshot.series(kind)]
            self._times[kind] = times if times == sorted(times) else None
        return self._times[kind]

    def latest(self, kind: str, within: timedelta) -> m.LabResult | None:
        """The newest usable result of a kind in [now - within, now]."""
        found = self.results(kind, self.now - within, self.now)
        return found[-1] if found else None

    @cached_property
    def encounter(self) -> m.Encounter | None:
        """The current encounter."""
        return self.snapshot.current_encounter

    @cached_property
    def icu_stay(self) -> m.IcuStay | None:
        """The latest ICU stay started by now that is ongoing or in the current encounter."""
        enc = self.encounter
        best: m.IcuStay | None = None
        for stay in self.snapshot.icu_stays:
            if stay.start > self.now:
                continue
            ongoing = stay.end is None or stay.end >= self.now
            in_encounter = enc is not None and (
                stay.encounter_id == enc.id
                or (
                    enc.start is not None
                    and enc.start <= stay.start
                    and (enc.end is None or stay.start <= enc.end)
                )
            )
            if (ongoing or in_encounter) and (best is None or stay.start > best.start):
                best = stay
        return best

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

    @cached_property
    def _conditions_by_set(self) -> ItemsBySet[m.Condition]:
        return ItemsBySet(self.knowledge.valuesets, ((c, c.concept) for c in self.conditions))

    def condition_matches(self, set_ids: Iterable[str]) -> list[m.Condition]:
        """Counting conditions in any of the value sets."""
        return self._conditions_by_set.items_in(set_ids)

    @cached_property
    def procedures_by_set(self) -> ItemsBySet[m.Procedure]:
        """Every procedure of the snapshot, by the value sets it is in."""
        procedures = self.snapshot.procedures
        return ItemsBySet(self.knowledge.valuesets, ((p, p.concept) for p in procedures))

    @cached_property
    def medications_by_set(self) -> ItemsBySet[m.Medication]:
        """Every medication of the snapshot, by the value sets it is in."""
        medications = self.snapshot.medications
        return ItemsBySet(self.knowledge.valuesets, ((x, x.concept) for x in medications))

    def _counts_now(self, med: m.Medication) -> bool:
        """Whether a medication counts now: active order/statement, draft order, recent dose."""
        if med.draft:
            return True
        if med.source == "MedicationAdministration":
            window = self.knowledge.administration_counts_for
            return med.time is not None and self.now - window <= med.time <= self.now
        return med.status == "active" and (med.authored is None or med.authored <= self.now)

    def medication_matches(self, set_ids: Collection[str]) -> list[tuple[m.Medication, str]]:
        """Counting medications in any of the sets, with how they matched (code/text)."""
        found = self.medications_by_set.matches(set_ids)
        return [(med, how) for med, how in found if self._counts_now(med)]

    @cached_property
    def aki(self) -> AkiStatus:
        """KDIGO/NHS AKI status at now."""
        coded = tuple(self.condition_matches((AKI_SET,)))
        dialysis = [
            (when, p)
            for p in self.procedures_by_set.items_in((DIALYSIS_SET,))
            if not p.planned and (when := p.start or p.end) is not None and when <= self.now
        ]
        started = max(dialysis, key=lambda d: d[0], default=None)
        return assess_aki(
            self.snapshot.creatinine,
            self.now,
            self.knowledge.aki_criteria,
            coded_aki=coded,
            dialysis_started=started[0] if started else None,
            dialysis_procedure=started[1] if started else None,
        )

    def egfr(self, within: timedelta) -> EgfrValue | None:
        """The lower of the latest reported eGFR and the eGFR computed from the latest creatinine.

        Both within [now - within, now]; computed with CKD-EPI 2021 (egfr.yaml) for adults
        at the creatinine's sample time when the birth date is known (sex unknown: the
        lower of both sexes).
        """
        found: list[EgfrValue] = []
        reported = self.latest(m.EGFR, within)
        if reported is not None:
            found.append(EgfrValue(reported.value, reported.time, computed=False))
        scr = self.latest(m.CREATININE, within)
        birth = self.snapshot.birth_date
        params = self.knowledge.egfr
        if scr is not None and birth is not None and params and scr.comparator is None:
            from cds_service.rules.facts import age_in

            years = age_in("a", birth, scr.time)
            if years >= float(params["min_age"]["value"]):
                value = computed_egfr(scr.value, years, self.snapshot.sex, params)
                found.append(EgfrValue(value, scr.time, True, scr, int(years), self.snapshot.sex))
        return min(found, key=lambda e: e.value) if found else None
