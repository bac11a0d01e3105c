"""CDS client JWT: the spec's example token, own ES384/RS384 tokens, JWKS fetching and caching."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from cds_service.config import ConfigError, Settings
from cds_service.hooks.auth import AuthError, JwtVerifier, expected_audience
from cds_service.store import Store, migrate, open_store
from tests.dbsupport import SECRET, sqlite_url
from tests.shared_data import SHARED

SPEC = SHARED / "spec/cds-hooks"
ROOT = Path(__file__).parents[2]
SPEC_ISS = "https://fhir-ehr.example.com/"
SPEC_AUD = "https://cds.example.org/cds-services/some-service"
ISS = "https://ehr.example.org/"
INLINE_ISS = "https://inline.example.org/"
AUD = "https://cds.example.test/cds-services/magnesium-aki-patient-view"


def spec_file(name: str) -> Path:
    """A spec example (the shared folder, or a copy under tests/fixtures/cds-hooks)."""
    for folder in (SPEC, ROOT / "tests" / "fixtures" / "cds-hooks"):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"spec example {name} not available")


class Replay:
    """In-memory jti cache with the store's contract."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.exps: list[datetime] = []

    def seen_jti(self, iss: str, jti: str, exp: datetime) -> bool:
        self.exps.append(exp)
        if (iss, jti) in self.seen:
            return True
        self.seen.add((iss, jti))
        return False


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class JwksServer:
    """A tiny JWKS endpoint on 127.0.0.1 that counts its requests."""

    def __init__(self) -> None:
        self.jwks: dict[str, Any] = {"keys": []}
        self.hits = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.hits += 1
                body = json.dumps(server.jwks).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def public_jwk(key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    algo = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
    jwk: dict[str, Any] = algo.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg:
        jwk["alg"] = alg
    return jwk


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_server(
    ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> Iterator[JwksServer]:
    server = JwksServer()
    server.jwks = {"keys": [public_jwk(ec_key, "ec-1", "ES384"), public_jwk(rsa_key, "rsa-1")]}
    yield server
    server.stop()


@pytest.fixture
def issuers_file(tmp_path: Path, jwks_server: JwksServer, ec_key: Any) -> Path:
    path = tmp_path / "issuers.json"
    inline = {"keys": [public_jwk(ec_key, "inline-ec", "ES384")]}
    path.write_text(json.dumps({ISS: jwks_server.url, INLINE_ISS: inline}))
    return path


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def verifier(issuers_file: Path, clock: Clock) -> JwtVerifier:
    settings = Settings.from_mapping({"CDS_AUTH": "jwt", "CDS_TRUSTED_ISSUERS": str(issuers_file)})
    return JwtVerifier(settings, Replay(), clock=clock, min_refetch=0)


def sign(
    key: Any,
    *,
    alg: str = "ES384",
    kid: str = "ec-1",
    drop: tuple[str, ...] = (),
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
        "tenant": "tenant-1",
    }
    payload.update(claims)
    for name in drop:
        payload.pop(name)
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, **(headers or {})})


def rejected(verifier: JwtVerifier, token: str | None, audience: str = AUD) -> str:
    header = None if token is None else f"Bearer {token}"
    with pytest.raises(AuthError) as info:
        verifier.verify(header, audience)
    return info.value.reason


# --- the spec's own example -------------------------------------------------------------


@pytest.fixture
def spec_verifier(tmp_path: Path) -> JwtVerifier:
    path = tmp_path / "spec-issuers.json"
    jwks = json.loads(spec_file("15c_jwks_public.json").read_text())
    path.write_text(json.dumps({SPEC_ISS: jwks}))
    settings = Settings.from_mapping({"CDS_AUTH": "jwt", "CDS_TRUSTED_ISSUERS": str(path)})
    return JwtVerifier(settings, Replay())


def spec_token() -> str:
    return spec_file("15e_jwt_token_spec_example.txt").read_text().strip()


def test_spec_example_token_verifies_with_expiry_off(spec_verifier: JwtVerifier) -> None:
    claims = spec_verifier.verify(f"Bearer {spec_token()}", SPEC_AUD, verify_exp=False)
    assert claims["iss"] == SPEC_ISS
    assert claims["jti"] == "ee22b021-e1b7-4611-ba5b-8eec6a33ac1e"


