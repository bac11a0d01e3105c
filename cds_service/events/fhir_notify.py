"""``POST /fhir/notifications``: the FHIR Subscription rest-hook endpoint (every form).

Bearer ``CDS_EVENTS_TOKEN`` (constant-time) unless ``CDS_AUTH=off``; body limited to
``CDS_MAX_BODY_BYTES``; FHIR JSON (or an empty body). Answers 200 with a small JSON summary
(no identifiers); 400/401/413/415 as OperationOutcome; 503 when ``CDS_FHIR_BASE`` cannot be
read (the sender retries; the subscription state is not advanced, so a gap re-queries).
Queued advice is handed to this process's delivery thread right after the commit.
"""

from __future__ import annotations

import json
import logging

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from cds_service.clinical import numbers
from cds_service.events.app_state import app_singleton, authorise_events
from cds_service.events.fhir_events import FhirEvents, Transient
from cds_service.events.fhir_notify_forms import BadNotification, parse_notification
from cds_service.events.outbound import DeliveryLoop
from cds_service.hooks.errors import (
    BadRequest,
    HookError,
    PayloadTooLarge,
    UnsupportedMediaType,
)

bp = Blueprint("fhir_notifications", __name__)
log = logging.getLogger("cds_service.events.fhir")
EXTENSION = "cds_fhir_events"
LOOP = "cds_outbox_loop"
MEDIA_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir", ""})


class ServiceUnavailable(HookError):
    """503: the FHIR server could not be read; the notification should be sent again."""

    status, issue_code = 503, "transient"


def delivery_loop() -> DeliveryLoop | None:
    """This process's delivery thread (None when no outbound channel is configured)."""
    state = current_app.extensions["cds"]
    if not state.settings.outbound:
        return None
    return app_singleton(LOOP, lambda: DeliveryLoop(state.store.engine, state.settings).start())


def handler() -> FhirEvents:
    """The app's notification handler (database migrated on first use)."""

    def build() -> FhirEvents:
        from cds_service.store import migrate

        state = current_app.extensions["cds"]
        migrate(state.settings.database_url)
        app = current_app._get_current_object()  # type: ignore[attr-defined]

        def kick() -> None:
            with app.app_context():
                running = delivery_loop()
            if running is not None:
                running.kick()

        return FhirEvents(
            state.store.engine, state.settings, state.knowledge, state.tz,
            state.store.hash_id, state.session, on_commit=kick,
        )  # fmt: skip

    return app_singleton(EXTENSION, build)


def _body() -> object:
    """The JSON body (None when empty).

    :raises PayloadTooLarge, UnsupportedMediaType, BadRequest: as named.
    """
    limit = current_app.extensions["cds"].settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge("the notification exceeds the size limit")
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        raise PayloadTooLarge("the notification exceeds the size limit") from None
    if len(data) > limit:
        raise PayloadTooLarge("the notification exceeds the size limit")
    if not data.strip():
        return None
    if request.mimetype not in MEDIA_TYPES:
        raise UnsupportedMediaType("send FHIR JSON (application/fhir+json)")
    try:
        return numbers.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadRequest("the body is not JSON") from None


@bp.post("/fhir/notifications")
def receive() -> Response:
    """Accept one notification; answer with a summary of what was done."""
    authorise_events()
    body = _body()
    try:
        note = parse_notification(body)
    except BadNotification as exc:
        raise BadRequest(f"not a subscription notification: {exc}") from None
    try:
        summary = handler().handle(note)
    except Transient as exc:
        log.warning("fhir notification deferred reason=%s", exc)
        raise ServiceUnavailable("the FHIR server could not be read; send again") from None
    log.info("fhir notification form=%s type=%s summary=%s", note.form, note.type, summary)
    return jsonify({"status": "ok", **summary})
