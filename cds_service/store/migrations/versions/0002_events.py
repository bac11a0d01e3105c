"""Events: patients and their history, HL7 messages, advice issued, outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_S = sa.String(255)


def _id() -> sa.Column[int]:
    return sa.Column("id", _ID, autoincrement=True, nullable=False)


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}")
    )


def _patient_ref(table: str, nullable: bool = False) -> list[Any]:
    return [sa.Column("patient_id", _ID, nullable=nullable), _fk(table, "patient_id", "patient")]


def upgrade() -> None:
    """Create the event tables and their indexes."""
    op.create_table(
        "patient",
        _id(),
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("id_system", _S, nullable=False),
        sa.Column("id_value", _S, nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(16), nullable=True),
        sa.Column("merged_into", _ID, nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        _pk("patient"),
        _fk("patient", "merged_into", "patient"),
        sa.UniqueConstraint("id_hash", name=op.f("uq_patient_id_hash")),
    )
    op.create_table(
        "hl7_message",
        _id(),
        sa.Column("sender_app", _S, nullable=False),
        sa.Column("sender_facility", _S, nullable=False),
        sa.Column("control_id", _S, nullable=True),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("processing_id", sa.String(8), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("interest", sa.Boolean(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=True),
        sa.Column("ack", sa.Text(), nullable=False),
        sa.Column("ack_sent", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        *_patient_ref("hl7_message", nullable=True),
        _pk("hl7_message"),
        sa.UniqueConstraint(
            "sender_app",
            "sender_facility",
            "control_id",
            name=op.f("uq_hl7_message_sender_app_sender_facility_control_id"),
        ),
    )
    op.create_index(op.f("ix_hl7_message_received_at"), "hl7_message", ["received_at"])
    op.create_index(op.f("ix_hl7_message_patient_id"), "hl7_message", ["patient_id"])
    op.create_table(
        "lab_result",
        _id(),
        *_patient_ref("lab_result"),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("usable", sa.Boolean(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("unit", sa.String(32), nullable=True),
        sa.Column("original_value", sa.Float(), nullable=True),
        sa.Column("original_text", _S, nullable=False),
        sa.Column("original_unit", sa.String(64), nullable=True),
        sa.Column("comparator", sa.String(4), nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("time", _TS, nullable=True),
        sa.Column("time_flags", sa.String(64), nullable=False),
        sa.Column("date_only", sa.Boolean(), nullable=False),
        sa.Column("code_system", _S, nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("display", _S, nullable=True),
        sa.Column("reason_code", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("reference_range", sa.String(128), nullable=True),
        sa.Column("abnormal_flags", sa.String(64), nullable=False),
        sa.Column("orderer", _S, nullable=False),
        sa.Column("message_id", _ID, nullable=True),
        sa.Column("obx_set_id", sa.String(16), nullable=False),
        sa.Column("superseded_by", _ID, nullable=True),
        sa.Column("superseded", sa.Boolean(), nullable=False),
        sa.Column("retracted", sa.Boolean(), nullable=False),
        sa.Column("received_at", _TS, nullable=False),
        _pk("lab_result"),
        _fk("lab_result", "message_id", "hl7_message"),
    )
    op.create_index("ix_lab_result_patient_kind_time", "lab_result", ["patient_id", "kind", "time"])
    op.create_index("ix_lab_result_patient_code_time", "lab_result", ["patient_id", "code", "time"])
    op.create_index(op.f("ix_lab_result_message_id"), "lab_result", ["message_id"])
    op.create_table(
        "encounter",
        _id(),
        *_patient_ref("encounter"),
        sa.Column("visit_hash", sa.String(64), nullable=True),
        sa.Column("klass", sa.String(16), nullable=False),
        sa.Column("class_code", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start", _TS, nullable=True),
        sa.Column("end", _TS, nullable=True),
        sa.Column("unit", _S, nullable=True),
        sa.Column("updated_at", _TS, nullable=False),
        _pk("encounter"),
    )
    op.create_index("ix_encounter_patient_start", "encounter", ["patient_id", "start"])
    op.create_index(op.f("ix_encounter_visit_hash"), "encounter", ["visit_hash"])
    op.create_table(
        "icu_stay",
        _id(),
        *_patient_ref("icu_stay"),
        sa.Column("encounter_id", _ID, nullable=False),
        sa.Column("unit", _S, nullable=False),
        sa.Column("start", _TS, nullable=False),
        sa.Column("end", _TS, nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        _pk("icu_stay"),
        _fk("icu_stay", "encounter_id", "encounter"),
    )
    op.create_index("ix_icu_stay_patient_start", "icu_stay", ["patient_id", "start"])
    op.create_index(op.f("ix_icu_stay_encounter_id"), "icu_stay", ["encounter_id"])
    for table, time_cols in (("diagnosis", ("onset",)), ("procedure", ("start", "end"))):
        op.create_table(
            table,
            _id(),
            *_patient_ref(table),
            sa.Column("encounter_id", _ID, nullable=True),
            sa.Column("system", _S, nullable=False),
            sa.Column("code", sa.String(64), nullable=False),
            sa.Column("display", _S, nullable=True),
            *(sa.Column(c, _TS, nullable=True) for c in time_cols),
            sa.Column("recorded", _TS, nullable=False),
            _pk(table),
            _fk(table, "encounter_id", "encounter"),
        )
    op.create_index("ix_diagnosis_patient_code", "diagnosis", ["patient_id", "system", "code"])
    op.create_index("ix_procedure_patient_start", "procedure", ["patient_id", "start"])
    op.create_table(
        "advice_issued",
        _id(),
        *_patient_ref("advice_issued"),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("trigger_key", sa.String(64), nullable=False),
        sa.Column("trigger_result_id", _ID, nullable=True),
        sa.Column("message_id", _ID, nullable=True),
        sa.Column("direction", sa.String(32), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("evaluated_at", _TS, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("late", sa.Boolean(), nullable=False),
        sa.Column("test", sa.Boolean(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.Column("withdrawn_at", _TS, nullable=True),
        _pk("advice_issued"),
        _fk("advice_issued", "trigger_result_id", "lab_result"),
        _fk("advice_issued", "message_id", "hl7_message"),
        sa.UniqueConstraint(
            "patient_id",
            "rule_id",
            "trigger_key",
            name=op.f("uq_advice_issued_patient_id_rule_id_trigger_key"),
        ),
    )
    op.create_index(
        op.f("ix_advice_issued_trigger_result_id"), "advice_issued", ["trigger_result_id"]
    )
    op.create_index(op.f("ix_advice_issued_message_id"), "advice_issued", ["message_id"])
    op.create_index(op.f("ix_advice_issued_created_at"), "advice_issued", ["created_at"])
    op.create_table(
        "outbox",
        _id(),
        sa.Column("advice_id", _ID, nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", _TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        _pk("outbox"),
        _fk("outbox", "advice_id", "advice_issued"),
        sa.UniqueConstraint(
            "advice_id", "channel", "kind", name=op.f("uq_outbox_advice_id_channel_kind")
        ),
    )
    op.create_index("ix_outbox_status_next", "outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    """Drop the event tables (children first)."""
    for table in (
        "outbox",
        "advice_issued",
        "procedure",
        "diagnosis",
        "icu_stay",
        "encounter",
        "lab_result",
        "hl7_message",
        "patient",
    ):
        op.drop_table(table)
