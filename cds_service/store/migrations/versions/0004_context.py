"""Context as EHRs send it: medications given (HL7 v2 RXA) and the specimen of a result.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TABLE = "medication_administration"


def upgrade() -> None:
    """Create ``medication_administration``; add ``lab_result.specimen``."""
    op.create_table(
        _TABLE,
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("system", sa.String(255), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("display", sa.String(255), nullable=True),
        sa.Column("time", _TS, nullable=False),
        sa.Column("end", _TS, nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("amount", sa.String(64), nullable=False),
        sa.Column("message_id", _ID, nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{_TABLE}")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f(f"fk_{_TABLE}_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["hl7_message.id"], name=op.f(f"fk_{_TABLE}_message_id_hl7_message")
        ),
    )
    op.create_index("ix_medication_administration_patient_time", _TABLE, ["patient_id", "time"])
    op.create_index(op.f(f"ix_{_TABLE}_message_id"), _TABLE, ["message_id"])
    with op.batch_alter_table("lab_result") as batch:
        batch.add_column(sa.Column("specimen", sa.String(80), nullable=True))


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    with op.batch_alter_table("lab_result") as batch:
        batch.drop_column("specimen")
    op.drop_table(_TABLE)
