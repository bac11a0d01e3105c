"""The event tables: migration 0002 matches the models, indexes serve the history, retention."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Table, text

from cds_service.events.retention import purge_events
from cds_service.store import current_revision, dispose_engine, engine_for
from cds_service.store.events_models import (
    AdviceIssued,
    AdvicePush,
    EncounterRow,
    Hl7Message,
    IcuStayRow,
    LabResultRow,
    OutboxRow,
    Patient,
)
from cds_service.store.models import Base
from tests.hl7support import ARRIVAL, count, fixture, make_ingestor

EVENT_TABLES = {
    "patient", "hl7_message", "lab_result", "encounter", "icu_stay", "diagnosis", "procedure",
    "advice_issued", "outbox", "advice_push",
}  # fmt: skip


def _table_of(diff: object) -> str | None:
    """The table an autogenerate diff entry is about."""
    item = diff[0] if isinstance(diff, list) else diff
    for part in item[1:] if isinstance(item, tuple) else ():
        name = getattr(part, "name", None) if not isinstance(part, str) else None
        table = getattr(part, "table", None)
        if table is not None:
            return str(table.name)
        if name is not None and hasattr(part, "columns"):
            return str(name)
        if isinstance(part, str):
            return part
    return None


EVENT_TABLES = {
    "patient", "hl7_message", "lab_result", "encounter", "icu_stay", "diagnosis", "procedure",
    "advice_issued", "outbox", "advice_push",
}  # fmt: skip


def _table_of(diff: Any) -> str:
    """The table an autogenerate diff entry is about."""
    item = diff[0] if isinstance(diff, list) else diff
    target = item[1]
    if isinstance(target, Table):
        return str(target.name)
    if hasattr(target, "table"):  # Index, constraints
        return str(target.table.name)
    return str(item[2])  # (op, schema, table, ...)


def test_migration_matches_the_models(db_url: str) -> None:
    make_ingestor(db_url)  # migrates
    assert (current_revision(db_url) or "") >= "0002"
    assert EVENT_TABLES <= set(Base.metadata.tables)
    with engine_for(db_url).connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = [d for d in compare_metadata(context, Base.metadata) if _table_of(d) in EVENT_TABLES]
    assert diff == []
    dispose_engine(db_url)


def test_history_lookup_uses_the_patient_kind_time_index(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    make_ingestor(url)
    query = (
        "EXPLAIN QUERY PLAN SELECT * FROM lab_result WHERE patient_id = 1 AND kind IN "
        "('serum-mg', 'creatinine') AND time >= '2024-01-01' AND time <= '2024-05-01'"
    )
    with engine_for(url).connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.execute(text(query)))
    assert "ix_lab_result_patient_kind_time" in plan
    dispose_engine(url)


def test_retention_purges_old_rows_only(db_url: str) -> None:
    ing = make_ingestor(db_url)
    for name in ("adt_a04_register_ed.hl7", "adt_a02_to_icu.hl7", "oru_mg_low_icu.hl7",
                 "oru_correction_c.hl7", "adt_a03_discharge.hl7",
                 "oru_mg_sn_lessthan.hl7"):  # another patient: advice pushed, not withdrawn  # fmt: skip
        assert ing.handle(fixture(name)).code == "AA"
    assert count(ing, OutboxRow) and count(ing, IcuStayRow) and count(ing, AdvicePush)
    assert purge_events(ing.engine, 400, ARRIVAL) == {
        "outbox": 0, "advice_push": 0, "advice_issued": 0, "lab_result": 0, "hl7_message": 0,
        "icu_stay": 0, "encounter": 0, "medication_administration": 0,
    }  # fmt: skip
    later = ARRIVAL + timedelta(days=403)  # the discharge (2 days after arrival) is 401 days old
    counts = purge_events(ing.engine, 400, later)
    assert counts["lab_result"] == 4 and counts["hl7_message"] == 6 and counts["encounter"] == 3
    for model in (LabResultRow, Hl7Message, AdviceIssued, AdvicePush, OutboxRow, EncounterRow,
                  IcuStayRow):  # fmt: skip
        assert count(ing, model) == 0, model.__tablename__
    assert count(ing, Patient) == 3  # identities stay; their history is gone
    dispose_engine(db_url)
