"""Assemble one patient's ``ClinicalSnapshot`` from readable FHIR resources.

The current encounter is ``encounterId`` when given, else an in-progress
inpatient/emergency encounter, else any in-progress encounter, else the
inpatient/emergency encounter whose period contains ``now``, else the
latest-starting inpatient/emergency encounter that started by ``now`` and had
not ended before the newest serum magnesium result. Encounters that are
``partOf`` another inpatient/emergency encounter (ICU sub-encounters) are never
current. Of two eGFR results at one time (a race-based pair) the lower is kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from operator import attrgetter
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.fhir_common import (
    BadResource,
    JsonDict,
    ResourceIndex,
    get_str,
    name_of,
    parse_date,
)
from cds_service.clinical.fhir_context import (
    icu_stays,
    read_condition,
    read_encounter,
    read_medication,
    read_procedure,
    read_service_request,
)
from cds_service.clinical.fhir_labs import LabTable, bad_resource, lab_table, read_observation
from cds_service.rules.model import Knowledge

CLINICAL_TYPES = frozenset({
    "Observation", "Encounter", "Condition", "Procedure", "ServiceRequest",
    "MedicationRequest", "MedicationStatement", "MedicationAdministration",
})  # fmt: skip
ACUTE = frozenset({"inpatient", "emergency"})
_READ_ERRORS = (BadResource, TypeError, ValueError, AttributeError, KeyError)


def patient_of(res: JsonDict, index: ResourceIndex) -> str | None:
    """The patient id a resource's subject/patient reference points at."""
    for key in ("subject", "patient"):
        ref = res.get(key)
        reference = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(reference, str):
            target = index.key(reference)
            return target[len("Patient/") :] if target.startswith("Patient/") else target
    return None


@dataclass
class Parts:
    """What one patient's resources yielded, before freezing into a snapshot."""

    labs: list[m.LabResult] = field(default_factory=list)
    excluded: list[m.Excluded] = field(default_factory=list)
    encounters: list[tuple[m.Encounter, str | None]] = field(default_factory=list)
    conditions: list[m.Condition] = field(default_factory=list)
    procedures: list[m.Procedure] = field(default_factory=list)
    medications: list[m.Medication] = field(default_factory=list)
    birth: Any = None
    sex: str | None = None


def _read_one(
    res: JsonDict,
    parts: Parts,
    knowledge: Knowledge,
    table: LabTable,
    index: ResourceIndex,
    tz: tzinfo,
) -> None:
    """Dispatch one resource to its reader and collect the result."""
    rtype = res["resourceType"]
    if rtype == "Observation":
        got = read_observation(res, table, index, tz)
        if isinstance(got, m.LabResult):
            parts.labs.append(got)
        elif got is not None:
            parts.excluded.append(got)
    elif rtype == "Encounter":
        enc = read_encounter(res, knowledge, index, tz)
        if enc is not None:
            parts.encounters.append(enc)
    elif rtype == "Condition":
        cond = read_condition(res, tz)
        if cond is not None:
            parts.conditions.append(cond)
    elif rtype == "Procedure":
        proc = read_procedure(res, tz)
        if proc is not None:
            parts.procedures.append(proc)
    elif rtype == "ServiceRequest":
        req = read_service_request(res, tz, draft=False)
        if req is not None:
            parts.procedures.append(req)
    else:
        med = read_medication(res, index, tz)
        if med is not None:
            parts.medications.append(med)


def _read_draft(res: JsonDict, parts: Parts, index: ResourceIndex, tz: tzinfo) -> None:
    """A draft order of the hook: a planned procedure or a draft medication."""
    rtype = res["resourceType"]
    if rtype == "ServiceRequest":
        req = read_service_request(res, tz, draft=True)
        if req is not None:
            parts.procedures.append(req)
    elif rtype == "MedicationRequest":
        med = read_medication(res, index, tz, draft=True)
        if med is not None:
            parts.medications.append(med)


def _current(
    parts: Parts, encounter_id: str | None, now: datetime | None, newest_mg: datetime | None
) -> str | None:
    """The current encounter id (rules in the module docstring)."""
    if encounter_id:
        return encounter_id
    encs = [e for e, _ in parts.encounters]
    acute_ids = {e.id for e in encs if e.klass in ACUTE}
    top = [e for e, parent in parts.encounters if e.klass in ACUTE and parent not in acute_ids]

    def latest(cands: list[m.Encounter]) -> str | None:
        dated = [e for e in cands if e.start is not None]
        pool = dated or cands
        return (
            max(pool, key=lambda e: e.start or datetime.min.replace(tzinfo=UTC)).id
            if pool
            else None
        )

    for cands in (
        [e for e in top if e.status == "in-progress"],
        [e for e in encs if e.status == "in-progress"],
    ):
        if cands:
            return latest(cands)
    if now is not None:
        found = latest(
            [e for e in top if e.start and e.start <= now and (e.end is None or e.end >= now)]
        )
        if found:
            return found
    return latest([
        e for e in top
        if e.start and (now is None or e.start <= now)
        and (newest_mg is None or e.end is None or e.end >= newest_mg)
    ])  # fmt: skip


