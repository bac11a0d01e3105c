"""Wiring: an ``Ingestor`` from ``Settings`` (database migrated, mappings loaded and validated)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from cds_service.clinical.fhir_labs import lab_table
from cds_service.config import Settings
from cds_service.events.advise import Policy
from cds_service.events.hl7_config import load_hl7_maps
from cds_service.events.ingest import Ingestor
from cds_service.events.process import Deps
from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge
from cds_service.store import migrate, open_store

HL7_MAPPINGS = "hl7v2.yaml"


def build_ingestor(
    settings: Settings, *, knowledge: Knowledge | None = None, migrate_db: bool = True
) -> Ingestor:
    """The HL7 v2 message handler for these settings.

    :raises ConfigError: an unknown ``CDS_TIMEZONE``.
    :raises MappingError: invalid mappings (the file and the field are named).
    """
    tz = settings.zone()
    root = Path(settings.mappings)
    knowledge = knowledge or load_knowledge(root, settings.site_path)
    maps = load_hl7_maps(root / HL7_MAPPINGS)
    if migrate_db:
        migrate(settings.database_url)
    store = open_store(settings.database_url, settings.secret)
    policy = Policy(
        channels=settings.outbound,
        max_age=timedelta(hours=settings.max_result_age_hours),
        shadow=settings.shadow,
        locale=settings.locale,
    )
    deps = Deps(knowledge, maps, lab_table(knowledge), tz, store.hash_id, policy)
    return Ingestor(
        store.engine, deps, encoding=settings.hl7_encoding, max_bytes=settings.max_body_bytes
    )
