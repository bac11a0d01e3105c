"""FHIR Subscription end to end against the Medplum-based server: notify, fetch, evaluate, write back.

The server has no Subscription delivery, so the test posts the notifications itself, as the
server would: an id-only R4B history Bundle whose focus names a foreign host (never used).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds_service.app import create_app
from cds_service.events import fhir_notify
from cds_service.store import engine_for
from cds_service.store.events_models import AdviceIssued, OutboxRow
from tests.dbsupport import db_url, pg_schema_url  # noqa: F401 - sqlite and PostgreSQL
from tests.integration.fhir_server import FhirServer
from tests.integration.hooks_support import ago, coding

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
TOKEN = "events-token-for-tests"
ADVICE_SYSTEM = "urn:magnesium-aki-cds:advice"


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _obs(patient: str, value_set: str, value: float, unit: str, hours: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": {"coding": [coding(value_set)]}, "subject": {"reference": patient},
        "effectiveDateTime": ago(hours),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }  # fmt: skip


def load_icu_patient(server: FhirServer) -> dict[str, str]:
    """An adult in the ICU (Location type ICU) with eGFR, creatinine, weight and a low Mg."""
    p, loc, enc, mg = _urn(), _urn(), _urn(), _urn()
    entries = [
        (p, {"resourceType": "Patient", "birthDate": "1961-04-02", "gender": "female",
             "identifier": [{"system": "urn:oid:2.16.840.1.113883.19.5", "value": "MRN-SUB-1"}]}),
        (loc, {"resourceType": "Location", "name": "Medical ICU", "type": [{"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "ICU"}]}]}),
        (enc, {"resourceType": "Encounter", "status": "in-progress",
               "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
               "subject": {"reference": p}, "period": {"start": ago(30)},
               "location": [{"location": {"reference": loc}, "period": {"start": ago(30)}}]}),
        (_urn(), _obs(p, "egfr", 78, "mL/min/{1.73_m2}", 20)),
        (_urn(), _obs(p, "creatinine", 0.9, "mg/dL", 20)),
        (_urn(), _obs(p, "body-weight", 72, "kg", 25)),
        (mg, _obs(p, "serum-magnesium-mass", 1.3, "mg/dL", 1)),
    ]  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": url, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}
        for url, res in entries
    ]}  # fmt: skip
    ids = server.ids(bundle, server.load(bundle))
    return {"patient": ids[p], "mg": ids[mg], "encounter": ids[enc]}


def r4b_id_only(subscription: str, number: int, focus: str) -> dict[str, Any]:
    """An R4B id-only event notification; the focus names another host on purpose."""
    status = {
        "resourceType": "SubscriptionStatus", "status": "active", "type": "event-notification",
        "eventsSinceSubscriptionStart": str(number),
        "notificationEvent": [{"eventNumber": str(number), "timestamp": ago(0),
                               "focus": {"reference": f"https://attacker.example/fhir/{focus}"}}],
        "subscription": {"reference": f"Subscription/{subscription}"},
        "topic": "http://example.org/topics/lab-results",
    }  # fmt: skip
    return {"resourceType": "Bundle", "type": "history", "timestamp": ago(0), "entry": [
        {"fullUrl": _urn(), "resource": status},
        {"fullUrl": f"https://attacker.example/fhir/{focus}",
         "request": {"method": "PUT", "url": focus}, "response": {"status": "200"}},
    ]}  # fmt: skip


@pytest.fixture
def app(fhir_server: FhirServer, tmp_path: Path, db_url: str) -> Iterator[Flask]:  # noqa: F811
    url = db_url
    (tmp_path / "none.json").write_text("{}")
    app = create_app({
        "CDS_DATABASE_URL": url, "CDS_AUTH": "jwt", "CDS_SECRET": "s3cret",
        "CDS_TRUSTED_ISSUERS": str(tmp_path / "none.json"), "CDS_EVENTS_TOKEN": TOKEN,
        "CDS_FHIR_BASE": fhir_server.base, "CDS_OUTBOUND": "fhir",
        "CDS_SITE_MAPPINGS": str(ROOT / "mappings" / "site" / "example.yaml"),
    })  # fmt: skip
    if "fhir_notifications" not in app.blueprints:
        app.register_blueprint(fhir_notify.bp)
    yield app
    loop = app.extensions.get(fhir_notify.LOOP)
    if loop is not None:
        loop.stop()


def post(client: FlaskClient, body: dict[str, Any]) -> Any:
    return client.post("/fhir/notifications", json=body,
                       headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/fhir+json"})  # fmt: skip


def communications(
    server: FhirServer, patient: str, want: int = 1, status: str | None = None
) -> list[dict[str, Any]]:
    """The patient's Communications, polled until ``want`` exist (in ``status``) or 15 s pass."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        bundle = requests.get(f"{server.base}/Communication?subject={patient}", timeout=5).json()
        found = [e["resource"] for e in bundle.get("entry", [])]
        if len(found) >= want and (status is None or all(c["status"] == status for c in found)):
            return found
        time.sleep(0.1)
    return found


