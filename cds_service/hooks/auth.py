"""CDS Hooks client JWT verification: ES384/RS384, allowlisted issuers' JWKS, aud, exp, jti."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from cds_service.config import ConfigError, Settings

log = logging.getLogger(__name__)

ALGORITHMS = ("ES384", "RS384")
LEEWAY = 60  # seconds of clock skew tolerated on exp, iat, nbf
MAX_LIFETIME = 3600  # an exp further ahead than this (seconds) is refused: bounds the jti cache
JWKS_TTL = 300.0  # seconds a fetched JWKS is trusted before it is fetched again
JWKS_MIN_REFETCH = 10.0  # at most one refetch for an unknown kid per issuer in this many seconds
MAX_TOKEN_CHARS = 16_384
MAX_JTI_CHARS = 255
MAX_JWKS_BYTES = 1_000_000
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

FetchJson = Callable[[str], Any]


class AuthError(Exception):
    """The request is not authenticated; ``reason`` is for the log, never for the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReplayCache(Protocol):
    """What the verifier needs from the store."""

    def seen_jti(self, iss: str, jti: str, exp: datetime) -> bool:
        """Record a JWT id; True if it was seen before."""
        ...


def fetch_json(url: str) -> Any:
    """GET a JWKS document (3 s timeout, no redirects, size-limited)."""
    response = requests.get(
        url, timeout=3, allow_redirects=False, headers={"Accept": "application/json"}
    )
    response.raise_for_status()
    if len(response.content) > MAX_JWKS_BYTES:
        raise ValueError("JWKS document too large")
    return response.json()


@dataclass(frozen=True)
class _Jwk:
    """A public signing key and the algorithm its JWK declares (if any)."""

    key: Any
    alg: str | None


