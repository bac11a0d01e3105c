"""Suspect results (delta checks, evidence.md §1): which serum Mg and creatinine to trust.

``review_results(snapshot, now, params, valuesets)`` reads the results known at ``now``
(oldest first; later ones are not known yet) and marks each result of the reviewed tests:

- suspect by *dilution*: a result of every ``dilution_tests`` test collected within
  ``same_draw`` of each other, each at least ``fall_pct`` % lower than the previous result
  of its test, that previous result lying within ``fall_within`` before it;
- suspect by *jump*: a ``jump_test`` result at least ``rise`` above the previous one, lying
  within ``jump_within`` before it, with no magnesium given in between (a
  MedicationAdministration then, or an active MedicationRequest);
- spurious (refuted): the next result of the same test, within ``resolve_within`` after the
  suspect one, is within ``refute_pct`` % of the value before the suspect one;
- confirmed: that next result is not within it (the suspect result is ordinary again);
- ordinary otherwise. A suspect result with no next result within ``resolve_within`` stays
  suspect.

"Previous" is the newest earlier *ordinary* result of the test: suspect and spurious results
are skipped, spurious ones as if never sent. Censored (comparator) and date-only results are
ordinary but take no part: never compared, never compared with, and they resolve nothing.
Every number comes from ``mappings/delta-checks.yaml``. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from cds_service.clinical import model as m
from cds_service.clinical.terminology import ValueSets

DILUTION = "dilution"
JUMP = "jump"
_REL_TOLERANCE = 1e-9  # float noise of unit conversion: a value at a limit counts as at it


@dataclass(frozen=True, slots=True)
class DeltaParams:
    """``mappings/delta-checks.yaml``, validated; ``rise`` in the canonical unit of its test."""

    dilution_tests: tuple[str, ...]
    same_draw: timedelta
    fall_pct: float
    fall_within: timedelta
    jump_test: str
    rise: float
    jump_within: timedelta
    magnesium_sets: tuple[str, ...]
    resolve_within: timedelta
    refute_pct: float
    still_used_by: frozenset[str]
    repeat_order: Mapping[str, Mapping[str, str]]

    @property
    def tests(self) -> tuple[str, ...]:
        """Every reviewed test (series kind), dilution tests first."""
        return tuple(dict.fromkeys((*self.dilution_tests, self.jump_test)))


@dataclass(frozen=True, slots=True)
class Suspect:
    """A suspect result, why, the previous result it was compared with, and its draw."""

    result: m.LabResult
    reason: str
    previous: m.LabResult
    # dilution: the other results of the draw that fell, each with the result before it
    draw: tuple[tuple[m.LabResult, m.LabResult], ...] = ()


@dataclass(frozen=True, slots=True)
class Resolution:
    """A suspect result decided by the next result of its test: refuted, else confirmed."""

    suspect: Suspect
    by: m.LabResult
    refuted: bool


@dataclass(frozen=True)
class Review:
    """The delta checks at one time: unresolved suspects, resolutions, newest result per test."""

    suspect: tuple[Suspect, ...] = ()
    resolved: tuple[Resolution, ...] = ()
    latest: Mapping[str, m.LabResult] = field(default_factory=dict)

    @property
    def spurious(self) -> tuple[Resolution, ...]:
        """The refuted suspects, oldest first."""
        return tuple(r for r in self.resolved if r.refuted)

    @property
    def hidden(self) -> frozenset[m.LabResult]:
        """Results no rule may use: unresolved suspects and spurious results."""
        return frozenset(
            [s.result for s in self.suspect] + [r.suspect.result for r in self.spurious]
        )

    def latest_suspect(self, kind: str) -> Suspect | None:
        """The suspect result that is the newest result of its test, if any."""
        newest = self.latest.get(kind)
        return next((s for s in self.suspect if s.result is newest), None)

    def clean(self, snapshot: m.ClinicalSnapshot) -> m.ClinicalSnapshot:
        """The snapshot without suspect and spurious results (what the rules may use)."""
        hidden = self.hidden
        if not hidden:
            return snapshot

        def keep(series: tuple[m.LabResult, ...]) -> tuple[m.LabResult, ...]:
            return tuple(r for r in series if r not in hidden)

        return replace(
            snapshot,
            serum_mg=keep(snapshot.serum_mg),
            ionized_mg=keep(snapshot.ionized_mg),
            creatinine=keep(snapshot.creatinine),
            albumin=keep(snapshot.albumin),
            egfr=keep(snapshot.egfr),
            weight=keep(snapshot.weight),
        )


def _less_noise(limit: float) -> float:
    """A lower limit less float noise: a value at the limit, after conversion, counts as at it."""
    return limit - _REL_TOLERANCE * max(1.0, abs(limit))


def _at_most(value: float, limit: float) -> bool:
    return value <= limit + _REL_TOLERANCE * max(1.0, abs(limit))


def fall_pct(result: m.LabResult, previous: m.LabResult) -> float:
    """How much lower a result is than the previous one, in % of the previous."""
    return (previous.value - result.value) / previous.value * 100 if previous.value else 0.0


def diff_pct(result: m.LabResult, base: m.LabResult) -> float:
    """How far a result lies from a base value, in % of the base."""
    return abs(result.value - base.value) / base.value * 100 if base.value else float("inf")


@dataclass
class _Track:
    """One test's state while the timeline is read."""

    ordinary: m.LabResult | None = None  # the newest comparable ordinary result
    pending: Suspect | None = None  # the newest result, when it is an unresolved suspect
    fell: tuple[m.LabResult, m.LabResult] | None = None  # newest result fell (with previous)
    last: m.LabResult | None = None  # the newest result of any sort