def test_spec_example_token_is_expired(spec_verifier: JwtVerifier) -> None:
    with pytest.raises(AuthError, match="expired"):
        spec_verifier.verify(f"Bearer {spec_token()}", SPEC_AUD)


def test_spec_example_token_ignores_its_jku(spec_verifier: JwtVerifier) -> None:
    assert jwt.get_unverified_header(spec_token())["jku"]  # present, and never fetched
    with pytest.raises(AuthError, match="audience"):
        spec_verifier.verify(f"Bearer {spec_token()}", AUD, verify_exp=False)


# --- our own keys -----------------------------------------------------------------------


def test_es384_token_verifies(verifier: JwtVerifier, ec_key: Any) -> None:
    claims = verifier.verify(f"Bearer {sign(ec_key)}", AUD)
    assert claims["iss"] == ISS and claims["aud"] == AUD


def test_rs384_token_verifies(verifier: JwtVerifier, rsa_key: Any) -> None:
    assert verifier.verify(f"Bearer {sign(rsa_key, alg='RS384', kid='rsa-1')}", AUD)


def test_inline_jwks_issuer(verifier: JwtVerifier, ec_key: Any, jwks_server: JwksServer) -> None:
    assert verifier.verify(f"bearer {sign(ec_key, kid='inline-ec', iss=INLINE_ISS)}", AUD)
    assert jwks_server.hits == 0


def test_audience_list_and_alternatives(verifier: JwtVerifier, ec_key: Any) -> None:
    token = sign(ec_key, aud=["https://elsewhere.example/", AUD])
    assert verifier.verify(f"Bearer {token}", AUD)
    assert verifier.verify(f"Bearer {sign(ec_key)}", ["https://x.example/", AUD])


def test_wrong_audience(verifier: JwtVerifier, ec_key: Any) -> None:
    assert "audience" in rejected(verifier, sign(ec_key, aud="https://cds.example.test/other"))


def test_untrusted_issuer(verifier: JwtVerifier, ec_key: Any) -> None:
    assert "issuer" in rejected(verifier, sign(ec_key, iss="https://evil.example/"))


def test_issuer_cannot_use_another_issuers_key(verifier: JwtVerifier, ec_key: Any) -> None:
    # kid ec-1 is published by ISS, not by INLINE_ISS
    assert "kid" in rejected(verifier, sign(ec_key, iss=INLINE_ISS))


def test_alg_none_rejected(verifier: JwtVerifier) -> None:
    token = jwt.encode({"iss": ISS, "aud": AUD}, "", algorithm="none", headers={"kid": "ec-1"})
    assert "algorithm" in rejected(verifier, token)


def test_hs256_rejected(verifier: JwtVerifier) -> None:
    assert "algorithm" in rejected(verifier, sign("shared-secret-32-bytes-long-xxxxx", alg="HS256"))


def test_other_asymmetric_alg_rejected(verifier: JwtVerifier) -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    assert "algorithm" in rejected(verifier, sign(p256, alg="ES256"))


@pytest.mark.parametrize("typ", ["JWE", 7, ["JWT"]])
def test_typ_must_be_jwt(verifier: JwtVerifier, ec_key: Any, typ: Any) -> None:
    assert "typ" in rejected(verifier, sign(ec_key, headers={"typ": typ}))


def test_key_type_must_fit_alg(verifier: JwtVerifier, rsa_key: Any) -> None:
    assert "does not fit" in rejected(verifier, sign(rsa_key, alg="RS384", kid="ec-1"))


def test_bad_signature(verifier: JwtVerifier) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    assert "signature" in rejected(verifier, sign(other))


@pytest.mark.parametrize("claim", ["jti", "exp", "iat", "aud"])
def test_missing_claim(verifier: JwtVerifier, ec_key: Any, claim: str) -> None:
    assert claim in rejected(verifier, sign(ec_key, drop=(claim,)))


def test_replayed_jti(verifier: JwtVerifier, ec_key: Any) -> None:
    token = sign(ec_key)
    verifier.verify(f"Bearer {token}", AUD)
    assert "replayed" in rejected(verifier, token)


