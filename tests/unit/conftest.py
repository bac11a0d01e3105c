"""Shared fixtures for unit tests: the real mappings/ folder, loaded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge
from tests.dbsupport import db_url, pg_schema_url, store  # noqa: F401 - shared DB fixtures
from tests.hl7support import ing  # noqa: F401 - shared HL7 v2 ingestor fixture

ROOT = Path(__file__).parents[2]
MAPPINGS = ROOT / "mappings"
SITE = MAPPINGS / "site" / "example.yaml"


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    """The real mappings/ with the example site file."""
    return load_knowledge(MAPPINGS, site=SITE)
