"""What the event endpoints share inside the web process: bearer auth and per-app singletons."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from typing import TypeVar

from flask import current_app, request

from cds_service.hooks.errors import Unauthorized

T = TypeVar("T")
_LOCK = threading.Lock()


def app_singleton(key: str, build: Callable[[], T]) -> T:
    """The object stored under ``key`` in this app's extensions, built once on first use."""
    found = current_app.extensions.get(key)
    if found is None:
        with _LOCK:
            found = current_app.extensions.get(key)
            if found is None:
                found = build()
                current_app.extensions[key] = found
    return found


def authorise_events() -> None:
    """Bearer ``CDS_EVENTS_TOKEN`` unless ``CDS_AUTH=off`` (constant-time comparison).

    :raises Unauthorized: missing or wrong token (also when no token is configured).
    """
    settings = current_app.extensions["cds"].settings
    if settings.auth == "off":
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    expected = settings.events_token
    if not expected or scheme.lower() != "bearer":
        raise Unauthorized("authentication required")
    if not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Unauthorized("authentication required")
