"""POST /cds-services/{id}/feedback on a minimal app: spec examples, idempotency, 400/401/404."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from cds_service.config import Settings
from cds_service.hooks.auth import AuthError
from cds_service.hooks.errors import register_error_handlers
from cds_service.hooks.feedback import bp
from cds_service.store import Feedback, Store
from tests.shared_data import SHARED

SPEC = SHARED / "spec/cds-hooks"
SERVICE = "magnesium-aki-patient-view"
URL = f"/cds-services/{SERVICE}/feedback"
ACCEPTED: dict[str, Any] = {
    "feedback": [
        {
            "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
            "outcomeTimestamp": "2021-12-11T10:05:31Z",
        }
    ]
}


def example(name: str, fallback: dict[str, Any]) -> dict[str, Any]:
    """A spec example body (the shared folder when present, else the same text inline)."""
    path = SPEC / name
    return json.loads(path.read_text()) if path.is_file() else copy.deepcopy(fallback)


SPEC_12 = example("12_feedback_accepted.json", ACCEPTED)
SPEC_13 = example(
    "13_feedback_overridden_no_reason.json",
    {
        "feedback": [
            {
                "card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb",
                "outcome": "overridden",
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            }
        ]
    },
)
SPEC_14 = example(
    "14_feedback_overridden_with_reason.json",
    {
        "feedback": [
            {
                "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
                "outcome": "overridden",
                "overrideReason": {
                    "reason": {
                        "code": "d7ecf885",
                        "system": "https://example.com/cds-hooks/override-reason-system",
                    },
                    "userComment": "A comment entered by the clinician.",
                },
                "outcomeTimestamp": "2020-12-11T00:00:00Z",
            }
        ]
    },
)


class FakeVerifier:
    """Accepts ``Bearer good``; remembers the audiences it was asked for."""

    def __init__(self) -> None:
        self.audiences: list[Any] = []

    def verify(
        self, header: str | None, audience: Any, *, verify_exp: bool = True
    ) -> dict[str, Any]:
        self.audiences.append(audience)
        if header != "Bearer good":
            raise AuthError("secret internal reason")
        return {"iss": "x"}


def make_app(store: Store, **settings: Any) -> Flask:
    app = Flask(__name__)
    register_error_handlers(app)
    app.register_blueprint(bp)
    app.extensions["cds"] = SimpleNamespace(
        settings=Settings.from_mapping({"CDS_AUTH": "off", **settings}),
        services={SERVICE: object(), "magnesium-aki-order-sign": object()},
        store=store,
        verifier=FakeVerifier(),
    )
    return app


@pytest.fixture
def client(store: Store) -> Iterator[FlaskClient]:
    with make_app(store).test_client() as c:
        yield c


def rows(store: Store) -> list[Any]:
    with store.engine.connect() as conn:
        return list(conn.execute(select(Feedback).order_by(Feedback.id)))


def test_spec_accepted(client: FlaskClient, store: Store) -> None:
    response = client.post(URL, json=SPEC_12)
    assert response.status_code == 200
    assert response.get_json() == {}
    (row,) = rows(store)
    assert row.card_uuid == "4e0a3a1e-3283-4575-ab82-028d55fe2719"
    assert row.outcome == "accepted"
    assert row.accepted_suggestions == ["e56e1945-20b3-4393-8503-a1a20fd73152"]
    assert row.service_id == SERVICE
    assert row.outcome_timestamp.isoformat() == "2021-12-11T10:05:31+00:00"


def test_spec_overridden_without_reason(client: FlaskClient, store: Store) -> None:
    assert client.post(URL, json=SPEC_13).status_code == 200
    (row,) = rows(store)
    assert row.outcome == "overridden"
    assert row.override_code is None and row.user_comment is None


def test_spec_overridden_with_reason(client: FlaskClient, store: Store) -> None:
    assert client.post(URL, json=SPEC_14).status_code == 200
    (row,) = rows(store)
    assert row.override_code == "d7ecf885"
    assert row.override_system == "https://example.com/cds-hooks/override-reason-system"
    assert row.user_comment == "A comment entered by the clinician."


def test_duplicates_stored_once(client: FlaskClient, store: Store) -> None:
    assert client.post(URL, json=SPEC_12).status_code == 200
    assert client.post(URL, json=SPEC_12).status_code == 200
    twice = {"feedback": SPEC_14["feedback"] * 2}
    assert client.post(URL, json=twice).status_code == 200
    same_instant = copy.deepcopy(SPEC_12)
    same_instant["feedback"][0]["outcomeTimestamp"] = "2021-12-11T10:05:31.000+00:00"
    assert client.post(URL, json=same_instant).status_code == 200
    assert len(rows(store)) == 2


def test_several_items_and_services(client: FlaskClient, store: Store) -> None:
    body = {"feedback": SPEC_12["feedback"] + SPEC_13["feedback"] + SPEC_14["feedback"]}
    assert client.post(URL, json=body).status_code == 200
    other = "/cds-services/magnesium-aki-order-sign/feedback"
    assert client.post(other, json=SPEC_13).status_code == 200  # same item, stored once
    assert [r.service_id for r in rows(store)] == [SERVICE] * 3


def item(**changes: Any) -> dict[str, Any]:
    base = copy.deepcopy(ACCEPTED["feedback"][0])
    for key, value in changes.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return {"feedback": [base]}


BAD_BODIES: dict[str, Any] = {
    "empty object": {},
    "feedback not a list": {"feedback": {"card": "x"}},
    "empty feedback": {"feedback": []},
    "list body": [ACCEPTED],
    "item not object": {"feedback": ["x"]},
    "card missing": item(card=None),
    "card not a uuid": item(card="card-1"),
    "card not a string": item(card=42),
    "outcome missing": item(outcome=None),
    "outcome unknown": item(outcome="rejected"),
    "timestamp missing": item(outcomeTimestamp=None),
    "timestamp not a date": item(outcomeTimestamp="yesterday"),
    "timestamp date only": item(outcomeTimestamp="2021-12-11"),
    "timestamp a number": item(outcomeTimestamp=1639217131),
    "accepted without suggestions": item(acceptedSuggestions=None),
    "accepted with empty suggestions": item(acceptedSuggestions=[]),
    "suggestion without id": item(acceptedSuggestions=[{}]),
    "suggestion not object": item(acceptedSuggestions=["e56e"]),
    "override not object": item(outcome="overridden", overrideReason="busy"),
    "override reason without system": item(
        outcome="overridden", overrideReason={"reason": {"code": "x"}}
    ),
    "override comment not text": item(outcome="overridden", overrideReason={"userComment": 3}),
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_body_is_400(client: FlaskClient, store: Store, body: Any) -> None:
    response = client.post(URL, json=body)
    assert response.status_code == 400
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["severity"] == "error"
    assert rows(store) == []


def test_not_json_is_400(client: FlaskClient) -> None:
    response = client.post(URL, data=b"{feedback", content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_not_json_content_type_is_415(client: FlaskClient) -> None:
    response = client.post(URL, data=json.dumps(SPEC_12), content_type="text/plain")
    assert response.status_code == 415


def test_one_bad_item_stores_nothing(client: FlaskClient, store: Store) -> None:
    body = {"feedback": SPEC_12["feedback"] + item(outcome="maybe")["feedback"]}
    response = client.post(URL, json=body)
    assert response.status_code == 400
    assert "feedback[1].outcome" in json.dumps(response.get_json())
    assert rows(store) == []


def test_override_without_coding_is_fine(client: FlaskClient, store: Store) -> None:
    body = item(
        outcome="overridden", acceptedSuggestions=None, overrideReason={"userComment": "no"}
    )
    assert client.post(URL, json=body).status_code == 200
    assert rows(store)[0].user_comment == "no"


def test_unknown_service_is_404(client: FlaskClient) -> None:
    response = client.post("/cds-services/no-such-service/feedback", json=SPEC_12)
    assert response.status_code == 404
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_get_is_405(client: FlaskClient) -> None:
    assert client.get(URL).status_code == 405


def test_jwt_required_when_auth_on(store: Store) -> None:
    app = make_app(store, CDS_AUTH="jwt")
    verifier: FakeVerifier = app.extensions["cds"].verifier
    with app.test_client() as c:
        denied = c.post(URL, json=SPEC_12)
        assert denied.status_code == 401
        assert "secret internal reason" not in denied.get_data(as_text=True)
        assert denied.headers.get("WWW-Authenticate") == "Bearer"
        # unauthenticated callers learn nothing about service ids
        assert c.post("/cds-services/nope/feedback", json=SPEC_12).status_code == 401
        ok = c.post(URL, json=SPEC_12, headers={"Authorization": "Bearer good"})
        assert ok.status_code == 200
    assert verifier.audiences[0] == [
        f"http://localhost{URL}",
        f"http://localhost/cds-services/{SERVICE}",
    ]
    assert len(rows(store)) == 1


def test_configured_audience_is_used(store: Store) -> None:
    app = make_app(store, CDS_AUTH="jwt", CDS_AUDIENCE="https://cds.example.org/feedback")
    with app.test_client() as c:
        c.post(URL, json=SPEC_12, headers={"Authorization": "Bearer good"})
    assert app.extensions["cds"].verifier.audiences == [["https://cds.example.org/feedback"]]


def test_auth_on_without_verifier_fails_closed(store: Store) -> None:
    app = make_app(store, CDS_AUTH="jwt")
    app.extensions["cds"].verifier = None
    with app.test_client() as c:
        assert (
            c.post(URL, json=SPEC_12, headers={"Authorization": "Bearer good"}).status_code == 401
        )
