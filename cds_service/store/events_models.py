"""Event-side tables (migrations 0002, 0004): patients, history, HL7 messages, advice, outbox.

Identifier values are kept only in ``patient`` (docs/decisions.md "Patient identifiers");
every other table joins on the integer key, and logs use ``patient.id_hash``.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, Float, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from cds_service.store.models import Base, BigId


class Patient(Base):
    """A patient by one identifier (system + value); ``merged_into`` after ADT A40."""

    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id_hash: Mapped[str] = mapped_column(String(64), unique=True)
    id_system: Mapped[str] = mapped_column(String(255))
    id_value: Mapped[str] = mapped_column(String(255))
    birth_date: Mapped[date | None] = mapped_column(Date)
    sex: Mapped[str | None] = mapped_column(String(16))
    merged_into: Mapped[int | None] = mapped_column(ForeignKey("patient.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Hl7Message(Base):
    """One received message: sender, control id (unique per sender), status, ACK, raw text."""

    __tablename__ = "hl7_message"
    __table_args__ = (UniqueConstraint("sender_app", "sender_facility", "control_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sender_app: Mapped[str] = mapped_column(String(255), default="")
    sender_facility: Mapped[str] = mapped_column(String(255), default="")
    control_id: Mapped[str | None] = mapped_column(String(255))
    message_type: Mapped[str] = mapped_column(String(32), default="")
    processing_id: Mapped[str] = mapped_column(String(8), default="")
    version: Mapped[str] = mapped_column(String(16), default="")
    channel: Mapped[str] = mapped_column(String(8), default="mllp")
    received_at: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(8))
    interest: Mapped[bool] = mapped_column(Boolean, default=False)
    raw: Mapped[str | None] = mapped_column(Text)
    ack: Mapped[str] = mapped_column(Text)
    ack_sent: Mapped[bool] = mapped_column(Boolean, default=True)
    error: Mapped[str | None] = mapped_column(Text)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patient.id"), index=True)


class LabResultRow(Base):
    """A result of interest: normalised value with its original, status, time, provenance."""

    __tablename__ = "lab_result"
    __table_args__ = (
        Index("ix_lab_result_patient_kind_time", "patient_id", "kind", "time"),
        Index("ix_lab_result_patient_code_time", "patient_id", "code", "time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    kind: Mapped[str] = mapped_column(String(40))
    usable: Mapped[bool] = mapped_column(Boolean)
    value: Mapped[float | None] = mapped_column(Float)
    unit: Mapped[str | None] = mapped_column(String(32))
    original_value: Mapped[float | None] = mapped_column(Float)
    original_text: Mapped[str] = mapped_column(String(255), default="")
    original_unit: Mapped[str | None] = mapped_column(String(64))
    comparator: Mapped[str | None] = mapped_column(String(4))
    status: Mapped[str] = mapped_column(String(24))
    time: Mapped[datetime | None]
    time_flags: Mapped[str] = mapped_column(String(64), default="")
    date_only: Mapped[bool] = mapped_column(Boolean, default=False)
    code_system: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str | None] = mapped_column(String(255))
    reason_code: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    reference_range: Mapped[str | None] = mapped_column(String(128))
    specimen: Mapped[str | None] = mapped_column(String(80))  # what said "not serum" (0004)
    abnormal_flags: Mapped[str] = mapped_column(String(64), default="")
    orderer: Mapped[str] = mapped_column(String(255), default="")
    message_id: Mapped[int | None] = mapped_column(ForeignKey("hl7_message.id"), index=True)
    obx_set_id: Mapped[str] = mapped_column(String(16), default="")
    superseded_by: Mapped[int | None] = mapped_column(BigId)
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    retracted: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime]


class EncounterRow(Base):
    """An encounter from PV1: class, visit number (hashed), start, end, current unit."""

    __tablename__ = "encounter"
    __table_args__ = (Index("ix_encounter_patient_start", "patient_id", "start"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    visit_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    klass: Mapped[str] = mapped_column(String(16))
    class_code: Mapped[str] = mapped_column(String(8), default="")
    status: Mapped[str] = mapped_column(String(16))
    start: Mapped[datetime | None]
    end: Mapped[datetime | None]
    unit: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[datetime]


class IcuStayRow(Base):
    """An ICU stay: site ICU unit (PV1-3), start, end; cancelled with its admission."""

    __tablename__ = "icu_stay"
    __table_args__ = (Index("ix_icu_stay_patient_start", "patient_id", "start"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    encounter_id: Mapped[int] = mapped_column(ForeignKey("encounter.id"), index=True)
    unit: Mapped[str] = mapped_column(String(255))
    start: Mapped[datetime]
    end: Mapped[datetime | None]
    source: Mapped[str] = mapped_column(String(16))


class DiagnosisRow(Base):
    """A DG1 diagnosis (system URI + code)."""

    __tablename__ = "diagnosis"
    __table_args__ = (Index("ix_diagnosis_patient_code", "patient_id", "system", "code"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    encounter_id: Mapped[int | None] = mapped_column(ForeignKey("encounter.id"))
    system: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str | None] = mapped_column(String(255))
    onset: Mapped[datetime | None]
    recorded: Mapped[datetime]


class ProcedureRow(Base):
    """A PR1 procedure (system URI + code, PR1-5 time)."""

    __tablename__ = "procedure"
    __table_args__ = (Index("ix_procedure_patient_start", "patient_id", "start"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    encounter_id: Mapped[int | None] = mapped_column(ForeignKey("encounter.id"))
    system: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str | None] = mapped_column(String(255))
    start: Mapped[datetime | None]
    end: Mapped[datetime | None]
    recorded: Mapped[datetime]


class AdministrationRow(Base):
    """A medication given (HL7 v2 RXA, migration 0004): code, RXA-3 time, RXA-20 status."""

    __tablename__ = "medication_administration"
    __table_args__ = (Index("ix_medication_administration_patient_time", "patient_id", "time"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    system: Mapped[str] = mapped_column(String(255))
    code: Mapped[str] = mapped_column(String(64))
    display: Mapped[str | None] = mapped_column(String(255))
    time: Mapped[datetime]
    end: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(24))
    amount: Mapped[str] = mapped_column(String(64), default="")
    message_id: Mapped[int | None] = mapped_column(ForeignKey("hl7_message.id"), index=True)
    received_at: Mapped[datetime]


class AdviceIssued(Base):
    """Advice issued from an event, once per (patient, lead rule, triggering result)."""

    __tablename__ = "advice_issued"
    __table_args__ = (UniqueConstraint("patient_id", "rule_id", "trigger_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    rule_id: Mapped[str] = mapped_column(String(128))
    rules: Mapped[list[str]] = mapped_column(JSON)
    trigger_key: Mapped[str] = mapped_column(String(64))
    trigger_result_id: Mapped[int | None] = mapped_column(ForeignKey("lab_result.id"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("hl7_message.id"), index=True)
    direction: Mapped[str] = mapped_column(String(32))
    indicator: Mapped[str] = mapped_column(String(16))
    summary: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    evaluated_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(index=True)
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    test: Mapped[bool] = mapped_column(Boolean, default=False)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)
    withdrawn_at: Mapped[datetime | None]
    # evidence.md §8 (migration 0004): pushed (queued on the channels), repeat (its events were
    # pushed before), not-pushed (its rules are not pushed), held (late, test or shadow)
    push_status: Mapped[str] = mapped_column(String(16), server_default="pushed")


class AdvicePush(Base):
    """An event pushed to clinicians (evidence.md §8), once per patient and push key.

    The key names the rule and what it was pushed for: ``aki-kdigo|episode:<start>|stage:<n>``,
    ``<rule>|<index event>``, ``<rule>|result:<id>``, ``mg-data-quality|suspect:<id>``.
    """

    __tablename__ = "advice_push"
    __table_args__ = (UniqueConstraint("patient_id", "push_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patient.id"))
    advice_id: Mapped[int] = mapped_column(ForeignKey("advice_issued.id"), index=True)
    rule_id: Mapped[str] = mapped_column(String(128))
    push_key: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]


class OutboxRow(Base):
    """One delivery of advice (or of its withdrawal) on one channel, retried with backoff."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("advice_id", "channel", "kind"),
        Index("ix_outbox_status_next", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    advice_id: Mapped[int] = mapped_column(ForeignKey("advice_issued.id"))
    channel: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16), default="advice")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
