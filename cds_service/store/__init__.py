"""Persistence (SQLAlchemy 2 + Alembic): ``migrate(url)``, then ``open_store(url, secret)``."""

from __future__ import annotations

import importlib
import pkgutil

from cds_service.store.engine import dispose_engine, engine_for
from cds_service.store.migrate import alembic_config, current_revision, migrate
from cds_service.store.models import Base, CardRecord, Feedback, JwtJti
from cds_service.store.store import Store, open_store, parse_instant


def _import_model_modules() -> None:
    """Register every ``*models`` module of this package on Base (migrations, purge)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name == "models" or info.name.endswith("_models"):
            importlib.import_module(f"{__name__}.{info.name}")


_import_model_modules()

__all__ = [
    "Base",
    "CardRecord",
    "Feedback",
    "JwtJti",
    "Store",
    "alembic_config",
    "current_revision",
    "dispose_engine",
    "engine_for",
    "migrate",
    "open_store",
    "parse_instant",
]
