"""The Store: card log, feedback, JWT replay cache and retention, on one Engine."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert

from cds_service.store.engine import dispose_engine, engine_for
from cds_service.store.models import Base, CardRecord, Feedback, JwtJti

log = logging.getLogger(__name__)

JTI_GRACE = timedelta(minutes=5)  # keep a jti this long past its exp (covers clock leeway)
JTI_CLEANUP_EVERY = 60.0  # seconds between expired-jti deletions in one process
CARD_EXTENSION = "magnesium-aki"


def utcnow() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def parse_instant(value: str | datetime) -> datetime:
    """An ISO 8601 date-time (``Z`` allowed; naive taken as UTC) as an aware UTC datetime.

    :raises ValueError: not a date-time with a time part.
    """
    if isinstance(value, datetime):
        moment = value
    else:
        if len(value) < 16 or value[10] not in "Tt ":
            raise ValueError("not an ISO 8601 date-time")
        moment = datetime.fromisoformat(value.replace("z", "Z"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _insert_ignore_stmt(engine: Engine, model: type[Base]) -> Insert:
    """INSERT that skips rows colliding with a key, without rows: execute it with a row list
    (executemany), or add ``.values(...)`` (use RETURNING: rowcount is unreliable)."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    if engine.dialect.name == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported database backend: {engine.dialect.name}")


def _insert_ignore(engine: Engine, model: type[Base], rows: Sequence[Mapping[str, Any]]) -> Insert:
    """The INSERT of ``_insert_ignore_stmt`` with these rows as its VALUES."""
    return _insert_ignore_stmt(engine, model).values(list(rows))


def _card_row(card: Mapping[str, Any]) -> dict[str, Any] | None:
    uuid = card.get("uuid")
    if not isinstance(uuid, str) or not uuid:
        return None
    ext = card.get("extension")
    ours = ext.get(CARD_EXTENSION) if isinstance(ext, Mapping) else None
    rules = ours.get("rules") if isinstance(ours, Mapping) else None
    source = card.get("source")
    topic = source.get("topic") if isinstance(source, Mapping) else None
    lead = topic.get("code") if isinstance(topic, Mapping) else None
    indicator = card.get("indicator")
    return {
        "uuid": uuid.lower()[:36],
        "rule_ids": [r for r in rules if isinstance(r, str)] if isinstance(rules, list) else [],
        "lead_rule": lead[:128] if isinstance(lead, str) else None,
        "indicator": indicator[:16] if isinstance(indicator, str) else None,
    }


