"""Patients and their results in the store: find-or-create, results with corrections, merge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.events import push
from cds_service.events.hl7_context import Demographics, PatientId
from cds_service.events.hl7_obx import ObxRecord
from cds_service.store.events_models import (
    AdministrationRow,
    AdviceIssued,
    AdvicePush,
    DiagnosisRow,
    EncounterRow,
    Hl7Message,
    IcuStayRow,
    LabResultRow,
    Patient,
    ProcedureRow,
)

Hasher = Callable[[str], str]
MERGED_TABLES = (
    LabResultRow,
    EncounterRow,
    IcuStayRow,
    DiagnosisRow,
    ProcedureRow,
    AdministrationRow,
    AdviceIssued,
    AdvicePush,
    Hl7Message,
)


def patient_hash(identifier: PatientId, hasher: Hasher) -> str:
    """The keyed hash of an identifier (system and value)."""
    return hasher(f"{identifier.system}|{identifier.value}")


def find_patient(session: Session, identifier: PatientId, hasher: Hasher) -> Patient | None:
    """The patient with this identifier, following merges to the surviving record."""
    found = session.scalar(
        select(Patient).where(Patient.id_hash == patient_hash(identifier, hasher))
    )
    seen = set()
    while found is not None and found.merged_into is not None and found.id not in seen:
        seen.add(found.id)
        found = session.get(Patient, found.merged_into)
    return found


def resolve_patient(session: Session, demo: Demographics, hasher: Hasher, now: datetime) -> Patient:
    """Find or create the patient; PID-7/PID-8 update what is known."""
    patient = find_patient(session, demo.identifier, hasher)
    if patient is None:
        patient = Patient(
            id_hash=patient_hash(demo.identifier, hasher),
            id_system=demo.identifier.system[:255],
            id_value=demo.identifier.value[:255],
            created_at=now,
            updated_at=now,
        )
        try:
            with session.begin_nested():
                session.add(patient)
        except IntegrityError:  # created meanwhile by another connection
            patient = find_patient(session, demo.identifier, hasher)
            assert patient is not None
    if demo.birth_date:
        try:
            patient.birth_date = date.fromisoformat(demo.birth_date)
        except ValueError:
            pass
    if demo.sex:
        patient.sex = demo.sex
    patient.updated_at = now
    return patient


def merge_patients(session: Session, survivor: Patient, prior: Patient, now: datetime) -> None:
    """ADT A40: move the prior record's history to the survivor and mark it merged."""
    if prior.id == survivor.id:
        return
    push.merge(session, survivor.id, prior.id)
    for model in MERGED_TABLES:
        session.execute(
            update(model).where(model.patient_id == prior.id).values(patient_id=survivor.id)
        )
    prior.merged_into = survivor.id
    prior.updated_at = now


@dataclass
class StoredResults:
    """What storing one message's results did: new rows and results to withdraw advice on."""

    new: list[LabResultRow] = field(default_factory=list)
    withdrawn: list[int] = field(default_factory=list)


def _row(rec: ObxRecord, patient_id: int, message_id: int, now: datetime) -> LabResultRow:
    r = rec.result
    row = LabResultRow(
        patient_id=patient_id,
        status=rec.status,
        code_system=rec.code.system[:255],
        code=rec.code.code[:64],
        display=(rec.code.display or "")[:255] or None,
        abnormal_flags=rec.flags,
        orderer=rec.orderer,
        message_id=message_id,
        obx_set_id=rec.set_id[:16],
        superseded=False,
        retracted=False,
        received_at=now,
        original_text=rec.value_text,
        time_flags="",
        date_only=False,
    )
    if isinstance(r, m.LabResult):
        row.kind, row.usable, row.value, row.unit = r.kind, True, r.value, r.unit
        row.original_value, row.original_unit, row.comparator = (
            r.original_value,
            r.original_unit,
            r.comparator,
        )
        row.time, row.time_flags, row.date_only = (
            r.time,
            ",".join(sorted(r.time_flags)),
            r.date_only,
        )
        row.reference_range = (r.reference_range or "")[:128] or None
    else:
        row.kind, row.usable, row.time = (r.kind or rec.value_set)[:40], False, r.time
        row.original_text = (r.value_text or "")[:255]
        row.original_unit, row.reason_code, row.reason = r.unit, r.reason_code, r.reason
        row.specimen = r.specimen
    return row


def _same(a: LabResultRow, b: LabResultRow) -> bool:
    return (a.status, a.original_text, a.original_unit, a.value) == (
        b.status,
        b.original_text,
        b.original_unit,
        b.value,
    )


def store_result(
    session: Session,
    rec: ObxRecord,
    patient_id: int,
    message_id: int,
    now: datetime,
    out: StoredResults,
) -> None:
    """Store one OBX: add, replace the earlier result (same OBX-3 and time), or retract it."""
    new = _row(rec, patient_id, message_id, now)
    earlier = list(
        session.scalars(
            select(LabResultRow).where(
                LabResultRow.patient_id == patient_id,
                LabResultRow.code == new.code,
                LabResultRow.code_system == new.code_system,
                LabResultRow.time.is_(None) if new.time is None else LabResultRow.time == new.time,
                LabResultRow.superseded.is_(False),
                LabResultRow.retracted.is_(False),
            )
        )
    )
    if rec.action == "retract":
        for old in earlier:
            old.retracted = True
            out.withdrawn.append(old.id)
        return
    if rec.action == "add" and any(_same(old, new) for old in earlier):
        return  # the same result sent again under another control id
    session.add(new)
    session.flush()
    for old in earlier:
        old.superseded, old.superseded_by = True, new.id
        out.withdrawn.append(old.id)
    out.new.append(new)
