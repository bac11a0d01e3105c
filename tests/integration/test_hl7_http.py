"""``POST /hl7v2``: bearer token, ER7 ACK, JSON with cards, charset, errors as status codes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from cds_service.app import create_app
from cds_service.events.http import EXTENSION, bp, ingestor
from cds_service.store import dispose_engine, migrate
from tests.hl7support import SITE, fixture, msa

TOKEN = "events-token-for-tests"


def make_app(tmp: Path, **extra: Any) -> Flask:
    url = f"sqlite:///{tmp / 'http.db'}"
    migrate(url)
    config = {"CDS_DATABASE_URL": url, "CDS_AUTH": "jwt", "CDS_SECRET": "test-secret",
              "CDS_EVENTS_TOKEN": TOKEN, "CDS_SITE_MAPPINGS": str(SITE), "CDS_OUTBOUND": "hl7",
              "CDS_TRUSTED_ISSUERS": "", **extra}  # fmt: skip
    app = create_app(config)
    if "hl7v2" not in app.blueprints:  # until app.py registers it
        app.register_blueprint(bp)
    with app.app_context():
        ingestor().clock = lambda: datetime(2024, 5, 10, 9, 30, tzinfo=UTC)
    return app


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    tmp = tmp_path_factory.mktemp("hl7http")
    application = make_app(tmp)
    yield application
    dispose_engine(f"sqlite:///{tmp / 'http.db'}")


def auth(**headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", **headers}


def test_token_is_required(app: Flask) -> None:
    client = app.test_client()
    body = fixture("oru_mg_sn_lessthan.hl7")
    assert client.post("/hl7v2", data=body, content_type="application/hl7-v2").status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (
        client.post("/hl7v2", data=body, headers=wrong, content_type="text/plain").status_code
        == 401
    )
    assert app.extensions.get(EXTENSION) is not None


def test_er7_ack(app: Flask) -> None:
    response = app.test_client().post(
        "/hl7v2",
        data=fixture("oru_glucose_only.hl7"),
        headers=auth(),
        content_type="application/hl7-v2",
    )
    assert response.status_code == 200 and response.mimetype == "application/hl7-v2"
    assert msa(response.get_data(as_text=True))[1:3] == ["AA", "MSG-GLU-1"]


def test_json_with_cards(app: Flask) -> None:
    response = app.test_client().post(
        "/hl7v2",
        data=fixture("oru_mg_sn_lessthan.hl7"),
        headers=auth(Accept="application/json"),
        content_type="text/plain; charset=utf-8",
    )
    doc = response.get_json()
    assert response.status_code == 200 and msa(doc["ack"])[1] == "AA"
    (card,) = doc["cards"]
    assert card["indicator"] == "critical"
    assert card["source"]["topic"]["code"] == "severe-hypomagnesemia"
    assert card["extension"]["magnesium-aki"]["magnesium"]["value_mg_dl"] == 1.0
    again = app.test_client().post(
        "/hl7v2", data=fixture("oru_mg_sn_lessthan.hl7"), headers=auth(Accept="application/json"),
        content_type="text/plain",
    )  # fmt: skip
    assert again.get_json() == {"ack": doc["ack"], "cards": []}  # duplicate: same ACK, no new card


def test_header_charset_when_msh18_is_empty(app: Flask) -> None:
    body = fixture("oru_undecodable.hl7").replace(b"MSG-BADBYTES-1", b"MSG-HTTP-LATIN1")
    response = app.test_client().post(
        "/hl7v2", data=body, headers=auth(), content_type="text/plain; charset=iso-8859-1"
    )
    assert msa(response.get_data(as_text=True))[1] == "AA"


def test_non_hl7_and_bad_media_type(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/hl7v2", data=b"hello", headers=auth(), content_type="text/plain")
    assert response.status_code == 200 and msa(response.get_data(as_text=True))[1:3] == ["AR", ""]
    assert client.post("/hl7v2", json={"a": 1}, headers=auth()).status_code == 415


def test_auth_off_needs_no_token(tmp_path: Path) -> None:
    app = make_app(tmp_path, CDS_AUTH="off", CDS_EVENTS_TOKEN="")
    response = app.test_client().post(
        "/hl7v2", data=fixture("oru_glucose_only.hl7"), content_type="text/plain"
    )
    assert response.status_code == 200
    dispose_engine(f"sqlite:///{tmp_path / 'http.db'}")


def test_body_limit(tmp_path: Path) -> None:
    app = make_app(tmp_path, CDS_MAX_BODY_BYTES="300")
    response = app.test_client().post(
        "/hl7v2", data=fixture("oru_mg_low_icu.hl7"), headers=auth(), content_type="text/plain"
    )
    assert response.status_code == 413
    dispose_engine(f"sqlite:///{tmp_path / 'http.db'}")
