"""The outbox: one pending delivery row per advice (or withdrawal) and configured channel.

Rows are written in the same transaction as the advice, so nothing is lost between
storing advice and sending it; the delivery worker (``CDS_OUTBOUND``: fhir, hl7)
picks ``pending`` rows whose ``next_attempt_at`` has come, and records attempts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds_service.events.push import forget
from cds_service.store.events_models import AdviceIssued, OutboxRow

ADVICE = "advice"
WITHDRAWAL = "withdrawal"
PENDING = "pending"


def enqueue(
    session: Session,
    advice_row: AdviceIssued,
    channels: Sequence[str],
    *,
    kind: str = ADVICE,
    now: datetime | None = None,
) -> list[OutboxRow]:
    """Record a pending delivery of ``advice_row`` on each channel (idempotent per kind)."""
    at = now or datetime.now(UTC)
    existing = set(
        session.scalars(
            select(OutboxRow.channel).where(
                OutboxRow.advice_id == advice_row.id, OutboxRow.kind == kind
            )
        )
    )
    rows = []
    for channel in channels:
        if channel in existing:
            continue
        row = OutboxRow(
            advice_id=advice_row.id,
            channel=channel,
            kind=kind,
            status=PENDING,
            attempts=0,
            next_attempt_at=at,
            created_at=at,
            updated_at=at,
        )
        session.add(row)
        rows.append(row)
    return rows


def channels_used(session: Session, advice_id: int) -> list[str]:
    """The channels advice was queued on (a withdrawal goes to the same ones)."""
    query = select(OutboxRow.channel).where(
        OutboxRow.advice_id == advice_id, OutboxRow.kind == ADVICE
    )
    return sorted(set(session.scalars(query)))


def withdraw(session: Session, result_ids: Sequence[int], now: datetime) -> list[AdviceIssued]:
    """Withdraw advice triggered by retracted or replaced results; queue the corrections.

    Withdrawn advice no longer counts as pushed: the corrected result may push its event again.
    """
    if not result_ids:
        return []
    query = select(AdviceIssued).where(
        AdviceIssued.trigger_result_id.in_(list(result_ids)), AdviceIssued.withdrawn.is_(False)
    )
    rows = list(session.scalars(query))
    for row in rows:
        row.withdrawn = True
        row.withdrawn_at = now
        enqueue(session, row, channels_used(session, row.id), kind=WITHDRAWAL, now=now)
    forget(session, [row.id for row in rows])
    return rows