def outbox(app: Flask) -> list[OutboxRow]:
    with Session(engine_for(app.extensions["cds"].settings.database_url)) as session:
        return list(session.scalars(select(OutboxRow).order_by(OutboxRow.id)))


def test_id_only_notification_fetches_evaluates_and_writes_a_communication(
    fhir_server: FhirServer, app: Flask
) -> None:
    ids = load_icu_patient(fhir_server)
    client = app.test_client()
    assert (
        client.post("/fhir/notifications", json=r4b_id_only("sub-1", 1, ids["mg"])).status_code
        == 401
    )
    resp = post(client, r4b_id_only("sub-1", 1, ids["mg"]))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    summary = resp.get_json()
    assert summary["form"] == "r4b" and summary["resources"] == 1 and summary["advice"] >= 1
    found = communications(fhir_server, ids["patient"], summary["advice"])
    assert len(found) == summary["advice"]
    with Session(engine_for(app.extensions["cds"].settings.database_url)) as session:
        summaries = {a.summary for a in session.scalars(select(AdviceIssued))}
    for comm in found:
        assert comm["status"] == "completed"
        assert comm["about"] == [{"reference": ids["mg"]}]
        assert comm["subject"] == {"reference": ids["patient"]}
        assert comm["identifier"][0]["system"] == ADVICE_SYSTEM
        assert comm["priority"] in ("routine", "urgent", "stat")
        assert comm["payload"][0]["contentString"].split("\n\n")[0] in summaries

    again = post(client, r4b_id_only("sub-1", 1, ids["mg"]))
    assert again.status_code == 200 and again.get_json()["duplicate"] is True
    renumbered = post(client, r4b_id_only("sub-1", 2, ids["mg"]))  # same resource, new event
    assert renumbered.status_code == 200 and renumbered.get_json()["advice"] == 0
    time.sleep(0.5)
    assert len(communications(fhir_server, ids["patient"], len(found))) == len(found)

    mg = requests.get(f"{fhir_server.base}/{ids['mg']}", timeout=5).json()
    mg["status"] = "entered-in-error"
    assert requests.put(f"{fhir_server.base}/{ids['mg']}", json=mg, timeout=5).status_code == 200
    withdrawn = post(client, r4b_id_only("sub-1", 3, ids["mg"]))
    assert withdrawn.status_code == 200
    after = communications(fhir_server, ids["patient"], len(found), status="entered-in-error")
    assert [c["status"] for c in after] == ["entered-in-error"] * len(found)
    rows = outbox(app)
    assert {(r.kind, r.status) for r in rows} == {("advice", "sent"), ("withdrawal", "sent")}


def test_gap_requery_finds_the_missed_observation(fhir_server: FhirServer, app: Flask) -> None:
    ids = load_icu_patient(fhir_server)
    client = app.test_client()
    handshake = r4b_id_only("sub-2", 0, ids["mg"])
    status = handshake["entry"][0]["resource"]
    status["type"], status["notificationEvent"] = "handshake", []
    handshake["entry"] = handshake["entry"][:1]
    assert post(client, handshake).get_json()["type"] == "handshake"
    heartbeat = r4b_id_only("sub-2", 4, ids["mg"])  # four events were never delivered
    heartbeat["entry"][0]["resource"].update(type="heartbeat", notificationEvent=[])
    heartbeat["entry"] = heartbeat["entry"][:1]
    resp = post(client, heartbeat)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["gap"] is True and body["resources"] >= 1 and body["advice"] >= 1
    assert communications(fhir_server, ids["patient"], body["advice"])


def test_subscribe_creates_the_subscription(
    fhir_server: FhirServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cds_service.cli import main

    for key, value in {"CDS_FHIR_BASE": fhir_server.base, "CDS_EVENTS_TOKEN": TOKEN,
                       "CDS_AUTH": "jwt"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    endpoint = "https://cds.example.org/fhir/notifications"
    assert main(["subscribe", "--endpoint", endpoint, "--payload", "id-only"]) == 0
    ref = capsys.readouterr().out.strip()
    assert ref.startswith("Subscription/") and TOKEN not in ref
    sub = requests.get(f"{fhir_server.base}/{ref}", timeout=5).json()
    assert (
        sub["criteria"].startswith("Observation?code=")
        and "http://loinc.org|19123-9" in sub["criteria"]
    )
    assert sub["channel"]["type"] == "rest-hook" and sub["channel"]["endpoint"] == endpoint
    assert sub["channel"]["header"] == [f"Authorization: Bearer {TOKEN}"]
    assert sub["channel"]["payload"] == "application/fhir+json"
    monkeypatch.delenv("CDS_EVENTS_TOKEN")
    assert main(["subscribe", "--endpoint", endpoint]) == 1
