"""POST /cds-services/{id}/feedback: authenticated, validated, stored idempotently."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from cds_service.hooks.auth import AuthError, expected_audience
from cds_service.hooks.errors import BadRequest, PayloadTooLarge, ServiceNotFound, Unauthorized
from cds_service.hooks.request import check_content_type
from cds_service.store.store import parse_instant
from cds_service.web.body import parse_json, read_body

log = logging.getLogger(__name__)

bp = Blueprint("cds_feedback", __name__)

OUTCOMES = ("accepted", "overridden")
MAX_ITEMS = 1000
MAX_ID_CHARS = 255
MAX_TEXT_CHARS = 4000
BLANK = " \t\r\n"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


def _text(value: Any, where: str, limit: int = MAX_ID_CHARS, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not value.strip(BLANK):  # the OpenAPI pattern's blank
        raise BadRequest(f"{where} must be a non-empty string", expression=[where])
    if len(value) > limit:
        raise BadRequest(f"{where} is longer than {limit} characters", expression=[where])


def _check_override(reason: Any, where: str) -> None:
    if not isinstance(reason, Mapping):
        raise BadRequest(f"{where} must be an object", expression=[where])
    coding = reason.get("reason")
    if coding is not None:
        if not isinstance(coding, Mapping):
            raise BadRequest(f"{where}.reason must be a Coding", expression=[f"{where}.reason"])
        _text(coding.get("code"), f"{where}.reason.code")
        _text(coding.get("system"), f"{where}.reason.system", MAX_TEXT_CHARS)
        _text(coding.get("display"), f"{where}.reason.display", MAX_TEXT_CHARS, required=False)
    _text(reason.get("userComment"), f"{where}.userComment", MAX_TEXT_CHARS, required=False)


def check_item(item: Any, where: str) -> None:
    """Validate one Feedback object of the spec.

    :raises BadRequest: a missing or malformed member.
    """
    if not isinstance(item, Mapping):
        raise BadRequest(f"{where} must be an object", expression=[where])
    card = item.get("card")
    if not isinstance(card, str) or not _UUID.match(card):
        raise BadRequest(f"{where}.card must be a card uuid", expression=[f"{where}.card"])
    if item.get("outcome") not in OUTCOMES:
        raise BadRequest(
            f"{where}.outcome must be accepted or overridden", expression=[f"{where}.outcome"]
        )
    stamp = item.get("outcomeTimestamp")
    try:
        if not isinstance(stamp, str):
            raise ValueError
        parse_instant(stamp)
    except ValueError:
        raise BadRequest(
            f"{where}.outcomeTimestamp must be an ISO 8601 date-time",
            expression=[f"{where}.outcomeTimestamp"],
        ) from None
    accepted = item.get("acceptedSuggestions")
    path = f"{where}.acceptedSuggestions"
    if item["outcome"] == "accepted" and not accepted:
        raise BadRequest(f"{path} is required when the outcome is accepted", expression=[path])
    if accepted is not None:
        if not isinstance(accepted, list):
            raise BadRequest(f"{path} must be an array", expression=[path])
        for j, suggestion in enumerate(accepted):
            if not isinstance(suggestion, Mapping):
                raise BadRequest(f"{path}[{j}] must be an object", expression=[f"{path}[{j}]"])
            _text(suggestion.get("id"), f"{path}[{j}].id")
    if item.get("overrideReason") is not None:
        _check_override(item["overrideReason"], f"{where}.overrideReason")


def parse_feedback(raw: bytes) -> list[Mapping[str, Any]]:
    """The feedback items of a request body, all validated before any is stored.

    :raises BadRequest: not JSON, or not a feedback document.
    """
    body = parse_json(raw)
    items = body.get("feedback") if isinstance(body, Mapping) else None
    if not isinstance(items, list) or not items:
        raise BadRequest("feedback must be a non-empty array", expression=["feedback"])
    if len(items) > MAX_ITEMS:
        raise BadRequest(f"at most {MAX_ITEMS} feedback items per request")
    for i, item in enumerate(items):
        check_item(item, f"feedback[{i}]")
    return items


def _authenticate(state: Any) -> None:
    if state.settings.auth != "jwt":
        return
    verifier = getattr(state, "verifier", None)
    if verifier is None:  # fail closed: auth is on but nothing can verify
        log.error("client authentication is on but no verifier is configured")
        raise Unauthorized("Authentication required")
    # aud is the called feedback URL; the service URL is accepted too (some clients send it)
    called = request.base_url
    audience = expected_audience(state.settings, called)
    if not state.settings.audience:
        audience.append(called.removesuffix("/feedback"))
    try:
        verifier.verify(request.headers.get("Authorization"), audience)
    except AuthError:
        raise Unauthorized("Authentication required") from None


@bp.post("/cds-services/<service_id>/feedback")
def feedback(service_id: str) -> Response:
    """Store the feedback items of one request; 200 with ``{}``."""
    state = current_app.extensions["cds"]
    _authenticate(state)
    if service_id not in state.services:
        raise ServiceNotFound(f"No CDS service {service_id!r}", expression=["id"])
    limit = state.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    check_content_type(request.content_type)
    items = parse_feedback(read_body(limit))
    new = sum(state.store.save_feedback(service_id, item) for item in items)
    log.info("feedback for %s: %d item(s), %d new", service_id, len(items), new)
    return jsonify({})
