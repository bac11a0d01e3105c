"""Fixtures of the hardening suite: the service on SQLite and on PostgreSQL (one per module)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import make_url

from cds_service.app import create_app
from cds_service.store import dispose_engine, migrate
from tests.dbsupport import PG_URL, _pg_connect, postgres_unavailable, sqlite_url
from tests.hardening_ids import EVENTS_TOKEN, SECRET
from tests.hl7support import SITE


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hardening_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database for one module: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("hardening"))
        migrate(url)
        yield url
        dispose_engine(url)
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with _pg_connect() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    text = url.render_as_string(hide_password=False)
    try:
        migrate(text)
        yield text
    finally:
        dispose_engine(text)
        with _pg_connect() as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def app(hardening_db: str) -> Flask:
    """The service (hook auth off, events token on) on the module's database."""
    return create_app({
        "CDS_DATABASE_URL": hardening_db, "CDS_AUTH": "off", "CDS_SECRET": SECRET,
        "CDS_EVENTS_TOKEN": EVENTS_TOKEN, "CDS_SITE_MAPPINGS": str(SITE), "CDS_OUTBOUND": "",
    })  # fmt: skip


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of ``app``."""
    return app.test_client()


