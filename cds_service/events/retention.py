"""Retention (``CDS_RETENTION_DAYS``): delete event-side rows older than the period.

Results and medications given go by their clinical time (a result older than the period
is outside every window the rules use, the 365-day creatinine baseline included), messages
by arrival, advice (with its deliveries and pushed events) by creation, encounters and ICU
stays once ended (or, never closed, last updated) before the cutoff. Diagnoses and procedures
stay (chronic conditions keep mattering); references to deleted rows are cleared first, so foreign
keys hold on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Delete, Engine, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from cds_service.store.events_models import (
    AdministrationRow,
    AdviceIssued,
    AdvicePush,
    DiagnosisRow,
    EncounterRow,
    Hl7Message,
    IcuStayRow,
    LabResultRow,
    OutboxRow,
    ProcedureRow,
)


def purge_events(engine: Engine, days: int, now: datetime | None = None) -> dict[str, int]:
    """Delete rows older than ``days``; the number deleted per table."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    counts: dict[str, int] = {}

    def run(name: str, statement: Delete) -> None:
        result = session.execute(statement)
        counts[name] = counts.get(name, 0) + int(getattr(result, "rowcount", 0) or 0)

    old_advice = select(AdviceIssued.id).where(AdviceIssued.created_at < cutoff)
    old_results = select(LabResultRow.id).where(
        or_(
            LabResultRow.time < cutoff,
            and_(LabResultRow.time.is_(None), LabResultRow.received_at < cutoff),
        )
    )
    old_messages = select(Hl7Message.id).where(Hl7Message.received_at < cutoff)
    old_encounters = select(EncounterRow.id).where(
        or_(
            EncounterRow.end < cutoff,
            and_(EncounterRow.end.is_(None), EncounterRow.updated_at < cutoff),
        )
    )
    with Session(engine) as session, session.begin():
        run("outbox", delete(OutboxRow).where(OutboxRow.advice_id.in_(old_advice)))
        run("advice_push", delete(AdvicePush).where(AdvicePush.advice_id.in_(old_advice)))
        run("advice_issued", delete(AdviceIssued).where(AdviceIssued.id.in_(old_advice)))
        session.execute(
            update(AdviceIssued)
            .where(AdviceIssued.trigger_result_id.in_(old_results))
            .values(trigger_result_id=None)
        )
        session.execute(
            update(LabResultRow)
            .where(LabResultRow.superseded_by.in_(old_results))
            .values(superseded_by=None)
        )
        run("lab_result", delete(LabResultRow).where(LabResultRow.id.in_(old_results)))
        run(
            "medication_administration",
            delete(AdministrationRow).where(AdministrationRow.time < cutoff),
        )
        for model in (LabResultRow, AdviceIssued, AdministrationRow):
            session.execute(
                update(model).where(model.message_id.in_(old_messages)).values(message_id=None)
            )
        run("hl7_message", delete(Hl7Message).where(Hl7Message.id.in_(old_messages)))
        run("icu_stay", delete(IcuStayRow).where(IcuStayRow.encounter_id.in_(old_encounters)))
        for other in (DiagnosisRow, ProcedureRow):
            session.execute(
                update(other)
                .where(other.encounter_id.in_(old_encounters))
                .values(encounter_id=None)
            )
        run("encounter", delete(EncounterRow).where(EncounterRow.id.in_(old_encounters)))
    return counts
