"""CDS Hooks HTTP: discovery and service invocation (validate, auth, prefetch, evaluate, render)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request

from cds_service.clinical.fhir_extract import snapshot_from_cds_request
from cds_service.hooks.auth import AuthError, expected_audience
from cds_service.hooks.errors import (
    PreconditionFailed,
    ServiceNotFound,
    Unauthorized,
    operation_outcome,
)
from cds_service.hooks.prefetch import PrefetchOutcome, PrefetchRequired, resolve_prefetch
from cds_service.hooks.request import (
    check_content_type,
    check_size,
    negotiate_locale,
    parse_request,
)
from cds_service.hooks.services import ServiceDef, discovery
from cds_service.rules.engine import evaluate
from cds_service.web.body import read_body

if TYPE_CHECKING:
    from cds_service.app import ServiceState

log = logging.getLogger(__name__)
bp = Blueprint("hooks", __name__)


def state() -> ServiceState:
    """The service state of the running app."""
    st: ServiceState = current_app.extensions["cds"]
    return st


@bp.get("/cds-services")
def discovery_view() -> Response:
    """GET /cds-services: the four services with their prefetch templates."""
    return jsonify(discovery(state().services))


@bp.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    """POST /cds-services/{id}: evaluate one hook call and answer ``{"cards": [...]}``."""
    st = state()
    service = st.services.get(service_id)
    if service is None:
        raise ServiceNotFound(f"No CDS service {service_id!r}", expression=["id"])
    check_size(request.content_length, st.settings.max_body_bytes)
    authenticate(st, request.headers.get("Authorization"))
    check_content_type(request.content_type)
    body = parse_request(read_body(st.settings.max_body_bytes), service)
    outcome = _prefetch(st, body, service)
    now = datetime.now(UTC)
    snapshot = snapshot_from_cds_request(
        snapshot_request(body, outcome), st.knowledge, tz=st.tz, now=now
    )
    advice = evaluate(st.knowledge, snapshot, now)
    locale = negotiate_locale(request.headers.get("Accept-Language"), st.settings.locale)
    cards = st.cards.cards(advice, snapshot, locale, now)
    _record(st, body, service, snapshot.patient_id, cards)
    if outcome.bad_resources:
        log.info("%s: %d bad prefetch resources skipped", service.id, outcome.bad_resources)
    return jsonify({"cards": [] if st.settings.shadow else cards})


def authenticate(st: ServiceState, header: str | None) -> None:
    """Verify the CDS client JWT when ``CDS_AUTH=jwt`` (audience: CDS_AUDIENCE or the URL).

    :raises Unauthorized: no token, or a token that does not verify (no detail given).
    """
    if st.verifier is None:
        return
    try:
        st.verifier.verify(header, expected_audience(st.settings, request.base_url))
    except AuthError:
        raise Unauthorized("Authentication required") from None


def _prefetch(st: ServiceState, body: dict[str, Any], service: ServiceDef) -> PrefetchOutcome:
    try:
        return resolve_prefetch(body, service, st.settings, st.session)
    except PrefetchRequired as exc:
        keys = ", ".join(exc.keys)
        raise PreconditionFailed(
            f"Required data unavailable: {keys} (neither prefetched nor obtainable"
            " from an allowlisted fhirServer)",
            diagnostics=exc.reason,
            expression=[f"prefetch.{k}" for k in exc.keys],
        ) from None


def snapshot_request(body: dict[str, Any], outcome: PrefetchOutcome) -> dict[str, Any]:
    """The request as the extractor reads it: resolved prefetch, unobtainable keys marked."""
    prefetch: dict[str, Any] = dict(outcome.prefetch)
    for key in outcome.missing:
        prefetch[key] = operation_outcome("not-found", f"{key} unobtainable")
    return {**body, "prefetch": prefetch}


def _record(
    st: ServiceState,
    body: dict[str, Any],
    service: ServiceDef,
    patient_id: str,
    cards: list[dict[str, Any]],
) -> None:
    """Record the cards for feedback joins; a store failure never withholds advice."""
    try:
        st.store.record_cards(body["hookInstance"], service.id, patient_id or None, cards)
    except Exception as exc:
        log.error("%s: cards not recorded (%s)", service.id, type(exc).__name__)
