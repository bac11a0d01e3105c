"""Encounters and ICU stays from PV1 (ADT events and the PV1 of results), DG1 and PR1 rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cds_service.events.hl7_context import CodedEvent, Visit
from cds_service.events.patients import Hasher
from cds_service.store.events_models import DiagnosisRow, EncounterRow, IcuStayRow, ProcedureRow

IN_PROGRESS, FINISHED, CANCELLED = "in-progress", "finished", "cancelled"
OPENS_STAY = frozenset({"admit", "update", "transfer", "result"})


def find_encounter(
    session: Session, patient_id: int, visit: Visit, hasher: Hasher
) -> EncounterRow | None:
    """The encounter of PV1-19 (hashed), else the patient's latest open encounter."""
    query = select(EncounterRow).where(EncounterRow.patient_id == patient_id)
    if visit.visit_number:
        query = query.where(EncounterRow.visit_hash == hasher(f"visit|{visit.visit_number}"))
    else:
        query = query.where(EncounterRow.status == IN_PROGRESS)
    return session.scalars(query.order_by(EncounterRow.id.desc()).limit(1)).first()


def _open_stay(session: Session, encounter_id: int) -> IcuStayRow | None:
    query = select(IcuStayRow).where(
        IcuStayRow.encounter_id == encounter_id, IcuStayRow.end.is_(None)
    )
    return session.scalars(query.order_by(IcuStayRow.start.desc()).limit(1)).first()


def apply_visit(
    session: Session,
    patient_id: int,
    visit: Visit,
    action: str,
    at: datetime | None,
    hasher: Hasher,
    now: datetime,
) -> tuple[EncounterRow | None, IcuStayRow | None]:
    """Apply one PV1 under an ADT action (or ``result``); the encounter and a newly opened stay."""
    enc = find_encounter(session, patient_id, visit, hasher)
    if enc is None:
        if action in ("cancel-admit", "cancel-discharge"):
            return None, None
        if action == "result" and visit.klass not in ("inpatient", "emergency"):
            return None, None
        enc = EncounterRow(
            patient_id=patient_id,
            klass=visit.klass,
            class_code=visit.class_code,
            status=IN_PROGRESS,
            updated_at=now,
            visit_hash=hasher(f"visit|{visit.visit_number}") if visit.visit_number else None,
            start=visit.admit or (at if action == "admit" else None),
        )
        session.add(enc)
        session.flush()
    if visit.class_code:
        enc.klass, enc.class_code = visit.klass, visit.class_code
    if visit.admit is not None:
        enc.start = visit.admit
    if visit.unit:
        enc.unit = visit.unit[:255]
    enc.updated_at = now
    new_stay = None
    stay = _open_stay(session, enc.id)
    if action == "discharge":
        enc.status, enc.end = FINISHED, visit.discharge or at
        if stay is not None:
            stay.end = enc.end
    elif action == "cancel-admit":
        enc.status = CANCELLED
        session.execute(delete(IcuStayRow).where(IcuStayRow.encounter_id == enc.id))
    elif action == "cancel-discharge":
        for closed in session.scalars(
            select(IcuStayRow).where(IcuStayRow.encounter_id == enc.id, IcuStayRow.end == enc.end)
        ):
            closed.end = None
        enc.status, enc.end = IN_PROGRESS, None
    elif visit.is_icu and stay is None and action in OPENS_STAY and enc.status == IN_PROGRESS:
        start = (visit.admit or at) if action in ("admit", "result") else (at or visit.admit)
        if start is not None:
            new_stay = IcuStayRow(
                patient_id=patient_id,
                encounter_id=enc.id,
                unit=visit.unit[:255],
                start=start,
                source="ORU PV1" if action == "result" else "ADT",
            )
            session.add(new_stay)
            session.flush()
    elif not visit.is_icu and stay is not None and action == "transfer":
        stay.end = at
    return enc, new_stay


def add_diagnosis(
    session: Session, patient_id: int, encounter_id: int | None, dx: CodedEvent, now: datetime
) -> DiagnosisRow | None:
    """Store a DG1 diagnosis once per patient, encounter and code."""
    exists = session.scalar(
        select(DiagnosisRow.id).where(
            DiagnosisRow.patient_id == patient_id,
            DiagnosisRow.system == dx.system,
            DiagnosisRow.code == dx.code[:64],
            DiagnosisRow.encounter_id == encounter_id,
        )
    )
    if exists is not None:
        return None
    row = DiagnosisRow(
        patient_id=patient_id,
        encounter_id=encounter_id,
        system=dx.system[:255],
        code=dx.code[:64],
        display=(dx.display or "")[:255] or None,
        onset=dx.time,
        recorded=dx.time or now,
    )
    session.add(row)
    return row


def add_procedure(
    session: Session, patient_id: int, encounter_id: int | None, px: CodedEvent, now: datetime
) -> ProcedureRow | None:
    """Store a PR1 procedure once per patient, code and time; None when already known."""
    exists = session.scalar(
        select(ProcedureRow.id).where(
            ProcedureRow.patient_id == patient_id,
            ProcedureRow.system == px.system,
            ProcedureRow.code == px.code[:64],
            ProcedureRow.start.is_(None) if px.time is None else ProcedureRow.start == px.time,
        )
    )
    if exists is not None:
        return None
    row = ProcedureRow(
        patient_id=patient_id,
        encounter_id=encounter_id,
        system=px.system[:255],
        code=px.code[:64],
        display=(px.display or "")[:255] or None,
        start=px.time,
        end=px.time,
        recorded=px.time or now,
    )
    session.add(row)
    session.flush()
    return row
