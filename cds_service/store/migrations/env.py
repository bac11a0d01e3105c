"""Alembic environment: runs on the connection passed by ``store.migrate``, or on the URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

import cds_service.store  # noqa: F401 - registers every *models module on Base
from cds_service.store.models import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    """Run the migrations online (offline SQL generation is not supported)."""
    if context.is_offline_mode():
        raise RuntimeError("offline migrations are not supported; use cds-service migrate")
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


run()
