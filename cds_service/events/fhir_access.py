"""Access to ``CDS_FHIR_BASE`` for events: reads and writes, SMART backend-services token.

Built on ``hooks.fhir_client.FhirClient`` (same base check, same error type, nothing
sensitive in messages). With ``CDS_FHIR_TOKEN_URL`` the client signs a JWT assertion with
``CDS_FHIR_CLIENT_KEY`` (a PEM file path or PEM text; RS384 or ES384) and caches the token.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import requests

from cds_service.clinical import numbers
from cds_service.config import Settings
from cds_service.hooks.fhir_client import FHIR_JSON, FhirClient, FhirUnavailable, JsonDict

EVENT_TIMEOUT_S = 15.0
SCOPE = "system/Patient.read system/Observation.read system/Encounter.read system/Location.read system/Condition.read system/Procedure.read system/MedicationRequest.read system/ServiceRequest.read system/Communication.write system/Communication.read system/Subscription.write"  # noqa: E501
_TOKENS: dict[str, tuple[str, float]] = {}
_LOCK = threading.Lock()


class FhirWriter(FhirClient):
    """A FhirClient that can also POST and PUT JSON resources inside its base."""

    def send(
        self, method: str, path: str, body: JsonDict, headers: dict[str, str] | None = None
    ) -> tuple[int, JsonDict | None]:
        """Send a resource; the status and the returned resource (if any).

        :raises FhirUnavailable: timeout, connection error, or a non-2xx answer.
        """
        url = self.url(path)
        left = self.remaining()
        if left <= 0:
            raise FhirUnavailable("deadline passed")
        sent = {**self._headers, "Content-Type": FHIR_JSON, **(headers or {})}
        try:
            resp = self.session.request(
                method, url, json=body, headers=sent, timeout=(left, left), allow_redirects=False
            )
        except requests.Timeout:
            raise FhirUnavailable("timeout") from None
        except requests.RequestException as exc:
            raise FhirUnavailable(f"connection failed: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise FhirUnavailable(f"{method} refused", resp.status_code)
        try:
            answer = numbers.loads(resp.content) if resp.content else None
        except ValueError:
            answer = None
        return resp.status_code, answer if isinstance(answer, dict) else None


def _key_text(value: str) -> str:
    if "-----BEGIN" in value:
        return value
    try:
        return Path(value).read_text(encoding="utf-8")
    except OSError:
        raise FhirUnavailable("CDS_FHIR_CLIENT_KEY cannot be read") from None


def _assertion(settings: Settings, now: float) -> str:
    key = _key_text(settings.fhir_client_key)
    alg = "ES384" if "EC PRIVATE KEY" in key or "ecdsa" in key.lower() else "RS384"
    claims = {
        "iss": settings.fhir_client_id,
        "sub": settings.fhir_client_id,
        "aud": settings.fhir_token_url,
        "exp": int(now) + 300,
        "jti": uuid.uuid4().hex,
    }
    try:
        return jwt.encode(claims, key, algorithm=alg)
    except (ValueError, TypeError, jwt.PyJWTError):
        raise FhirUnavailable("CDS_FHIR_CLIENT_KEY is not a usable private key") from None


def access_token(settings: Settings, session: requests.Session) -> str | None:
    """A backend-services token for ``CDS_FHIR_BASE`` (None without a token URL).

    :raises FhirUnavailable: the token endpoint refused or did not answer.
    """
    if not settings.fhir_token_url:
        return None
    now = time.time()
    with _LOCK:
        cached = _TOKENS.get(settings.fhir_token_url)
    if cached is not None and cached[1] > now + 30:
        return cached[0]
    form = {
        "grant_type": "client_credentials",
        "scope": SCOPE,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": _assertion(settings, now),
    }
    try:
        resp = session.post(settings.fhir_token_url, data=form, timeout=EVENT_TIMEOUT_S)
        body: Any = resp.json()
    except (requests.RequestException, ValueError):
        raise FhirUnavailable("token endpoint unreachable") from None
    token = body.get("access_token") if isinstance(body, dict) else None
    if resp.status_code != 200 or not isinstance(token, str):
        raise FhirUnavailable("token endpoint refused", resp.status_code)
    expires = body.get("expires_in", 300)
    lifetime = float(expires) if isinstance(expires, int | float) else 300.0
    with _LOCK:
        _TOKENS[settings.fhir_token_url] = (token, now + lifetime)
    return token


def fhir_writer(
    settings: Settings, session: requests.Session, timeout: float = EVENT_TIMEOUT_S
) -> FhirWriter:
    """A client for ``CDS_FHIR_BASE`` with a fresh deadline.

    :raises FhirUnavailable: no base configured, or no token could be obtained.
    """
    if not settings.fhir_base:
        raise FhirUnavailable("CDS_FHIR_BASE is not configured")
    token = access_token(settings, session)
    return FhirWriter(settings.fhir_base, session, token=token, deadline=time.monotonic() + timeout)