def test_replay_cache_in_the_database(
    tmp_path: Path, issuers_file: Path, ec_key: Any, clock: Clock
) -> None:
    url = sqlite_url(tmp_path)
    migrate(url)
    store: Store = open_store(url, SECRET)
    settings = Settings.from_mapping({"CDS_TRUSTED_ISSUERS": str(issuers_file)})
    first, second = (JwtVerifier(settings, store, clock=clock) for _ in range(2))
    token = sign(ec_key)
    first.verify(f"Bearer {token}", AUD)
    assert "replayed" in rejected(second, token)  # another worker sees the same jti
    store.close()


def test_iat_in_the_future(verifier: JwtVerifier, ec_key: Any) -> None:
    now = int(time.time())
    assert "iat" in rejected(verifier, sign(ec_key, iat=now + 600, exp=now + 900))
    assert verifier.verify(f"Bearer {sign(ec_key, iat=now + 30)}", AUD)  # within the leeway


def test_expiry_and_leeway(verifier: JwtVerifier, ec_key: Any) -> None:
    now = int(time.time())
    assert "expired" in rejected(verifier, sign(ec_key, iat=now - 600, exp=now - 120))
    assert verifier.verify(f"Bearer {sign(ec_key, iat=now - 600, exp=now - 30)}", AUD)


def test_exp_too_far_ahead(verifier: JwtVerifier, ec_key: Any) -> None:
    assert "far" in rejected(verifier, sign(ec_key, exp=int(time.time()) + 86_400))


def test_non_numeric_exp(verifier: JwtVerifier, ec_key: Any) -> None:
    assert "exp" in rejected(verifier, sign(ec_key, exp="soon"))


def test_replay_cache_gets_the_token_expiry(issuers_file: Path, ec_key: Any) -> None:
    replay = Replay()
    settings = Settings.from_mapping({"CDS_TRUSTED_ISSUERS": str(issuers_file)})
    exp = int(time.time()) + 200
    JwtVerifier(settings, replay).verify(f"Bearer {sign(ec_key, exp=exp)}", AUD)
    assert replay.exps[0].timestamp() == exp and replay.exps[0].tzinfo is not None


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer not.a.jwt", "Bearer a.b"],
)
def test_malformed_authorization(verifier: JwtVerifier, header: str | None) -> None:
    with pytest.raises(AuthError):
        verifier.verify(header, AUD)


# --- JWKS fetching, caching, rotation -------------------------------------------------------


def test_jwks_is_cached(
    verifier: JwtVerifier, ec_key: Any, jwks_server: JwksServer, clock: Clock
) -> None:
    for _ in range(3):
        verifier.verify(f"Bearer {sign(ec_key)}", AUD)
    assert jwks_server.hits == 1
    clock.now += 301  # past the 5-minute lifetime
    verifier.verify(f"Bearer {sign(ec_key)}", AUD)
    assert jwks_server.hits == 2


def test_unknown_kid_refetches_once_then_rejects(
    verifier: JwtVerifier, ec_key: Any, jwks_server: JwksServer
) -> None:
    verifier.verify(f"Bearer {sign(ec_key)}", AUD)
    assert jwks_server.hits == 1
    assert "kid" in rejected(verifier, sign(ec_key, kid="nobody"))
    assert jwks_server.hits == 2


def test_unknown_kid_refetch_is_rate_limited(
    issuers_file: Path, ec_key: Any, jwks_server: JwksServer, clock: Clock
) -> None:
    settings = Settings.from_mapping({"CDS_TRUSTED_ISSUERS": str(issuers_file)})
    limited = JwtVerifier(settings, Replay(), clock=clock, min_refetch=10)
    limited.verify(f"Bearer {sign(ec_key)}", AUD)
    for _ in range(5):
        rejected(limited, sign(ec_key, kid="nobody"))
    assert jwks_server.hits == 1
    clock.now += 11
    rejected(limited, sign(ec_key, kid="nobody"))
    assert jwks_server.hits == 2


