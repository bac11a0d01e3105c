"""Helpers for the HL7 v2 tests: fixtures on disk, an Ingestor on a test database, queries."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cds_service.config import Settings
from cds_service.events.ingest import Ingestor
from cds_service.events.service import build_ingestor
from cds_service.store import dispose_engine
from cds_service.store.events_models import AdviceIssued, OutboxRow
from tests.shared_data import SHARED

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "hl7"
CORPUS = SHARED / "data/hl7v2-samples"
MIMIC = SHARED / "data/mimic-iv-demo-meds"
SITE = ROOT / "mappings" / "site" / "example.yaml"
ARRIVAL = datetime(2024, 5, 10, 9, 30, tzinfo=UTC)  # the fixtures' results were taken at 08:00


def settings_for(url: str, **extra: Any) -> Settings:
    """Settings for a test database, with the example site mapping and the hl7 channel."""
    values: dict[str, Any] = {
        "CDS_DATABASE_URL": url,
        "CDS_SITE_MAPPINGS": str(SITE),
        "CDS_OUTBOUND": "hl7",
        "CDS_SECRET": "test-secret",
        "CDS_AUTH": "off",
    }
    values.update(extra)
    return Settings.from_mapping(values)


def make_ingestor(url: str, clock: Callable[[], datetime] | None = None, **extra: Any) -> Ingestor:
    """A migrated Ingestor whose clock reads ``ARRIVAL`` (or ``clock``)."""
    ingestor = build_ingestor(settings_for(url, **extra))
    ingestor.clock = clock or (lambda: ARRIVAL)
    return ingestor


def fixture(name: str) -> bytes:
    """A raw fixture message (CR separators)."""
    return (FIXTURES / name).read_bytes()


def msa(ack: str) -> list[str]:
    """The MSA fields of an ACK (index 1 = MSA-1)."""
    for seg in ack.replace("\n", "\r").split("\r"):
        if seg.startswith("MSA"):
            return seg.split(seg[3])
    raise AssertionError("no MSA segment")


def segment(ack: str, name: str) -> list[str] | None:
    """The fields of the first segment ``name`` of a message, or None."""
    for seg in ack.replace("\n", "\r").split("\r"):
        if seg.startswith(name):
            return seg.split("|")
    return None


def count(ingestor: Ingestor, model: Any, *where: Any) -> int:
    """Rows of ``model`` matching ``where``."""
    with Session(ingestor.engine) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def rows(ingestor: Ingestor, model: Any, *where: Any) -> list[Any]:
    """Rows of ``model`` matching ``where`` (detached, ordered by id)."""
    with Session(ingestor.engine, expire_on_commit=False) as session:
        found = list(session.scalars(select(model).where(*where).order_by(model.id)))
        session.expunge_all()
        return found


def advice_rules(ingestor: Ingestor) -> list[str]:
    """Lead rule ids of all advice issued, in order."""
    return [a.rule_id for a in rows(ingestor, AdviceIssued)]


def outbox_count(ingestor: Ingestor) -> int:
    """Outbox rows of every kind."""
    return count(ingestor, OutboxRow)


@contextmanager
def listener(url: str, **env: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """``cds-service mllp`` on a free port as a child process: (process, port)."""
    cli = ROOT / ".venv" / "bin" / "cds-service"
    command = (
        [str(cli), "mllp"] if cli.exists() else [sys.executable, "-m", "cds_service.cli", "mllp"]
    )
    full = {**os.environ, "CDS_DATABASE_URL": url, "CDS_MLLP_PORT": "0", "CDS_SITE_MAPPINGS": str(SITE),
            **env}  # fmt: skip
    proc = subprocess.Popen(
        command, env=full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r":(\d+)$", line.strip())
        assert match, f"listener did not start: {line!r}"
        yield proc, int(match.group(1))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.fixture
def ing(db_url: str) -> Iterator[Ingestor]:
    """An HL7 v2 Ingestor on ``db_url`` (SQLite, and PostgreSQL when reachable)."""
    ingestor = make_ingestor(db_url)
    yield ingestor
    dispose_engine(db_url)
