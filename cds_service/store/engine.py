"""One SQLAlchemy Engine per database URL per process (SQLite WAL, PostgreSQL pre-ping).

A file SQLite database has a second, *relaxed* Engine per process for writes that may be
lost in a power failure but not in a killed process (the card log): its connections run
``synchronous=NORMAL`` and commit without an fsync. Everything else (HL7 messages and their
ACKs, feedback, JWT ids) goes through the durable Engine (``synchronous=FULL``).

Text is stored alike on every backend: PostgreSQL cannot store U+0000 in text, so every
statement's string parameters have it replaced by U+FFFD (the Unicode replacement character,
the recorded marker) on every database, before the driver sees them (``without_nul``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_MS = 10_000
NUL, MARKER = "\x00", "\ufffd"

log = logging.getLogger(__name__)

_ENGINES: dict[tuple[str, bool], Engine] = {}  # (url, durable)
_LOCK = threading.Lock()


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; None for other backends or in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database)


def _sqlite_pragmas(synchronous: str) -> Callable[[Any, Any], None]:
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    return set_pragmas


def _create(url: str, durable: bool) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, pool_recycle=1800)
    path = sqlite_path(url)
    if path is None:
        engine = create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_MS / 1000})
    # FULL: an ACKed HL7 message survives power loss (WAL fsync at every commit).
    event.listen(engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL"))
    return engine


def engine_for(url: str, *, durable: bool = True) -> Engine:
    """The process-wide Engine of ``url`` (created on first use).

    ``durable=False``: the relaxed Engine of a file SQLite database (see the module text);
    for every other database it is the durable Engine itself (in-memory SQLite must share
    its one connection; PostgreSQL commits are group-committed by the server).
    """
    durable = durable or sqlite_path(url) is None
    with _LOCK:
        engine = _ENGINES.get((url, durable))
        if engine is None:
            engine = _ENGINES[url, durable] = _create(url, durable)
        return engine


def dispose_engine(url: str) -> None:
    """Close the pools of ``url`` and forget its Engines."""
    with _LOCK:
        engines = [_ENGINES.pop((url, durable), None) for durable in (True, False)]
    for engine in engines:
        if engine is not None:
            engine.dispose()


def _clean(params: Any) -> tuple[Any, int]:
    """``params`` with U+0000 replaced in its strings, and how many strings changed."""
    if isinstance(params, dict):
        if not any(type(v) is str and NUL in v for v in params.values()):
            return params, 0
        changed = sum(1 for v in params.values() if type(v) is str and NUL in v)
        return {k: _clean_value(v) for k, v in params.items()}, changed
    if isinstance(params, tuple):
        if not any(type(v) is str and NUL in v for v in params):
            return params, 0
        changed = sum(1 for v in params if type(v) is str and NUL in v)
        return tuple(_clean_value(v) for v in params), changed
    if isinstance(params, list):  # executemany: one dict or tuple per row
        rows = [_clean(row) for row in params]
        return [row for row, _ in rows], sum(n for _, n in rows)
    return params, 0


def _clean_value(value: Any) -> Any:
    return value.replace(NUL, MARKER) if type(value) is str else value


def without_nul(
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> tuple[str, Any]:
    """``before_cursor_execute``: U+0000 in string parameters becomes U+FFFD, on every backend."""
    cleaned, changed = _clean(parameters)
    if changed:
        log.warning("stored text: U+0000 replaced by U+FFFD in %d value(s)", changed)
    return statement, cleaned


event.listen(Engine, "before_cursor_execute", without_nul, retval=True)


def _after_fork() -> None:
    # A forked worker must not reuse the parent's connections (gunicorn --preload).
    for engine in list(_ENGINES.values()):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_after_fork)