def test_key_rotation_picked_up(
    verifier: JwtVerifier, ec_key: Any, jwks_server: JwksServer
) -> None:
    verifier.verify(f"Bearer {sign(ec_key)}", AUD)
    new_key = ec.generate_private_key(ec.SECP384R1())
    jwks_server.jwks["keys"].append(public_jwk(new_key, "ec-2"))
    assert verifier.verify(f"Bearer {sign(new_key, kid='ec-2')}", AUD)
    assert jwks_server.hits == 2


def test_jku_header_is_never_fetched(verifier: JwtVerifier, jwks_server: JwksServer) -> None:
    attacker = ec.generate_private_key(ec.SECP384R1())
    evil = JwksServer()
    evil.jwks = {"keys": [public_jwk(attacker, "evil")]}
    try:
        token = sign(attacker, kid="evil", headers={"jku": evil.url})
        rejected(verifier, token)
        assert evil.hits == 0
    finally:
        evil.stop()


def test_jwks_unreachable(issuers_file: Path, ec_key: Any) -> None:
    def down(url: str) -> Any:
        raise ConnectionError("down")

    settings = Settings.from_mapping({"CDS_TRUSTED_ISSUERS": str(issuers_file)})
    assert "unavailable" in rejected(JwtVerifier(settings, Replay(), down), sign(ec_key))


def test_stale_keys_serve_while_jwks_is_down(
    verifier: JwtVerifier, ec_key: Any, jwks_server: JwksServer, clock: Clock
) -> None:
    verifier.verify(f"Bearer {sign(ec_key)}", AUD)
    jwks_server.stop()
    clock.now += 301
    assert verifier.verify(f"Bearer {sign(ec_key)}", AUD)


# --- configuration ----------------------------------------------------------------------


def test_issuers_file_must_be_valid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="CDS_TRUSTED_ISSUERS"):
        JwtVerifier(Settings.from_mapping({"CDS_TRUSTED_ISSUERS": str(bad)}), Replay())
    plain_http = tmp_path / "http.json"
    plain_http.write_text(json.dumps({ISS: "http://ehr.example.org/jwks"}))
    with pytest.raises(ConfigError, match="https"):
        JwtVerifier(Settings.from_mapping({"CDS_TRUSTED_ISSUERS": str(plain_http)}), Replay())
    with pytest.raises(ConfigError):
        JwtVerifier(
            Settings.from_mapping({"CDS_TRUSTED_ISSUERS": str(tmp_path / "none")}), Replay()
        )


def test_no_issuers_rejects_everything(ec_key: Any) -> None:
    verifier = JwtVerifier(Settings.from_mapping({"CDS_AUTH": "jwt"}), Replay())
    assert "issuer" in rejected(verifier, sign(ec_key))


def test_expected_audience() -> None:
    assert expected_audience(Settings(), "http://h/cds-services/x") == ["http://h/cds-services/x"]
    assert expected_audience(Settings(audience="https://a/"), "http://h/x") == ["https://a/"]


# --- nothing secret in the logs ---------------------------------------------------------


def test_tokens_never_logged(
    verifier: JwtVerifier,
    spec_verifier: JwtVerifier,
    ec_key: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    jti = "jti-" + uuid.uuid4().hex
    now = int(time.time())
    tokens = [
        sign(ec_key, jti=jti),
        sign(ec_key, aud="https://wrong.example/"),
        sign(ec_key, iss="https://evil.example/"),
        sign(ec_key, kid="nobody"),
        sign(ec_key, iat=now + 900, exp=now + 1000),
        sign(ec_key, drop=("jti",)),
        sign(ec.generate_private_key(ec.SECP384R1())),
        spec_token(),
    ]
    for token in tokens:
        try:
            verifier.verify(f"Bearer {token}", AUD)
        except AuthError as exc:
            assert token not in str(exc)
    with pytest.raises(AuthError):
        verifier.verify(f"Bearer {tokens[0]}", AUD)  # replay
    with pytest.raises(AuthError):
        spec_verifier.verify(f"Bearer {spec_token()}", SPEC_AUD)
    assert "rejected" in caplog.text  # the failures were logged ...
    for token in tokens:
        for part in token.split("."):
            assert part not in caplog.text  # ... without any part of a token
    assert jti not in caplog.text
    assert "tenant-1" not in caplog.text
    assert "ee22b021" not in caplog.text
