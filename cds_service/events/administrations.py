"""Medications given (HL7 v2 RXA) in the patient store, and back as snapshot medications."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.clinical.fhir_context import ADMINISTERED
from cds_service.events.hl7_rxa import RxaRecord
from cds_service.store.events_models import AdministrationRow

SOURCE = "MedicationAdministration"


def store_administration(
    session: Session, rec: RxaRecord, patient_id: int, message_id: int, now: datetime
) -> AdministrationRow | None:
    """Store one RXA once per patient, code and time; RXA-21 D deletes it. None if nothing new."""
    same = (
        AdministrationRow.patient_id == patient_id,
        AdministrationRow.system == rec.code.system[:255],
        AdministrationRow.code == rec.code.code[:64],
        AdministrationRow.time == rec.time,
    )
    if rec.delete:
        session.execute(delete(AdministrationRow).where(*same))
        return None
    earlier = session.scalars(select(AdministrationRow).where(*same)).first()
    if earlier is not None:  # the same dose sent again, or its status updated
        earlier.status, earlier.end, earlier.amount = rec.status, rec.end, rec.amount
        return None
    row = AdministrationRow(
        patient_id=patient_id,
        system=rec.code.system[:255],
        code=rec.code.code[:64],
        display=(rec.code.display or rec.concept.text or "")[:255] or None,
        time=rec.time,
        end=rec.end,
        status=rec.status,
        amount=rec.amount,
        message_id=message_id,
        received_at=now,
    )
    session.add(row)
    return row


def given_since(
    session: Session, patient_id: int, since: datetime, now: datetime
) -> list[m.Medication]:
    """The doses given (completed, in progress) timed in [since, now], as snapshot medications."""
    rows = session.scalars(
        select(AdministrationRow).where(
            AdministrationRow.patient_id == patient_id,
            AdministrationRow.time >= since,
            AdministrationRow.time <= now,
            AdministrationRow.status.in_(ADMINISTERED),
        )
    )
    out = []
    for row in rows:
        codings = (m.Coding(row.system, row.code, row.display),) if row.system else ()
        concept = m.Concept(codings, row.display)
        out.append(m.Medication(f"hl7-rxa-{row.id}", concept, row.status, SOURCE, time=row.time))
    return out
