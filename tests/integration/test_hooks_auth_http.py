"""CDS_AUTH=jwt over HTTP: the spec's example key as a trusted issuer; 401 carries no detail."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.store import migrate
from tests.integration.hooks_support import SERVICE, SPEC, positive_control

ISS = "https://fhir-ehr.example.com/"
PV = SERVICE + "patient-view"
AUD = "http://localhost" + PV


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    folder = tmp_path_factory.mktemp("auth")
    issuers = folder / "issuers.json"
    issuers.write_text(json.dumps({ISS: json.loads((SPEC / "15c_jwks_public.json").read_text())}))
    url = f"sqlite:///{folder / 'cds.db'}"
    migrate(url)
    yield create_app({"CDS_DATABASE_URL": url, "CDS_AUTH": "jwt", "CDS_TRUSTED_ISSUERS": str(issuers),
                      "CDS_SECRET": "s"})  # fmt: skip


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def token(**claims: Any) -> str:
    key = jwt.PyJWK(json.loads((SPEC / "15d_jwk_private_client_signing_key.json").read_text()))
    now = int(time.time())
    body = {"iss": ISS, "aud": AUD, "exp": now + 300, "iat": now, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(body, key.key, algorithm="ES384", headers={"kid": "example-kid"})


def call(client: FlaskClient, auth: str | None) -> Any:
    headers = {"Authorization": auth} if auth else {}
    return client.post(PV, data=json.dumps(positive_control()), content_type="application/json",
                       headers=headers)  # fmt: skip


def assert_401(resp: Any) -> None:
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = resp.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0].keys() == {"severity", "code", "details"}  # no diagnostics: no detail


def test_no_token_is_401(client: FlaskClient) -> None:
    assert_401(call(client, None))


def test_spec_example_token_is_expired(client: FlaskClient) -> None:
    example = (SPEC / "15e_jwt_token_spec_example.txt").read_text().strip()
    example = example.split()[-1]
    assert_401(call(client, f"Bearer {example}"))


def test_valid_token_then_replay(client: FlaskClient) -> None:
    good = f"Bearer {token()}"
    resp = call(client, good)
    assert resp.status_code == 200 and resp.get_json()["cards"]
    assert_401(call(client, good))


@pytest.mark.parametrize(
    "claims",
    [{"aud": "https://elsewhere.example/cds-services/x"}, {"iss": "https://untrusted.example/"},
     {"exp": int(time.time()) - 3600}],
)  # fmt: skip
def test_bad_claims_are_401(client: FlaskClient, claims: dict[str, Any]) -> None:
    assert_401(call(client, f"Bearer {token(**claims)}"))


def test_hs256_and_none_tokens_are_401(client: FlaskClient) -> None:
    hs = jwt.encode({"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60, "jti": "a"}, "k" * 32,
                    algorithm="HS256", headers={"kid": "example-kid"})  # fmt: skip
    assert_401(call(client, f"Bearer {hs}"))
    none = jwt.encode({"iss": ISS, "aud": AUD, "exp": int(time.time()) + 60, "jti": "b"}, None,  # type: ignore[arg-type]
                      algorithm="none")  # fmt: skip
    assert_401(call(client, f"Bearer {none}"))


def test_discovery_needs_no_token(client: FlaskClient) -> None:
    assert client.get("/cds-services").status_code == 200


def test_token_is_not_logged(client: FlaskClient, caplog: pytest.LogCaptureFixture) -> None:
    secret = token(aud="https://elsewhere.example/")
    with caplog.at_level("DEBUG"):
        call(client, f"Bearer {secret}")
    assert secret not in caplog.text and secret.split(".")[1] not in caplog.text


