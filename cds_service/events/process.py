"""Apply one ORU^R01, RAS^O17 or ADT message of interest to the store, then evaluate (one
transaction)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.clinical.fhir_labs import LabTable
from cds_service.events.administrations import store_administration
from cds_service.events.advise import Evaluation, Policy, Trigger, advise
from cds_service.events.encounters import add_diagnosis, add_procedure, apply_visit
from cds_service.events.hl7_config import Hl7Maps
from cds_service.events.hl7_context import (
    Demographics,
    coded,
    demographics,
    event_time,
    pick_identifier,
    visit,
)
from cds_service.events.hl7_er7 import Msh
from cds_service.events.hl7_obx import Issue, read_obx, specimen_of
from cds_service.events.hl7_parse import Seg, parse_segments
from cds_service.events.hl7_rxa import read_rxa
from cds_service.events.outbound_queue import withdraw
from cds_service.events.patients import (
    Hasher,
    StoredResults,
    find_patient,
    merge_patients,
    resolve_patient,
    store_result,
)
from cds_service.rules.model import Knowledge
from cds_service.store.events_models import Hl7Message, Patient

TRIGGER_KINDS = frozenset({m.SERUM_MG, m.IONIZED_MG, m.CREATININE, m.ALBUMIN})


class Reject(Exception):
    """The message cannot be applied at all (AE; nothing of it is stored but its raw text)."""

    def __init__(self, issue: Issue) -> None:
        """Carry the issue for the ERR segment."""
        super().__init__(issue.text)
        self.issue = issue


@dataclass(frozen=True)
class Deps:
    """What processing needs besides the session: knowledge, maps, clock zone, hashing, policy."""

    knowledge: Knowledge
    maps: Hl7Maps
    table: LabTable
    tz: tzinfo
    hasher: Hasher
    policy: Policy


@dataclass
class Applied:
    """The result of applying one message."""

    issues: list[Issue] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    patient_id: int | None = None

    @property
    def advice(self) -> list[int]:
        """Ids of the advice rows issued."""
        return [row.id for ev in self.evaluations for row in ev.rows]


def _patient(session: Session, pid: Seg, deps: Deps, now: datetime) -> Patient:
    demo = demographics(pid, deps.maps)
    if demo is None:
        raise Reject(
            Issue("required_field", f"PID^{pid.index + 1}^3", "PID-3 patient identifier missing")
        )
    return resolve_patient(session, demo, deps.hasher, now)


def _evaluate(
    session: Session,
    patient: Patient,
    key: str,
    times: list[datetime],
    row: Hl7Message,
    arrival: datetime,
    deps: Deps,
    out: Applied,
) -> None:
    trigger = Trigger(key, max(times) if times else arrival, row.id)
    out.evaluations.append(advise(session, deps.knowledge, patient, trigger, arrival, deps.policy))


def _specimens(segs: list[Seg]) -> dict[int, Seg]:
    """The SPM of each order (OBR position -> SPM): it follows the order's OBX segments."""
    found: dict[int, Seg] = {}
    obr: Seg | None = None
    for seg in segs:
        if seg.name in ("PID", "OBR"):
            obr = seg if seg.name == "OBR" else None
        elif seg.name == "SPM" and obr is not None and obr.index not in found:
            found[obr.index] = seg
    return found


