"""CDS Hooks: card log, feedback, JWT replay cache.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create cds_card, cds_feedback and jwt_jti."""
    op.create_table(
        "cds_card",
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("hook_instance", sa.String(255), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("patient_hash", sa.String(64), nullable=True),
        sa.Column("rule_ids", sa.JSON(), nullable=False),
        sa.Column("lead_rule", sa.String(128), nullable=True),
        sa.Column("indicator", sa.String(16), nullable=True),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("uuid", name=op.f("pk_cds_card")),
    )
    op.create_index(op.f("ix_cds_card_hook_instance"), "cds_card", ["hook_instance"])
    op.create_index(op.f("ix_cds_card_patient_hash"), "cds_card", ["patient_hash"])
    op.create_index(op.f("ix_cds_card_created_at"), "cds_card", ["created_at"])

    op.create_table(
        "cds_feedback",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("card_uuid", sa.String(36), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("outcome_timestamp", _TS, nullable=False),
        sa.Column("accepted_suggestions", sa.JSON(), nullable=False),
        sa.Column("override_code", sa.Text(), nullable=True),
        sa.Column("override_system", sa.Text(), nullable=True),
        sa.Column("override_display", sa.Text(), nullable=True),
        sa.Column("user_comment", sa.Text(), nullable=True),
        sa.Column("received_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cds_feedback")),
        sa.UniqueConstraint(
            "card_uuid",
            "outcome",
            "outcome_timestamp",
            name=op.f("uq_cds_feedback_card_uuid_outcome_outcome_timestamp"),
        ),
    )
    op.create_index(op.f("ix_cds_feedback_received_at"), "cds_feedback", ["received_at"])

    op.create_table(
        "jwt_jti",
        sa.Column("iss", sa.String(255), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("exp", _TS, nullable=False),
        sa.PrimaryKeyConstraint("iss", "jti", name=op.f("pk_jwt_jti")),
    )
    op.create_index(op.f("ix_jwt_jti_exp"), "jwt_jti", ["exp"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("jwt_jti")
    op.drop_table("cds_feedback")
    op.drop_table("cds_card")
