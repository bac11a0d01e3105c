"""``POST /hl7v2``: one HL7 v2 message over HTTP; the ACK (ER7), or JSON with the cards."""

from __future__ import annotations

import codecs
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from cds_service.events.app_state import app_singleton, authorise_events
from cds_service.events.ingest import Ingestor, Outcome
from cds_service.hooks.errors import BadRequest, UnsupportedMediaType
from cds_service.web.body import read_body

bp = Blueprint("hl7v2", __name__)
MEDIA_TYPES = frozenset(
    {"text/plain", "application/hl7-v2", "application/hl7-v2+er7", "x-application/hl7-v2+er7",
     "application/edi-hl7", "application/octet-stream", ""}
)  # fmt: skip
EXTENSION = "cds_events"


def ingestor() -> Ingestor:
    """The app's Ingestor, built once from its settings and knowledge (database migrated)."""

    def build() -> Ingestor:
        from cds_service.events.service import build_ingestor

        state = current_app.extensions["cds"]
        return build_ingestor(state.settings, knowledge=state.knowledge)

    return app_singleton(EXTENSION, build)


def _charset() -> str:
    charset = request.mimetype_params.get("charset", "")
    try:
        return codecs.lookup(charset).name if charset else ""
    except LookupError:
        return ""


def _cards(outcome: Outcome) -> list[dict[str, Any]]:
    """Cards for the advice this message issued (none in shadow mode or for a duplicate)."""
    state = current_app.extensions["cds"]
    if state.settings.shadow:
        return []
    locale = request.accept_languages.best_match(["en", "zh-CN"]) or state.settings.locale
    cards: list[dict[str, Any]] = []
    for ev in outcome.evaluations:
        cards.extend(state.cards.cards(ev.advice, ev.snapshot, locale, ev.now))
    return cards


@bp.post("/hl7v2")
def receive() -> Response:
    """Handle one ER7 message; the ACK in ER7, or ``{"ack", "cards"}`` for Accept JSON."""
    authorise_events()
    if request.mimetype not in MEDIA_TYPES and not request.mimetype.startswith("text/"):
        raise UnsupportedMediaType("send the message as text/plain or application/hl7-v2")
    raw = read_body(current_app.extensions["cds"].settings.max_body_bytes)
    if not raw.strip():
        raise BadRequest("send one HL7 v2 message (ER7) as the body", expression=["body"])
    outcome = ingestor().handle(raw, "http", charset=_charset())
    if outcome.advice:
        from cds_service.events.fhir_notify import delivery_loop

        running = delivery_loop()
        if running is not None:
            running.kick()
    best = request.accept_mimetypes.best_match(["application/hl7-v2", "application/json"])
    if best == "application/json":
        return jsonify({"ack": outcome.ack, "cards": _cards(outcome)})
    response = Response(outcome.ack_bytes, status=200)
    response.headers["Content-Type"] = f"application/hl7-v2; charset={outcome.codec}"
    return response