def apply_oru(
    session: Session,
    segments: list[str],
    msh: Msh,
    wanted: tuple[int, ...],
    row: Hl7Message,
    arrival: datetime,
    deps: Deps,
) -> Applied:
    """Store the results and medications given of interest, the PV1 context, then evaluate.

    ORU^R01 (results, with corrections; an RXA in it too) and RAS^O17 (RXA only): a result
    triggers an evaluation, a dose given does not (it only changes later evaluations).
    """
    out = Applied()
    groups: dict[int, tuple[Patient, StoredResults, list[Seg]]] = {}
    patient: Patient | None = None
    obr = orc = None
    segs = parse_segments(segments, msh, set(wanted))
    spm = _specimens(segs)
    for seg in segs:
        if seg.name == "PID":
            patient, obr, orc = _patient(session, seg, deps, arrival), None, None
            groups.setdefault(patient.id, (patient, StoredResults(), []))
        elif seg.name == "PV1" and patient is not None:
            groups[patient.id][2].append(seg)
        elif seg.name == "ORC":
            orc = seg
        elif seg.name == "OBR":
            obr = seg
        elif seg.name in ("OBX", "RXA"):
            if patient is None:
                raise Reject(
                    Issue(
                        "segment_sequence",
                        f"{seg.name}^{seg.index + 1}",
                        f"{seg.name} before any PID",
                    )
                )
            if seg.name == "RXA":
                given = read_rxa(seg, deps.maps, deps.tz)
                if given is not None:
                    store_administration(session, given, patient.id, row.id, arrival)
                continue
            specimen = specimen_of(spm.get(obr.index) if obr else None, obr, deps.maps)
            rec = read_obx(seg, obr, orc, deps.maps, deps.table, deps.tz, specimen)
            if rec is not None:
                if rec.issue is not None:
                    out.issues.append(rec.issue)
                store_result(session, rec, patient.id, row.id, arrival, groups[patient.id][1])
    for patient, stored, pv1s in groups.values():
        out.patient_id = patient.id
        times = [r.time for r in stored.new if r.time is not None and r.kind in TRIGGER_KINDS]
        new_stay = None
        for pv1 in pv1s:
            at = min(times) if times else None
            _, new_stay = apply_visit(
                session,
                patient.id,
                visit(pv1, deps.maps, deps.knowledge, deps.tz),
                "result",
                at,
                deps.hasher,
                arrival,
            )
        withdraw(session, stored.withdrawn, arrival)
        if times or new_stay is not None:
            _evaluate(session, patient, f"msg:{row.id}", times, row, arrival, deps, out)
    return out


def apply_adt(
    session: Session,
    segments: list[str],
    msh: Msh,
    action: str,
    row: Hl7Message,
    arrival: datetime,
    deps: Deps,
) -> Applied:
    """Apply an ADT event: encounter, ICU stay, diagnoses, procedures, merge; then evaluate."""
    out = Applied()
    segs = parse_segments(segments, msh, set())
    first = {s.name: s for s in reversed(segs)}
    if "PID" not in first:
        raise Reject(Issue("required_field", "PID", "PID segment missing"))
    patient = _patient(session, first["PID"], deps, arrival)
    out.patient_id = patient.id
    at = event_time(first.get("EVN"), msh.get(7), deps.tz)
    if action == "merge":
        mrg = first.get("MRG")
        prior_id = pick_identifier(mrg, 1, deps.maps) if mrg is not None else None
        if prior_id is None:
            raise Reject(
                Issue("required_field", "MRG^1^1", "MRG-1 prior patient identifier missing")
            )
        prior = find_patient(session, prior_id, deps.hasher)
        if prior is None:  # later messages under the old identifier reach the survivor
            prior = resolve_patient(session, Demographics(prior_id), deps.hasher, arrival)
        merge_patients(session, patient, prior, arrival)
        return out
    enc_id, triggers, times = None, [], []
    if "PV1" in first:
        pv1 = visit(first["PV1"], deps.maps, deps.knowledge, deps.tz)
        enc, stay = apply_visit(session, patient.id, pv1, action, at, deps.hasher, arrival)
        enc_id = enc.id if enc is not None else None
        if stay is not None:
            triggers.append(f"icu:{stay.id}")
            times.append(stay.start)
    if msh.first(9, 2).upper() in deps.maps.adt_context_events:
        for seg in segs:
            if seg.name == "DG1":
                dx = coded(seg, 3, 5, deps.maps.default_diagnosis_system, deps.maps, deps.tz)
                if dx is not None:
                    add_diagnosis(session, patient.id, enc_id, dx, at or arrival)
            elif seg.name == "PR1":
                px = coded(seg, 3, 5, deps.maps.default_procedure_system, deps.maps, deps.tz)
                new = add_procedure(session, patient.id, enc_id, px, at or arrival) if px else None
                if new is not None:
                    triggers.append(f"procedure:{new.id}")
                    times.append(new.start or at or arrival)
    if triggers:
        _evaluate(session, patient, triggers[0], times, row, arrival, deps, out)
    return out
