"""CDS Hooks tables and the declarative Base shared by every table of the service.

New tables go in a ``*_models.py`` module of this package (imported with the package, so
Alembic autogenerate and ``Store.purge`` see them) and in a new migration under migrations/.
Set ``retention_column`` on a model to have ``purge`` delete its rows by age.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Constraint names are deterministic so migrations (0001, 0002, ...) can refer to them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# An auto-increment key that is BIGINT on PostgreSQL and the rowid alias on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Normalise to UTC; a naive value is taken as UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Return an aware UTC datetime."""
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Shared declarative base; ``retention_column`` marks tables purged by age."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, str: String(255)}
    retention_column: ClassVar[str | None] = None


class CardRecord(Base):
    """A card returned to a CDS client (no patient identifier in clear)."""

    __tablename__ = "cds_card"
    retention_column = "created_at"

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    hook_instance: Mapped[str] = mapped_column(index=True)
    service_id: Mapped[str] = mapped_column(String(128))
    patient_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    rule_ids: Mapped[list[str]] = mapped_column(JSON)
    lead_rule: Mapped[str | None] = mapped_column(String(128))
    indicator: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(index=True)


class Feedback(Base):
    """One feedback item; the same card, outcome and timestamp is stored once."""

    __tablename__ = "cds_feedback"
    __table_args__ = (UniqueConstraint("card_uuid", "outcome", "outcome_timestamp"),)
    retention_column = "received_at"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(128))
    card_uuid: Mapped[str] = mapped_column(String(36))
    outcome: Mapped[str] = mapped_column(String(16))
    outcome_timestamp: Mapped[datetime]
    accepted_suggestions: Mapped[list[str]] = mapped_column(JSON)
    override_code: Mapped[str | None] = mapped_column(Text)
    override_system: Mapped[str | None] = mapped_column(Text)
    override_display: Mapped[str | None] = mapped_column(Text)
    user_comment: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(index=True)


class JwtJti(Base):
    """A CDS client JWT id seen before its expiry (replay protection)."""

    __tablename__ = "jwt_jti"
    iss: Mapped[str] = mapped_column(primary_key=True)
    jti: Mapped[str] = mapped_column(primary_key=True)
    exp: Mapped[datetime] = mapped_column(index=True)