@dataclass
class _Issuer:
    """One trusted issuer: a JWKS URL (fetched, cached) or an inline JWKS."""

    url: str | None
    keys: dict[str, _Jwk] = field(default_factory=dict)
    fetched_at: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _parse_keys(document: Any) -> dict[str, _Jwk]:
    """The usable signing keys of a JWKS, by kid (keys we cannot use are skipped)."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set (no 'keys' array)")
    keys: dict[str, _Jwk] = {}
    for entry in document["keys"]:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig" or entry.get("kty") not in ("EC", "RSA"):
            continue
        alg = entry.get("alg")
        try:
            key = jwt.PyJWK(dict(entry)).key
            if isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
                key = key.public_key()  # a JWKS should not carry private parts; use the public
            keys[entry["kid"]] = _Jwk(key, alg if isinstance(alg, str) else None)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            log.warning("JWKS key %r skipped: not a usable public key", entry.get("kid"))
    return keys


def _check_jwks_url(iss: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return
    raise ConfigError(f"CDS_TRUSTED_ISSUERS: JWKS URL of {iss} must be https")


def load_issuers(path: str) -> dict[str, _Issuer]:
    """Read CDS_TRUSTED_ISSUERS: ``{"<iss>": "<JWKS URL>" | {"keys": [...]}}``.

    :raises ConfigError: unreadable file or a malformed entry.
    """
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"CDS_TRUSTED_ISSUERS: cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"CDS_TRUSTED_ISSUERS: {path} must hold a JSON object")
    issuers: dict[str, _Issuer] = {}
    for iss, value in data.items():
        if len(iss) > MAX_JTI_CHARS:
            raise ConfigError(f"CDS_TRUSTED_ISSUERS: issuer longer than {MAX_JTI_CHARS} chars")
        if isinstance(value, str):
            _check_jwks_url(iss, value)
            issuers[iss] = _Issuer(url=value)
            continue
        try:
            issuers[iss] = _Issuer(url=None, keys=_parse_keys(value))
        except ValueError as exc:
            raise ConfigError(f"CDS_TRUSTED_ISSUERS: {iss} in {path}: {exc}") from None
    return issuers


def _key_fits(alg: str, key: Any) -> bool:
    if alg == "ES384":
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1"
    return isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AuthError(f"{name} missing or not a number")
    return float(value)


class JwtVerifier:
    """Verifies the CDS Hooks client JWT of a request (see design.md, Security defaults)."""

    def __init__(
        self,
        settings: Settings,
        store: ReplayCache,
        fetch_json: FetchJson = fetch_json,
        *,
        clock: Callable[[], float] = time.time,
        jwks_ttl: float = JWKS_TTL,
        min_refetch: float = JWKS_MIN_REFETCH,
    ) -> None:
        """Load the trusted issuers now (a bad file is a ConfigError at start-up)."""
        self._issuers = load_issuers(settings.trusted_issuers)
        if settings.auth == "jwt" and not self._issuers:
            log.warning("CDS_TRUSTED_ISSUERS lists no issuer: every CDS Hooks call gets 401")
        self._store = store
        self._fetch = fetch_json
        self._clock = clock
        self._ttl = jwks_ttl
        self._min_refetch = min_refetch

    def verify(
        self,
        authorization_header: str | None,
        audience: str | Iterable[str],
        *,
        verify_exp: bool = True,
    ) -> dict[str, Any]:
        """The verified claims of the bearer token.

        :raises AuthError: missing, malformed, untrusted, expired or replayed token.
        """
        try:
            return self._verify(authorization_header, audience, verify_exp)
        except AuthError as exc:
            log.info("CDS client JWT rejected: %s", exc.reason)
            raise

    def _verify(
        self, header: str | None, audience: str | Iterable[str], verify_exp: bool
    ) -> dict[str, Any]:
        token = _bearer(header)
        try:
            head = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthError("malformed token") from None
        alg, kid, iss = head.get("alg"), head.get("kid"), unverified.get("iss")
        if alg not in ALGORITHMS:
            raise AuthError(f"algorithm {alg!r} not accepted")
        typ = head.get("typ", "JWT")
        if not isinstance(typ, str) or typ.upper() != "JWT":
            raise AuthError("typ is not JWT")
        if not isinstance(kid, str) or not kid:
            raise AuthError("kid missing")
        if not isinstance(iss, str) or iss not in self._issuers:
            raise AuthError("issuer not trusted")
        jwk = self._key(iss, kid)
        if not _key_fits(alg, jwk.key) or jwk.alg not in (None, alg):
            raise AuthError(f"key {kid!r} of {iss} does not fit {alg}")
        auds = [audience] if isinstance(audience, str) else list(audience)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                jwk.key,
                algorithms=[alg],
                audience=auds,
                issuer=iss,
                options={
                    "require": ["iss", "aud", "exp", "iat", "jti"],
                    "verify_exp": False,  # checked below, with the injectable clock
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"claim {exc.claim} missing") from None
        except jwt.InvalidAudienceError:
            raise AuthError("audience does not match") from None
        except jwt.InvalidSignatureError:
            raise AuthError(f"bad signature (iss {iss}, kid {kid})") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})") from None
        exp = self._check_times(claims, verify_exp)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_CHARS:
            raise AuthError("jti missing or not a short string")
        if self._store.seen_jti(iss, jti, datetime.fromtimestamp(exp, UTC)):
            raise AuthError(f"jti replayed (iss {iss})")
        return claims

    def _check_times(self, claims: Mapping[str, Any], verify_exp: bool) -> float:
        now = self._clock()
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        if iat > now + LEEWAY:
            raise AuthError("iat in the future")
        if "nbf" in claims and _number(claims, "nbf") > now + LEEWAY:
            raise AuthError("not yet valid (nbf)")
        if verify_exp and exp < now - LEEWAY:
            raise AuthError("token expired")
        if verify_exp and exp > now + MAX_LIFETIME + LEEWAY:
            raise AuthError("exp too far in the future")
        return exp

    def _key(self, iss: str, kid: str) -> _Jwk:
        issuer = self._issuers[iss]
        if issuer.url is None:
            key = issuer.keys.get(kid)
            if key is None:
                raise AuthError(f"unknown kid {kid!r} for {iss}")
            return key
        with issuer.lock:
            now = self._clock()
            if issuer.fetched_at is None or now - issuer.fetched_at >= self._ttl:
                self._refresh(iss, issuer, now)
            elif kid not in issuer.keys and now - issuer.fetched_at >= self._min_refetch:
                self._refresh(iss, issuer, now)
            key = issuer.keys.get(kid)
        if key is None:
            raise AuthError(f"unknown kid {kid!r} for {iss}")
        return key

    def _refresh(self, iss: str, issuer: _Issuer, now: float) -> None:
        assert issuer.url is not None
        try:
            issuer.keys = _parse_keys(self._fetch(issuer.url))
        except Exception as exc:  # any fetch or parse failure; never fatal for the process
            # keep serving the keys we had (if any) until the next attempt
            log.warning("JWKS of %s not fetched: %s", iss, type(exc).__name__)
            if issuer.fetched_at is None:
                raise AuthError(f"JWKS of {iss} unavailable") from None
        issuer.fetched_at = now


def _bearer(header: str | None) -> str:
    if not header:
        raise AuthError("no Authorization header")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("Authorization is not a Bearer token")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError("token too long")
    return token


def expected_audience(settings: Settings, called_url: str) -> list[str]:
    """The accepted ``aud`` values: CDS_AUDIENCE if set, else the called URL."""
    return [settings.audience] if settings.audience else [called_url]
