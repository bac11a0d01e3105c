"""Store: migrations, card log, idempotent feedback, jti replay, hashed ids, retention.

Every test taking ``db_url``/``store`` runs on SQLite and on PostgreSQL (skipped if unreachable).
"""

from __future__ import annotations

import hashlib
import hmac
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from cds_service.store import (
    Base,
    CardRecord,
    Feedback,
    JwtJti,
    Store,
    alembic_config,
    current_revision,
    dispose_engine,
    engine_for,
    migrate,
    open_store,
)
from tests.dbsupport import SECRET, sqlite_url

CLEAR_PATIENT = "MRN-CLEAR-0042-Zhang"
CARD_1 = "4e0a3a1e-3283-4575-ab82-028d55fe2719"
CARD_2 = "9368d37b-283f-44a0-93ea-547cebab93ed"


def card(uuid: str, rules: list[str], indicator: str = "warning") -> dict[str, Any]:
    """A card as render/cards.py builds it (only the members the store reads)."""
    return {
        "uuid": uuid,
        "summary": "Low magnesium",
        "indicator": indicator,
        "source": {
            "label": "x",
            "topic": {"system": "urn:magnesium-aki-cds:rule", "code": rules[0]},
        },
        "extension": {"magnesium-aki": {"rules": rules, "aki_stage": 1}},
    }


def count(st: Store, model: type[Base]) -> int:
    with st.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def accepted(card_uuid: str = CARD_1, stamp: str = "2021-12-11T10:05:31Z") -> dict[str, Any]:
    return {
        "card": card_uuid,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
        "outcomeTimestamp": stamp,
    }


def test_migrate_reaches_head_and_is_repeatable(db_url: str) -> None:
    assert current_revision(db_url) is None
    migrate(db_url)
    migrate(db_url)
    scripts = ScriptDirectory.from_config(alembic_config(db_url))
    assert current_revision(db_url) == scripts.get_current_head()
    assert "0001" in {s.revision for s in scripts.walk_revisions()}
    tables = set(inspect(engine_for(db_url)).get_table_names())
    assert {"cds_card", "cds_feedback", "jwt_jti", "alembic_version"} <= tables


def test_concurrent_migrations_from_several_processes(db_url: str) -> None:
    # make run starts the web server and the MLLP listener together: both may migrate
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(3, mp_context=context) as pool:
        list(pool.map(migrate, [db_url] * 3))
    assert current_revision(db_url) is not None


def test_models_match_migrations(db_url: str) -> None:
    migrate(db_url)
    with engine_for(db_url).connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_constraint_names_follow_the_convention(db_url: str) -> None:
    migrate(db_url)
    insp = inspect(engine_for(db_url))
    uniques = {u["name"] for u in insp.get_unique_constraints("cds_feedback")}
    assert "uq_cds_feedback_card_uuid_outcome_outcome_timestamp" in uniques
    indexes = {i["name"] for i in insp.get_indexes("cds_card")}
    assert {"ix_cds_card_hook_instance", "ix_cds_card_patient_hash"} <= indexes


def test_sqlite_parent_folder_created_and_wal(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "new" / "deeper")
    try:
        migrate(url)
        assert (tmp_path / "new" / "deeper" / "var" / "cds_service.db").is_file()
        with engine_for(url).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0) >= 1000
    finally:
        dispose_engine(url)


