"""One patient's ``ClinicalSnapshot`` from the store, as it stood at ``now``."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.clinical.fhir_assemble import Parts, freeze
from cds_service.clinical.numbers import Reported
from cds_service.events.administrations import given_since
from cds_service.store.events_models import (
    DiagnosisRow,
    EncounterRow,
    IcuStayRow,
    LabResultRow,
    Patient,
    ProcedureRow,
)

HISTORY = timedelta(days=400)  # creatinine baseline (365 days) and every Mg window fit in this
KINDS = (m.SERUM_MG, m.IONIZED_MG, m.CREATININE, m.ALBUMIN, m.EGFR, m.WEIGHT)


def result_name(row_id: int) -> str:
    """The resource name a stored result carries in advice (``Observation/hl7-<id>``)."""
    return f"Observation/hl7-{row_id}"


def result_id(name: str | None) -> int | None:
    """The stored result id behind a resource name, if it is one of ours."""
    prefix = "Observation/hl7-"
    if name and name.startswith(prefix) and name[len(prefix) :].isdigit():
        return int(name[len(prefix) :])
    return None


def _lab(row: LabResultRow) -> m.LabResult | m.Excluded:
    name = result_name(row.id)
    if not row.usable or row.value is None or row.time is None:
        return m.Excluded(
            name,
            row.reason_code or m.NON_NUMERIC,
            row.reason or "not usable",
            row.kind,
            row.original_text or None,
            row.original_unit,
            row.time,
            row.specimen,
        )
    return m.LabResult(
        id=name,
        kind=row.kind,
        value=row.value,
        unit=row.unit or "",
        time=row.time,
        code=m.Coding(row.code_system, row.code, row.display),
        original_value=_as_sent(row),
        original_unit=row.original_unit or row.unit or "",
        comparator=row.comparator,
        status=row.status,
        time_flags=frozenset(f for f in row.time_flags.split(",") if f),
        date_only=row.date_only,
        reference_range=row.reference_range,
    )


def _as_sent(row: LabResultRow) -> float:
    """The value as sent, with its decimals when the stored text holds them (``2.0``)."""
    value = row.original_value if row.original_value is not None else row.value
    assert value is not None
    text = (row.original_text or "").strip()
    try:
        sent = Reported(text)
    except ValueError:
        return value
    return sent if sent == value else value


def _until(end: datetime | None, now: datetime) -> datetime | None:
    """An end after ``now`` had not happened yet at ``now``."""
    return end if end is not None and end <= now else None


def build_snapshot(session: Session, patient: Patient, now: datetime) -> m.ClinicalSnapshot:
    """The snapshot at ``now``: results of the last 400 days, encounters, ICU stays, DG1, PR1,
    and the medications given (RXA) in that time."""
    pid, since = patient.id, now - HISTORY
    parts = Parts(birth=patient.birth_date.isoformat() if patient.birth_date else None)
    parts.sex = patient.sex
    rows = session.scalars(
        select(LabResultRow).where(
            LabResultRow.patient_id == pid,
            LabResultRow.kind.in_(KINDS),
            LabResultRow.time >= since,
            LabResultRow.time <= now,
            LabResultRow.superseded.is_(False),
            LabResultRow.retracted.is_(False),
        )
    )
    for row in rows:
        got = _lab(row)
        (parts.labs if isinstance(got, m.LabResult) else parts.excluded).append(got)  # type: ignore[arg-type]
    stays: dict[int, list[m.LocationPeriod]] = {}
    for stay in session.scalars(
        select(IcuStayRow).where(IcuStayRow.patient_id == pid, IcuStayRow.start <= now)
    ):
        period = m.LocationPeriod(stay.unit, (), stay.start, _until(stay.end, now), True)
        stays.setdefault(stay.encounter_id, []).append(period)
    for enc in session.scalars(
        select(EncounterRow).where(
            EncounterRow.patient_id == pid,
            EncounterRow.status != "cancelled",
            or_(EncounterRow.start.is_(None), EncounterRow.start <= now),
            or_(EncounterRow.end.is_(None), EncounterRow.end >= since),
        )
    ):
        end = _until(enc.end, now)
        encounter = m.Encounter(
            f"hl7-enc-{enc.id}",
            enc.klass,
            "finished" if end else "in-progress",
            enc.start,
            end,
            tuple(stays.get(enc.id, ())),
        )
        parts.encounters.append((encounter, None))
    for dx in session.scalars(
        select(DiagnosisRow).where(DiagnosisRow.patient_id == pid, DiagnosisRow.recorded <= now)
    ):
        concept = m.Concept((m.Coding(dx.system, dx.code, dx.display),))
        parts.conditions.append(m.Condition(f"hl7-dx-{dx.id}", concept, dx.onset, dx.recorded))
    for px in session.scalars(
        select(ProcedureRow).where(
            ProcedureRow.patient_id == pid,
            or_(ProcedureRow.start.is_(None), ProcedureRow.start <= now),
        )
    ):
        concept = m.Concept((m.Coding(px.system, px.code, px.display),))
        parts.procedures.append(
            m.Procedure(f"hl7-px-{px.id}", concept, "completed", px.start, px.end)
        )
    parts.medications.extend(given_since(session, pid, since, now))
    return freeze(parts, patient.id_value, None, now, ())
