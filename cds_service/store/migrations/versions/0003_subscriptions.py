"""FHIR Subscriptions: per-subscription event state and FHIR resource links.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``fhir_subscription`` and ``fhir_resource``."""
    op.create_table(
        "fhir_subscription",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("subscription", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=True),
        sa.Column("last_event_number", sa.BigInteger(), nullable=True),
        sa.Column("last_event_at", _TS, nullable=True),
        sa.Column("last_notification_at", _TS, nullable=True),
        sa.Column("last_type", sa.String(32), nullable=False),
        sa.Column("gaps", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_subscription")),
        sa.UniqueConstraint("subscription", name=op.f("uq_fhir_subscription_subscription")),
    )
    op.create_table(
        "fhir_resource",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("resource", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("lab_result_id", _ID, nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_resource")),
        sa.ForeignKeyConstraint(
            ["lab_result_id"],
            ["lab_result.id"],
            name=op.f("fk_fhir_resource_lab_result_id_lab_result"),
        ),
        sa.UniqueConstraint("resource", name=op.f("uq_fhir_resource_resource")),
    )
    op.create_index(op.f("ix_fhir_resource_lab_result_id"), "fhir_resource", ["lab_result_id"])


def downgrade() -> None:
    """Drop the subscription tables."""
    op.drop_table("fhir_resource")
    op.drop_table("fhir_subscription")
