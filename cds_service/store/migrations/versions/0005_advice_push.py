"""Advice pushed by events (evidence.md §8): push status of advice, pushed events.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add ``advice_issued.push_status`` and create ``advice_push``.

    Advice stored before this revision was queued unless late, test or shadow: ``pushed``,
    else ``held``.
    """
    with op.batch_alter_table("advice_issued") as batch:
        batch.add_column(
            sa.Column("push_status", sa.String(16), server_default="pushed", nullable=False)
        )
    advice = sa.table(
        "advice_issued",
        sa.column("push_status", sa.String),
        sa.column("late", sa.Boolean),
        sa.column("test", sa.Boolean),
        sa.column("shadow", sa.Boolean),
    )
    op.execute(
        advice.update()
        .where(sa.or_(advice.c.late, advice.c.test, advice.c.shadow))
        .values(push_status="held")
    )
    op.create_table(
        "advice_push",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("patient_id", _ID, nullable=False),
        sa.Column("advice_id", _ID, nullable=False),
        sa.Column("rule_id", sa.String(128), nullable=False),
        sa.Column("push_key", sa.String(255), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_advice_push")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patient.id"], name=op.f("fk_advice_push_patient_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["advice_id"],
            ["advice_issued.id"],
            name=op.f("fk_advice_push_advice_id_advice_issued"),
        ),
        sa.UniqueConstraint(
            "patient_id", "push_key", name=op.f("uq_advice_push_patient_id_push_key")
        ),
    )
    op.create_index(op.f("ix_advice_push_advice_id"), "advice_push", ["advice_id"])


def downgrade() -> None:
    """Drop ``advice_push`` and the push status."""
    op.drop_table("advice_push")
    with op.batch_alter_table("advice_issued") as batch:
        batch.drop_column("push_status")