def _series(labs: list[m.LabResult]) -> dict[str, tuple[m.LabResult, ...]]:
    """Results by kind, oldest first; of two eGFR at one time (race-based pair) the lower."""
    by_kind: dict[str, list[m.LabResult]] = {}
    for r in labs:
        by_kind.setdefault(r.kind, []).append(r)
    egfr: dict[datetime, m.LabResult] = {}
    for r in by_kind.get(m.EGFR, []):
        if r.time not in egfr or r.value < egfr[r.time].value:
            egfr[r.time] = r
    if m.EGFR in by_kind:
        by_kind[m.EGFR] = list(egfr.values())
    return {k: tuple(sorted(v, key=attrgetter("time", "id"))) for k, v in by_kind.items()}


def _newest(parts: Parts) -> datetime | None:
    """The newest clinical time seen (results, encounter starts, procedures, conditions, meds)."""
    times: list[datetime | None] = [r.time for r in parts.labs]
    times += [x.time for x in parts.excluded]
    times += [e.start for e, _ in parts.encounters]
    times += [t for p in parts.procedures if not p.planned for t in (p.start, p.end)]
    times += [t for c in parts.conditions for t in (c.onset, c.recorded)]
    times += [t for md in parts.medications if not md.draft for t in (md.time, md.authored)]
    real = [t for t in times if t is not None]
    return max(real) if real else None


def freeze(
    parts: Parts,
    patient_id: str,
    encounter_id: str | None,
    now: datetime | None,
    missing: Iterable[str],
) -> m.ClinicalSnapshot:
    """Sort, derive ICU stays and the current encounter, and build the snapshot."""
    series = _series(parts.labs)
    serum = series.get(m.SERUM_MG, ())
    stays: dict[tuple[datetime, datetime | None], m.IcuStay] = {}
    for enc, parent in parts.encounters:
        for stay in icu_stays(enc, parent):
            stays.setdefault((stay.start, stay.end), stay)
    never = datetime.min.replace(tzinfo=UTC)
    return m.ClinicalSnapshot(
        patient_id=patient_id,
        birth_date=parse_date(parts.birth),
        sex=parts.sex,
        encounters=tuple(sorted((e for e, _ in parts.encounters), key=lambda e: e.start or never)),
        current_encounter_id=_current(parts, encounter_id, now, serum[-1].time if serum else None),
        icu_stays=tuple(sorted(stays.values(), key=lambda s: s.start)),
        serum_mg=serum,
        ionized_mg=series.get(m.IONIZED_MG, ()),
        creatinine=series.get(m.CREATININE, ()),
        albumin=series.get(m.ALBUMIN, ()),
        egfr=series.get(m.EGFR, ()),
        weight=series.get(m.WEIGHT, ()),
        conditions=tuple(parts.conditions),
        procedures=tuple(parts.procedures),
        medications=tuple(parts.medications),
        excluded=tuple(parts.excluded),
        missing=frozenset(missing),
        newest_time=_newest(parts),
    )


def build_parts(
    resources: Iterable[JsonDict],
    drafts: Iterable[JsonDict],
    knowledge: Knowledge,
    *,
    index: ResourceIndex,
    patient_id: str | None,
    tz: tzinfo,
    bad: list[m.Excluded],
) -> Parts:
    """Read one patient's resources (others' are excluded when patient_id is set)."""
    parts = Parts(excluded=list(bad))
    table = lab_table(knowledge)
    for res in resources:
        rtype = res["resourceType"]
        try:
            if rtype == "Patient":
                if patient_id is None or res.get("id") == patient_id:
                    parts.birth, parts.sex = res.get("birthDate"), get_str(res, "gender")
            elif rtype in CLINICAL_TYPES:
                owner = patient_of(res, index)
                if patient_id is not None and owner is not None and owner != patient_id:
                    parts.excluded.append(
                        m.Excluded(name_of(res), m.OTHER_PATIENT, "belongs to another patient")
                    )
                else:
                    _read_one(res, parts, knowledge, table, index, tz)
        except _READ_ERRORS as exc:
            parts.excluded.append(bad_resource(res, str(exc)))
    for res in drafts:
        try:
            _read_draft(res, parts, index, tz)
        except _READ_ERRORS as exc:
            parts.excluded.append(bad_resource(res, str(exc)))
    return parts