class _Reader:
    """Reads the timeline of the reviewed tests once, oldest first."""

    def __init__(
        self, snapshot: m.ClinicalSnapshot, params: DeltaParams, valuesets: ValueSets
    ) -> None:
        self.snapshot, self.p, self.valuesets = snapshot, params, valuesets
        self.tracks = {k: _Track() for k in params.tests}
        self.unresolved: list[Suspect] = []
        self.resolved: list[Resolution] = []
        self._magnesium: list[m.Medication] | None = None
        # the limits less float noise, so that a value at a limit counts as at it
        self.rise_min = _less_noise(params.rise)
        self.fall_min = _less_noise(params.fall_pct)

    def read(self, result: m.LabResult) -> None:
        track = self.tracks[result.kind]
        track.last, track.fell = result, None
        if result.comparator is not None or result.date_only:
            return
        self._resolve(track, result)
        suspect = self._check(track, result)
        if suspect is None:
            track.ordinary = result
        else:
            track.pending = suspect

    def _resolve(self, track: _Track, result: m.LabResult) -> None:
        pending, track.pending = track.pending, None
        if pending is None:
            return
        if result.time - pending.result.time > self.p.resolve_within:
            self.unresolved.append(pending)  # never repeated in time: stays suspect
            return
        refuted = _at_most(diff_pct(result, pending.previous), self.p.refute_pct)
        self.resolved.append(Resolution(pending, result, refuted))
        if not refuted:
            track.ordinary = pending.result  # confirmed: an ordinary result again

    def _check(self, track: _Track, result: m.LabResult) -> Suspect | None:
        prev, p = track.ordinary, self.p
        if prev is None or prev.time >= result.time:
            return None
        gap = result.time - prev.time
        if (
            result.kind == p.jump_test
            and gap <= p.jump_within
            and result.value - prev.value >= self.rise_min
            and not self._given(prev.time, result.time)
        ):
            return Suspect(result, JUMP, prev)
        if (
            gap > p.fall_within
            or result.kind not in p.dilution_tests
            or fall_pct(result, prev) < self.fall_min
        ):
            return None
        partners = [self.tracks[k].fell for k in p.dilution_tests if k != result.kind]
        if any(x is None or abs(x[0].time - result.time) > p.same_draw for x in partners):
            track.fell = (result, prev)  # a later result of the draw may complete it
            return None
        draw = tuple(x for x in partners if x is not None)
        for other, other_prev in draw:
            other_track = self.tracks[other.kind]
            # it was read as ordinary; the rest of its draw makes it suspect
            other_track.ordinary, other_track.fell = other_prev, None
            rest = tuple(x for x in ((result, prev), *draw) if x[0] is not other)
            other_track.pending = Suspect(other, DILUTION, other_prev, rest)
        return Suspect(result, DILUTION, prev, draw)

    def _given(self, start: datetime, end: datetime) -> bool:
        """Magnesium given in [start, end]: an administration then, or an active order."""
        if self._magnesium is None:
            sets = self.p.magnesium_sets
            self._magnesium = [
                x
                for x in self.snapshot.medications
                if not x.draft and self.valuesets.concept_match(x.concept, sets) is not None
            ]
        for med in self._magnesium:
            if med.source == "MedicationAdministration":
                if med.time is not None and start <= med.time <= end:
                    return True
            elif med.source == "MedicationRequest" and med.status == "active":
                if med.authored is None or med.authored <= end:
                    return True
        return False


def review_results(
    snapshot: m.ClinicalSnapshot, now: datetime, params: DeltaParams, valuesets: ValueSets
) -> Review:
    """The delta checks over the results of the reviewed tests known at ``now``."""
    order = {k: i for i, k in enumerate(params.tests)}
    timeline = sorted(
        (r for k in params.tests for r in snapshot.series(k) if r.time <= now),
        key=lambda r: (r.time, order[r.kind], r.id),
    )
    reader = _Reader(snapshot, params, valuesets)
    for result in timeline:
        reader.read(result)
    pending = [t.pending for t in reader.tracks.values() if t.pending is not None]
    latest = {k: t.last for k, t in reader.tracks.items() if t.last is not None}
    suspects = sorted([*reader.unresolved, *pending], key=lambda s: (s.result.time, s.result.id))
    return Review(tuple(suspects), tuple(reader.resolved), latest)
