"""Database fixtures: ``db_url`` runs a test on SQLite and on PostgreSQL (when reachable)."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import make_url

from cds_service.store import Store, dispose_engine, migrate, open_store

PG_URL = os.environ.get(
    "CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
SECRET = "unit-test-secret"


def _pg_connect() -> psycopg.Connection[tuple[object, ...]]:
    url = make_url(PG_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        dbname=url.database,
        connect_timeout=3,
        autocommit=True,
    )


@functools.cache
def postgres_unavailable() -> str | None:
    """Why the test PostgreSQL cannot be used, or None when it can."""
    url = make_url(PG_URL)
    try:
        with _pg_connect():
            pass
    except Exception as exc:
        return f"PostgreSQL not reachable at {url.host}:{url.port or 5432} ({type(exc).__name__})"
    return None


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema (dropped afterwards)."""
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    text = url.render_as_string(hide_password=False)
    try:
        yield text
    finally:
        dispose_engine(text)
        with _pg_connect() as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def sqlite_url(folder: Path) -> str:
    """A SQLite URL of a file in a not-yet-existing sub-folder of ``folder``."""
    return f"sqlite:///{folder / 'var' / 'cds_service.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, once on SQLite (tmp file) and once on PostgreSQL (own schema)."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        yield url
        dispose_engine(url)
    else:
        yield request.getfixturevalue("pg_schema_url")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated Store on ``db_url``."""
    migrate(db_url)
    st = open_store(db_url, SECRET)
    yield st
    st.close()