def test_card_log_commits_without_fsync_everything_else_with(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate(url)
    st = open_store(url, SECRET)
    try:
        st.record_cards("h", "svc", None, [card(CARD_1, ["r"])])
        with engine_for(url).connect() as durable, engine_for(url, durable=False).connect() as log:
            assert durable.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert log.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert log.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert [r.uuid for r in st.cards_for("h")] == [CARD_1]  # visible to the durable Engine
    finally:
        dispose_engine(url)
    assert engine_for("sqlite://", durable=False) is engine_for("sqlite://")  # one in-memory db


def test_one_engine_per_url(db_url: str) -> None:
    assert engine_for(db_url) is engine_for(db_url)
    assert open_store(db_url, SECRET).engine is engine_for(db_url)


def test_record_cards_reads_rules_and_lead(store: Store) -> None:
    cards = [card(CARD_1, ["mg-low-icu", "mg-low-general"]), card(CARD_2, ["mg-high"], "info")]
    store.record_cards("hook-1", "magnesium-aki-patient-view", "Patient/123", cards)
    rows = {r.uuid: r for r in store.cards_for("hook-1")}
    assert rows[CARD_1].rule_ids == ["mg-low-icu", "mg-low-general"]
    assert rows[CARD_1].lead_rule == "mg-low-icu"
    assert rows[CARD_1].indicator == "warning"
    assert rows[CARD_2].indicator == "info"
    assert rows[CARD_1].service_id == "magnesium-aki-patient-view"
    assert rows[CARD_1].created_at.tzinfo is not None


def test_record_cards_tolerates_odd_cards_and_repeats(store: Store) -> None:
    cards = [{"summary": "no uuid"}, {"uuid": CARD_1}, card(CARD_2, ["r"])]
    store.record_cards("h", "svc", None, cards)
    store.record_cards("h", "svc", None, cards)
    rows = {r.uuid: r for r in store.cards_for("h")}
    assert set(rows) == {CARD_1, CARD_2}
    assert rows[CARD_1].rule_ids == [] and rows[CARD_1].lead_rule is None
    assert rows[CARD_2].patient_hash is None


def test_feedback_is_idempotent(store: Store) -> None:
    assert store.save_feedback("svc", accepted()) is True
    assert store.save_feedback("svc", accepted()) is False
    # the same instant written another way is the same feedback
    assert store.save_feedback("svc", accepted(stamp="2021-12-11T11:05:31+01:00")) is False
    assert store.save_feedback("svc", accepted(card_uuid=CARD_1.upper())) is False
    assert store.save_feedback("svc", accepted(stamp="2021-12-11T10:05:32Z")) is True
    overridden = {
        "card": CARD_1,
        "outcome": "overridden",
        "outcomeTimestamp": "2021-12-11T10:05:31Z",
    }
    assert store.save_feedback("svc", overridden) is True
    assert count(store, Feedback) == 3


def test_feedback_keeps_override_reason_and_suggestions(store: Store) -> None:
    item = {
        "card": CARD_2,
        "outcome": "overridden",
        "overrideReason": {
            "reason": {"code": "d7ecf885", "system": "https://example.com/o", "display": "Seen"},
            "userComment": "A comment entered by the clinician.",
        },
        "outcomeTimestamp": "2020-12-11T00:00:00Z",
    }
    store.save_feedback("magnesium-aki-order-sign", item)
    store.save_feedback("svc", accepted())
    with store.engine.connect() as conn:
        rows = {r.card_uuid: r for r in conn.execute(select(Feedback))}
    row = rows[CARD_2]
    assert (row.override_code, row.override_system, row.override_display) == (
        "d7ecf885",
        "https://example.com/o",
        "Seen",
    )
    assert row.user_comment == "A comment entered by the clinician."
    assert row.accepted_suggestions == []
    assert row.service_id == "magnesium-aki-order-sign"
    assert rows[CARD_1].accepted_suggestions == ["e56e1945-20b3-4393-8503-a1a20fd73152"]
    assert rows[CARD_1].override_code is None


def test_jti_replay_detected(store: Store) -> None:
    exp = datetime.now(UTC) + timedelta(minutes=5)
    assert store.seen_jti("https://ehr.example/", "jti-1", exp) is False
    assert store.seen_jti("https://ehr.example/", "jti-1", exp) is True
    assert store.seen_jti("https://other.example/", "jti-1", exp) is False


def test_jti_insert_is_atomic_under_concurrency(store: Store) -> None:
    exp = datetime.now(UTC) + timedelta(minutes=5)
    results: list[bool] = []
    lock = threading.Lock()

    def attempt() -> None:
        seen = store.seen_jti("iss", "same-jti", exp)
        with lock:
            results.append(seen)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] + [True] * 7


def test_expired_jti_rows_are_cleaned(store: Store) -> None:
    now = datetime.now(UTC)
    store.seen_jti("iss", "old", now - timedelta(hours=2))
    store.seen_jti("iss", "recent", now - timedelta(minutes=1))  # within the grace period
    store.seen_jti("iss", "live", now + timedelta(minutes=5))
    assert store.purge_jti() == 1
    with store.engine.connect() as conn:
        assert sorted(conn.execute(select(JwtJti.jti)).scalars()) == ["live", "recent"]


def test_purge_removes_rows_past_retention(store: Store) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=500)
    old = Store(store.engine, SECRET, clock=lambda: long_ago)
    old.record_cards("h-old", "svc", "p1", [card(CARD_1, ["r"])])
    old.save_feedback("svc", accepted(CARD_1))
    store.record_cards("h-new", "svc", "p1", [card(CARD_2, ["r"])])
    store.save_feedback("svc", accepted(CARD_2))
    counts = store.purge(400)
    assert counts["cds_card"] == 1 and counts["cds_feedback"] == 1
    assert [r.uuid for r in store.cards_for("h-new")] == [CARD_2]
    assert store.cards_for("h-old") == []
    assert count(store, Feedback) == 1


def test_patient_id_is_stored_only_as_keyed_hash(store: Store, db_url: str) -> None:
    store.record_cards("h", "svc", f"Patient/{CLEAR_PATIENT}", [card(CARD_1, ["r"])])
    store.record_cards("h2", "svc", CLEAR_PATIENT, [card(CARD_2, ["r"])])
    expected = hmac.new(SECRET.encode(), CLEAR_PATIENT.encode(), hashlib.sha256).hexdigest()
    hashes = {r.patient_hash for r in store.cards_for("h") + store.cards_for("h2")}
    assert hashes == {expected}
    assert open_store(db_url, "another-secret").hash_id(CLEAR_PATIENT) != expected
    with store.engine.connect() as conn:
        dumped = " ".join(
            str(row)
            for table in Base.metadata.sorted_tables
            for row in conn.execute(select(table)).all()
        )
    assert CLEAR_PATIENT not in dumped
    if db_url.startswith("sqlite"):
        path = Path(store.engine.url.database or "")
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert CLEAR_PATIENT.encode() not in raw
        assert expected.encode() in raw  # the hash itself did reach the files
    else:
        with store.engine.connect() as conn:
            text_dump = conn.execute(
                text("SELECT string_agg(t::text, ' ') FROM cds_card t")
            ).scalar_one()
        assert CLEAR_PATIENT not in text_dump and expected in text_dump


def test_ping(store: Store) -> None:
    assert store.ping() is True


def test_ping_false_when_database_unreachable() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1"
    try:
        assert open_store(url, SECRET).ping() is False
    finally:
        dispose_engine(url)


def test_card_record_model_is_typed() -> None:
    assert CardRecord.__tablename__ == "cds_card"
    assert CardRecord.retention_column == "created_at"
    assert JwtJti.retention_column is None