class Store:
    """Persistence of the CDS Hooks side; identifiers are stored as HMAC-SHA256 only."""

    def __init__(
        self,
        engine: Engine,
        secret: str,
        *,
        clock: Callable[[], datetime] = utcnow,
        url: str | None = None,
        log_engine: Engine | None = None,
    ) -> None:
        """Use ``engine`` (the Engine of ``url``); ``secret`` keys the identifier hashes.

        ``log_engine`` (default ``engine``) writes the card log: the relaxed SQLite Engine
        of ``engine_for(url, durable=False)`` in a service process.
        """
        if not secret:
            log.warning("CDS_SECRET is empty: stored identifier hashes are not keyed")
        self.engine = engine
        self._log_engine = log_engine or engine
        self._card_insert = _insert_ignore_stmt(self._log_engine, CardRecord)
        self._url = url
        self._key = secret.encode("utf-8")
        self._clock = clock
        self._jti_lock = threading.Lock()
        # SQLite has one writer; threads of a process that collide wait in SQLite's busy
        # handler, which sleeps up to 100 ms per retry (p99 of a hook call > 100 ms under
        # load). Queueing the card log writes on a lock wakes the next writer at once.
        self._card_lock: AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )
        self._jti_cleaned = float("-inf")

    def hash_id(self, value: str) -> str:
        """HMAC-SHA256 (hex) of an identifier with CDS_SECRET; never store the clear id."""
        return hmac.new(self._key, value.encode("utf-8"), hashlib.sha256).hexdigest()

    def hash_patient(self, patient_ref: str) -> str:
        """Hash of a patient id given as ``123`` or ``Patient/123`` (same hash for both)."""
        return self.hash_id(patient_ref.removeprefix("Patient/"))

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except SQLAlchemyError:
            return False
        return True

    def record_cards(
        self,
        hook_instance: str,
        service_id: str,
        patient_ref: str | None,
        cards: Sequence[Mapping[str, Any]],
    ) -> None:
        """Log the cards of one response (uuid, rules, lead rule, indicator, hashed patient).

        Committed before the response leaves; on SQLite without an fsync (the relaxed
        Engine): a killed process loses nothing, a power failure may lose the last rows.
        """
        now = self._clock()
        patient_hash = self.hash_patient(patient_ref) if patient_ref else None
        rows = []
        for card in cards:
            row = _card_row(card)
            if row is not None:
                row.update(
                    hook_instance=hook_instance[:255],
                    service_id=service_id[:128],
                    patient_hash=patient_hash,
                    created_at=now,
                )
                rows.append(row)
        if rows:
            with self._card_lock, self._log_engine.begin() as conn:
                conn.execute(self._card_insert, rows)

    def save_feedback(self, service_id: str, item: Mapping[str, Any]) -> bool:
        """Store one validated feedback item; False when the same one was stored before."""
        override = item.get("overrideReason") or {}
        reason = override.get("reason") or {}
        row = {
            "service_id": service_id[:128],
            "card_uuid": str(item["card"]).lower(),
            "outcome": item["outcome"],
            "outcome_timestamp": parse_instant(item["outcomeTimestamp"]),
            "accepted_suggestions": [
                str(s["id"]) for s in item.get("acceptedSuggestions") or [] if "id" in s
            ],
            "override_code": reason.get("code"),
            "override_system": reason.get("system"),
            "override_display": reason.get("display"),
            "user_comment": override.get("userComment"),
            "received_at": self._clock(),
        }
        query = _insert_ignore(self.engine, Feedback, [row]).returning(Feedback.id)
        with self.engine.begin() as conn:
            inserted = conn.execute(query).first()
        return inserted is not None

    def seen_jti(self, iss: str, jti: str, exp: datetime) -> bool:
        """Record a JWT id atomically; True means it was seen before (a replay)."""
        self._cleanup_jti()
        row = {"iss": iss, "jti": jti, "exp": exp}
        query = _insert_ignore(self.engine, JwtJti, [row]).returning(JwtJti.jti)
        with self.engine.begin() as conn:
            inserted = conn.execute(query).first()
        return inserted is None

    def _cleanup_jti(self) -> None:
        now = time.monotonic()
        with self._jti_lock:
            if now - self._jti_cleaned < JTI_CLEANUP_EVERY:
                return
            self._jti_cleaned = now
        self.purge_jti()

    def purge_jti(self) -> int:
        """Delete JWT ids whose token expired more than JTI_GRACE ago; the count deleted."""
        with self.engine.begin() as conn:
            result = conn.execute(delete(JwtJti).where(JwtJti.exp < self._clock() - JTI_GRACE))
        return int(result.rowcount)

    def purge(self, older_than_days: int) -> dict[str, int]:
        """Delete rows older than the retention period from every table that has one."""
        cutoff = self._clock() - timedelta(days=older_than_days)
        counts: dict[str, int] = {}
        models = {mapper.local_table: mapper.class_ for mapper in Base.registry.mappers}
        with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):  # children before parents
                model = models.get(table)
                column_name = getattr(model, "retention_column", None)
                if model is None or column_name is None:
                    continue
                column = getattr(model, column_name)
                result = conn.execute(delete(model).where(column < cutoff))
                counts[table.name] = int(result.rowcount)
        counts[JwtJti.__tablename__] = self.purge_jti()
        return counts

    def cards_for(self, hook_instance: str) -> list[CardRecord]:
        """The logged cards of one hook call (for tests and analytics)."""
        with Session(self.engine) as session:
            query = select(CardRecord).where(CardRecord.hook_instance == hook_instance)
            return list(session.scalars(query))

    def close(self) -> None:
        """Dispose of this store's Engine (tests; a process normally keeps it)."""
        if self._url is None:
            self.engine.dispose()
            self._log_engine.dispose()
        else:
            dispose_engine(self._url)


def open_store(url: str, secret: str) -> Store:
    """A Store on the process-wide Engine of ``url`` (run ``migrate(url)`` first)."""
    return Store(engine_for(url), secret, url=url, log_engine=engine_for(url, durable=False))
