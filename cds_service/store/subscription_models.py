"""FHIR Subscription tables (migration 0003): per-subscription event state, resource links.

``fhir_subscription`` remembers, per subscription, the last event number and the time of
the last event processed (a gap re-queries from there). ``fhir_resource`` links a FHIR
resource (``Type/id`` on ``CDS_FHIR_BASE``) to the stored result it became, so a re-sent
notification is recognised and a corrected or retracted Observation replaces its result.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cds_service.store.models import Base, BigId


class FhirSubscriptionState(Base):
    """One subscription (``Subscription/<id>``, or ``classic`` for R4 rest-hooks without one)."""

    __tablename__ = "fhir_subscription"
    __table_args__ = (UniqueConstraint("subscription"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    subscription: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str | None] = mapped_column(String(255))
    last_event_number: Mapped[int | None] = mapped_column(BigInteger)
    last_event_at: Mapped[datetime | None]
    last_notification_at: Mapped[datetime | None]
    last_type: Mapped[str] = mapped_column(String(32), default="")
    gaps: Mapped[int] = mapped_column(default=0)
    updated_at: Mapped[datetime]


class FhirResourceLink(Base):
    """A FHIR resource (``Observation/<id>``) and the result row its current version is."""

    __tablename__ = "fhir_resource"
    __table_args__ = (UniqueConstraint("resource"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    resource: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64), default="")
    fingerprint: Mapped[str] = mapped_column(String(64), default="")
    lab_result_id: Mapped[int | None] = mapped_column(ForeignKey("lab_result.id"), index=True)
    status: Mapped[str] = mapped_column(String(24), default="")
    updated_at: Mapped[datetime]
