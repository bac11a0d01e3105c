"""The Flask app factory: ``create_app(config=None)``; the state every request shares."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

import requests
from flask import Flask

from cds_service.config import ConfigError, Settings
from cds_service.events.fhir_notify import bp as fhir_notify_bp
from cds_service.events.http import bp as hl7v2_bp
from cds_service.hooks.auth import JwtVerifier
from cds_service.hooks.errors import register_error_handlers
from cds_service.hooks.feedback import bp as feedback_bp
from cds_service.hooks.fhir_client import new_session
from cds_service.hooks.routes import bp as hooks_bp
from cds_service.hooks.services import ServiceDef, load_services
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge
from cds_service.store import Store, open_store
from cds_service.web.cors import init_cors
from cds_service.web.docs import bp as docs_bp
from cds_service.web.metrics import init_metrics
from cds_service.web.ops import bp as ops_bp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceState:
    """What requests share (``app.extensions["cds"]``): all read-only or thread-safe."""

    settings: Settings
    knowledge: Knowledge
    services: dict[str, ServiceDef]
    store: Store
    verifier: JwtVerifier | None
    session: requests.Session
    cards: CardRenderer
    tz: tzinfo


def build_state(settings: Settings) -> ServiceState:
    """Load and validate mappings and services, open the store, build the verifier.

    :raises MappingError: invalid mappings or service files (the file is named).
    :raises ConfigError: an unusable setting.
    """
    root = Path(settings.mappings)
    knowledge = load_knowledge(root, settings.site_path)
    services = load_services(root / "services", knowledge)
    tz: tzinfo = settings.zone()
    if settings.auth == "jwt" and not settings.secret:
        raise ConfigError("CDS_SECRET must be set with CDS_AUTH=jwt (it keys identifier hashes)")
    store = open_store(settings.database_url, settings.secret)
    verifier = JwtVerifier(settings, store) if settings.auth == "jwt" else None
    return ServiceState(
        settings=settings,
        knowledge=knowledge,
        services=services,
        store=store,
        verifier=verifier,
        session=new_session(),
        cards=CardRenderer(knowledge, OrderCodes(root / "orders.yaml")),
        tz=tz,
    )


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The WSGI app: settings from ``config`` (tests) or the ``CDS_*`` environment.

    :raises MappingError: invalid mappings or service files.
    :raises ConfigError: an unusable setting.
    """
    settings = Settings.from_env() if config is None else Settings.from_mapping(config)
    state = build_state(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.extensions["cds"] = state
    register_error_handlers(app)
    init_metrics(app, frozenset(state.services))
    init_cors(app, settings.cors_origins)
    for bp in (hooks_bp, feedback_bp, hl7v2_bp, fhir_notify_bp, docs_bp, ops_bp):
        app.register_blueprint(bp)
    if settings.auth == "off":
        log.warning("CDS_AUTH=off: CDS Hooks calls are not authenticated (local use only)")
    if settings.shadow:
        log.warning("CDS_SHADOW=1: advice is evaluated and recorded, no cards are returned")
    return app
