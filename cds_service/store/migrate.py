"""Programmatic Alembic: ``migrate(url)`` upgrades a database to the newest revision."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text

from cds_service.store.engine import engine_for, sqlite_path

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_PG_LOCK_KEY = 0x0CD5_0A1E  # pg_advisory_xact_lock key: one migrator at a time


def alembic_config(url: str) -> Config:
    """An Alembic Config for ``url`` (also for ``command.revision`` when writing a migration)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _upgrade(connection: Connection, cfg: Config, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (safe to run from several processes)."""
    cfg = alembic_config(url)
    with _file_lock(sqlite_path(url)), engine_for(url).begin() as connection:
        _upgrade(connection, cfg, revision)


def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at (None before the first migration)."""
    from alembic.runtime.migration import MigrationContext

    with engine_for(url).connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
