"""``POST /fhir/notifications`` with a fake FHIR server: auth, limits, forms, event numbers, gaps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds_service.app import create_app
from cds_service.events import fhir_events, fhir_notify
from cds_service.events.outbound import DeliveryLoop
from cds_service.store import engine_for
from cds_service.store.events_models import AdviceIssued, LabResultRow, OutboxRow
from cds_service.store.subscription_models import FhirSubscriptionState
from tests.integration.hooks_support import ago, coding
from tests.unit.fhir_fakes import FakeFhir, icu_patient
from tests.unit.test_fhir_notify_forms import MALFORMED, bundle, status

ROOT = Path(__file__).parents[2]
TOKEN = "t0ken-for-notifications"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeFhir:
    server = FakeFhir(icu_patient())
    monkeypatch.setattr(fhir_events, "fhir_writer", lambda *a, **k: server)
    return server


def make_app(db_url: str, tmp_path: Path, **extra: str) -> Flask:
    (tmp_path / "issuers.json").write_text("{}")
    config = {"CDS_DATABASE_URL": db_url, "CDS_AUTH": "jwt", "CDS_SECRET": "s",
              "CDS_TRUSTED_ISSUERS": str(tmp_path / "issuers.json"), "CDS_EVENTS_TOKEN": TOKEN,
              "CDS_FHIR_BASE": "http://fhir.test/base", "CDS_OUTBOUND": "", "CDS_MAX_BODY_BYTES": "20000",
              "CDS_SITE_MAPPINGS": str(ROOT / "mappings" / "site" / "example.yaml"), **extra}  # fmt: skip
    app = create_app(config)
    if "fhir_notifications" not in app.blueprints:
        app.register_blueprint(fhir_notify.bp)
    return app


@pytest.fixture
def client(db_url: str, tmp_path: Path, fake: FakeFhir) -> Iterator[FlaskClient]:
    yield make_app(db_url, tmp_path).test_client()


def post(client: FlaskClient, body: Any, **headers: str) -> Any:
    return client.post("/fhir/notifications", json=body, headers={**AUTH, **headers})


def event(n: int, *focus: str, sub: str = "s1") -> dict[str, Any]:
    note = bundle(
        status("event-notification", n, *((n, f"https://evil.example/{f}") for f in focus))
    )
    note["entry"][0]["resource"]["subscription"]["reference"] = f"Subscription/{sub}"
    return note


def rows(client: FlaskClient, model: Any) -> list[Any]:
    url = client.application.extensions["cds"].settings.database_url
    with Session(engine_for(url)) as session:
        return list(session.scalars(select(model)))


def test_bearer_token_is_required(client: FlaskClient) -> None:
    note = bundle(status("heartbeat", 0))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = client.post("/fhir/notifications", json=note, headers=headers)
        assert resp.status_code == 401 and resp.get_json()["resourceType"] == "OperationOutcome"
    assert post(client, note).status_code == 200


def test_auth_off_needs_no_token(db_url: str, tmp_path: Path, fake: FakeFhir) -> None:
    app = make_app(db_url, tmp_path, CDS_AUTH="off")
    assert (
        app.test_client()
        .post("/fhir/notifications", json=bundle(status("heartbeat", 0)))
        .status_code
        == 200
    )


def test_media_type_size_and_json_errors(client: FlaskClient) -> None:
    bad_type = client.post(
        "/fhir/notifications", data="{}", headers={**AUTH, "Content-Type": "text/plain"}
    )
    assert bad_type.status_code == 415
    big = client.post(
        "/fhir/notifications",
        data="x" * 30000,
        headers={**AUTH, "Content-Type": "application/fhir+json"},
    )
    assert big.status_code == 413
    broken = client.post(
        "/fhir/notifications",
        data="{nope",
        headers={**AUTH, "Content-Type": "application/fhir+json"},
    )
    assert broken.status_code == 400 and "Traceback" not in broken.get_data(as_text=True)


def test_malformed_never_500(client: FlaskClient) -> None:
    weird_obs = [{"resourceType": "Observation", "id": "w1", "subject": "Patient/p1"},
                 {"resourceType": "Observation", "id": "w2", "subject": {"reference": "Patient/p1"}, "code": "x"},
                 {"resourceType": "Observation", "id": "w3", "subject": {"reference": "Patient/p1"},
                  "code": {"coding": [coding("serum-magnesium-mass")]}, "valueQuantity": "1.2", "status": "final",
                  "effectiveDateTime": ago(1)}]  # fmt: skip
    for body in [
        *MALFORMED,
        *weird_obs,
        bundle(status("event-notification", 1, (1, "Observation/w2")), {"resource": weird_obs[2]}),
    ]:
        resp = post(client, body)
        assert resp.status_code in (200, 400), (body, resp.get_data(as_text=True))


def test_handshake_and_heartbeat_answered(client: FlaskClient) -> None:
    for kind in ("handshake", "heartbeat"):
        resp = post(client, bundle(status(kind, 0)))
        assert resp.status_code == 200 and resp.get_json()["type"] == kind


def test_full_resource_is_used_as_sent(client: FlaskClient, fake: FakeFhir) -> None:
    mg = fake.resources["Observation/mg1"]
    resp = post(
        client, bundle(status("event-notification", 1, (1, "Observation/mg1")), {"resource": mg})
    )
    body = resp.get_json()
    assert resp.status_code == 200 and body["results"] == 1 and body["advice"] >= 1
    assert "Observation/mg1" not in fake.gets
    assert rows(client, AdviceIssued) and all(
        a.trigger_result_id for a in rows(client, AdviceIssued)
    )


def test_id_only_fetches_from_the_configured_base(client: FlaskClient, fake: FakeFhir) -> None:
    resp = post(client, event(1, "Observation/mg1"))
    assert resp.status_code == 200 and resp.get_json()["results"] == 1
    assert "Observation/mg1" in fake.gets and not any(
        "evil" in g for g in fake.gets + fake.searches
    )
    assert {r.kind for r in rows(client, LabResultRow)} >= {
        "serum-mg",
        "creatinine",
        "egfr",
        "weight",
    }


def test_empty_and_r4_classic_query_since_the_last_event(
    client: FlaskClient, fake: FakeFhir
) -> None:
    post(client, event(1, "Observation/cr1"))
    resp = post(client, bundle(status("event-notification", 2)))
    assert resp.status_code == 200 and resp.get_json()["resources"] >= 1
    assert any("_lastUpdated=ge" in q and q.startswith("Observation?code=") for q in fake.searches)
    assert (
        client.post("/fhir/notifications", headers=AUTH).status_code == 200
    )  # classic, empty body
    assert post(client, fake.resources["Observation/mg1"]).get_json()["form"] == "classic"


def test_gap_is_requeried_and_duplicates_ignored(client: FlaskClient, fake: FakeFhir) -> None:
    first = post(client, event(1, "Observation/cr1")).get_json()
    assert first["gap"] is False and not any("_lastUpdated" in q for q in fake.searches)
    jump = post(client, event(4, "Observation/mg1")).get_json()
    assert jump["gap"] is True and any("_lastUpdated" in q for q in fake.searches)
    [before] = rows(client, FhirSubscriptionState)
    assert post(client, event(4, "Observation/mg1")).get_json()["duplicate"] is True
    assert post(client, event(2, "Observation/mg1")).get_json()["duplicate"] is True
    [after] = rows(client, FhirSubscriptionState)  # a duplicate does not move the re-query window
    assert (after.last_event_number, after.last_event_at, after.gaps) == (
        4,
        before.last_event_at,
        1,
    )


def test_fhir_down_is_503_and_the_event_is_not_consumed(
    client: FlaskClient, fake: FakeFhir
) -> None:
    fake.down = True
    resp = post(client, event(1, "Observation/mg1"))
    assert resp.status_code == 503 and resp.get_json()["resourceType"] == "OperationOutcome"
    fake.down = False
    again = post(client, event(1, "Observation/mg1")).get_json()
    assert again["duplicate"] is False and again["results"] == 1


def test_entered_in_error_withdraws_and_queues_corrections(
    db_url: str, tmp_path: Path, fake: FakeFhir
) -> None:
    app = make_app(db_url, tmp_path, CDS_OUTBOUND="fhir,hl7")
    state = app.extensions["cds"]
    app.extensions[fhir_notify.LOOP] = DeliveryLoop(
        state.store.engine, state.settings
    )  # not started
    client = app.test_client()
    advice = post(client, event(1, "Observation/mg1")).get_json()["advice"]
    assert advice >= 1 and len(rows(client, OutboxRow)) == 2 * advice
    fake.resources["Observation/mg1"] = {**fake.resources["Observation/mg1"], "status": "entered-in-error",
                                         "meta": {"versionId": "2"}}  # fmt: skip
    body = post(client, event(2, "Observation/mg1")).get_json()
    assert body["withdrawn"] == advice and all(a.withdrawn for a in rows(client, AdviceIssued))
    kinds = sorted((r.kind, r.channel) for r in rows(client, OutboxRow))
    assert (
        kinds.count(("withdrawal", "fhir")) == advice
        and kinds.count(("withdrawal", "hl7")) == advice
    )


def test_fhir_patient_joins_a_patient_known_from_hl7(store: Any) -> None:
    from datetime import UTC, datetime

    from cds_service.events.fhir_results import fhir_patient
    from cds_service.events.hl7_context import Demographics, PatientId
    from cds_service.events.patients import resolve_patient

    now = datetime(2024, 5, 10, tzinfo=UTC)
    with Session(store.engine) as session, session.begin():
        hl7 = resolve_patient(
            session, Demographics(PatientId("urn:oid:1.2.3", "MRN7")), store.hash_id, now
        )
        res = {"resourceType": "Patient", "id": "p7", "birthDate": "1950-01-01",
               "identifier": [{"system": "urn:oid:1.2.3", "value": "MRN7"}]}  # fmt: skip
        same = fhir_patient(session, "p7", res, store.hash_id, now)
        other = fhir_patient(session, "p8", {**res, "identifier": []}, store.hash_id, now)
        assert same.id == hl7.id and str(same.birth_date) == "1950-01-01" and other.id != hl7.id
