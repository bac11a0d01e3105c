"""CDS Hooks over HTTP with the Flask test client: one app per module, a temporary SQLite DB."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.medicationrequest import MedicationRequest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.store import migrate
from tests.integration.hooks_support import (
    SERVICE,
    check_response,
    condition,
    medication_suggestions,
    observation,
    positive_control,
    searchset,
    spec_example,
    wrap_order_context,
)

ORIGIN = "https://ehr.example.org"
PV = SERVICE + "patient-view"


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'cds.db'}"
    migrate(url)
    yield create_app(
        {"CDS_DATABASE_URL": url, "CDS_AUTH": "off", "CDS_SECRET": "test-secret",
         "CDS_MAX_BODY_BYTES": 1_000_000, "CDS_CORS_ORIGINS": ORIGIN,
         "CDS_FHIR_ALLOWLIST": "https://fhir.allowed.example"}
    )  # fmt: skip


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def post(client: FlaskClient, body: Any, path: str = PV, **headers: str) -> Any:
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", headers=headers)


def outcome(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.get_data(as_text=True)
    body: dict[str, Any] = resp.get_json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["severity"] == "error"
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


# --- discovery ---------------------------------------------------------------------------


def test_discovery_lists_four_services(client: FlaskClient) -> None:
    resp = client.get("/cds-services")
    assert resp.status_code == 200
    services = {s["id"]: s for s in resp.get_json()["services"]}
    assert {s: services[s]["hook"] for s in services} == {
        "magnesium-aki-patient-view": "patient-view",
        "magnesium-aki-order-select": "order-select",
        "magnesium-aki-order-sign": "order-sign",
        "magnesium-aki-result-review": "result-review",
    }
    for s in services.values():
        assert s["title"] and s["description"] and s["usageRequirements"]
        assert s["prefetch"]["patient"] == "Patient/{{context.patientId}}"
        assert s["prefetch"]["magnesium"].startswith("Observation?patient={{context.patientId}}&code=")
        assert "_sort=-date" in s["prefetch"]["magnesium"]
        assert "_count=" in s["prefetch"]["magnesium"]
        # context as EHRs send it: the current encounter without encounterId, its Locations,
        # the results' Specimens, planned procedures, doses given
        assert s["prefetch"]["encounters"] == (
            "Encounter?patient={{context.patientId}}&status=in-progress&_include=Encounter:location")
        assert s["prefetch"]["magnesium"].endswith("&_include=Observation:specimen")
        assert {"planned-procedures", "service-requests", "administrations"} <= set(s["prefetch"])


def test_discovery_prefetch_tokens_are_context_fields(client: FlaskClient) -> None:
    for s in client.get("/cds-services").get_json()["services"]:
        for template in s["prefetch"].values():
            for token in template.split("{{")[1:]:
                assert token.split("}}")[0] in ("context.patientId", "context.encounterId")


# --- invocation: cards -------------------------------------------------------------------


def test_positive_control_suggests_magnesium_sulfate(client: FlaskClient) -> None:
    resp = post(client, positive_control())
    assert resp.status_code == 200
    body = resp.get_json()
    check_response(body)
    meds = medication_suggestions(body)
    assert len(meds) == 1
    MedicationRequest.model_validate(meds[0])
    assert meds[0]["subject"]["reference"] == "Patient/gate-1"
    card = next(c for c in body["cards"] if "suggestions" in c)
    assert card["selectionBehavior"] == "at-most-one"
    assert card["source"]["url"].startswith("https://doi.org/")
    assert card["source"]["topic"]["system"] == "urn:magnesium-aki-cds:rule"
    ext = card["extension"]["magnesium-aki"]
    assert card["source"]["topic"]["code"] == ext["rules"][0]
    assert ext["magnesium"]["value_mg_dl"] == 1.5 and set(ext["rule_versions"]) == set(ext["rules"])
    assert all(r["system"] == "urn:magnesium-aki-cds:override-reason" for r in card["overrideReasons"])


def _without_renal(req: dict[str, Any]) -> None:
    req["prefetch"]["creatinine"] = searchset()
    req["prefetch"]["egfr"] = searchset()


GATE_CASES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "renal-unknown": _without_renal,
    "egfr-low": lambda r: r["prefetch"].update(
        egfr=searchset(observation("egfr-1", "egfr", 25, "mL/min/{1.73_m2}", 2))),
    "creatinine-high": lambda r: r["prefetch"].update(
        creatinine=searchset(observation("cr-1", "creatinine", 3.8, "mg/dL", 2))),
    "dialysis": lambda r: r["prefetch"].update(conditions=searchset(condition("c1", "esrd"))),
    "myasthenia": lambda r: r["prefetch"].update(conditions=searchset(condition("c1", "myasthenia-gravis"))),
    "av-block": lambda r: r["prefetch"].update(conditions=searchset(condition("c1", "av-block-high-grade"))),
    "pregnancy": lambda r: r["prefetch"].update(conditions=searchset(condition("c1", "pregnancy"))),
    "low-weight": lambda r: r["prefetch"].update(
        weight=searchset(observation("wt-1", "body-weight", 35, "kg", 20))),
    "child": lambda r: r["prefetch"]["patient"].update(birthDate="2015-01-01"),
    "mg-missing": lambda r: r["prefetch"].update(magnesium=searchset(
        observation("mg-1", "serum-magnesium-mass", 1.5, "mg/dL", 100))),
}  # fmt: skip


@pytest.mark.parametrize("condition_id", sorted(GATE_CASES))
def test_each_gate_condition_removes_the_medication(client: FlaskClient, condition_id: str) -> None:
    req = positive_control()
    GATE_CASES[condition_id](req)
    resp = post(client, req)
    assert resp.status_code == 200
    check_response(resp.get_json())
    assert medication_suggestions(resp.get_json()) == []


@pytest.mark.parametrize(
    ("header", "chinese"),
    [("zh-CN", True), ("zh-CN,zh;q=0.9,en;q=0.8", True), ("en;q=0.5, zh-Hans;q=0.9", True),
     ("zh-CN;q=0.1, en", False), ("zh-TW", False), ("fr", False), ("", False)],
)  # fmt: skip
def test_card_language_from_accept_language(client: FlaskClient, header: str, chinese: bool) -> None:
    resp = post(client, positive_control(), **({"Accept-Language": header} if header else {}))
    assert resp.status_code == 200
    summaries = " ".join(c["summary"] + c["detail"] for c in resp.get_json()["cards"])
    assert any("\u4e00" <= ch <= "\u9fff" for ch in summaries) is chinese


@pytest.mark.parametrize("hook", ["order-select", "order-sign", "result-review"])
def test_other_hooks_answer_with_valid_cards(client: FlaskClient, hook: str) -> None:
    resp = post(client, positive_control(hook), SERVICE + hook)
    assert resp.status_code == 200
    check_response(resp.get_json())
    assert resp.get_json()["cards"]


def test_order_sign_magnesium_while_gate_holds_warns(client: FlaskClient) -> None:
    req = positive_control("order-sign")
    GATE_CASES["egfr-low"](req)
    mg = {"resourceType": "MedicationRequest", "id": "draft-mg", "status": "draft", "intent": "order",
          "subject": {"reference": "Patient/gate-1"},
          "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "6585", "display": "magnesium sulfate"}]}}  # fmt: skip
    req["context"]["draftOrders"]["entry"] = [{"resource": mg}]
    body = post(client, req, SERVICE + "order-sign").get_json()
    check_response(body)
    rules = [r for c in body["cards"] for r in c["extension"]["magnesium-aki"]["rules"]]
    assert "mg-order-unsafe" in rules


@pytest.mark.parametrize(
    ("name", "hook"),
    [("03_order-select_request_context_R4.json", "order-select"),
     ("04_order-sign_request_context_R4.json", "order-sign")],
)  # fmt: skip
def test_spec_order_contexts_wrapped_with_prefetch(client: FlaskClient, name: str, hook: str) -> None:
    resp = post(client, wrap_order_context(name, hook), SERVICE + hook)
    assert resp.status_code == 200
    check_response(resp.get_json())


def test_spec_patient_view_example_gets_412(client: FlaskClient) -> None:
    body = outcome(post(client, spec_example("02_patient-view_request.json")), 412)
    assert "patient" in body["issue"][0]["details"]["text"]
    assert "some-opaque-fhir-access-token" not in json.dumps(body)


def test_no_advice_is_an_empty_card_array(client: FlaskClient) -> None:
    req = positive_control()
    req["prefetch"]["magnesium"] = searchset(observation("mg-1", "serum-magnesium-mass", 2.0, "mg/dL", 2))
    req["prefetch"]["encounter"] = None
    resp = post(client, req)
    assert resp.status_code == 200 and resp.get_json() == {"cards": []}


def test_unknown_prefetch_keys_and_bad_resources_are_tolerated(client: FlaskClient) -> None:
    req = positive_control()
    req["prefetch"]["somethingElse"] = {"resourceType": "Patient", "id": "other"}
    req["prefetch"]["conditions"]["entry"].append({"resource": "not a resource"})
    req["extension"] = {"com.example.timestamp": "2017-11-27T22:13:25Z"}
    resp = post(client, req)
    assert resp.status_code == 200
    assert medication_suggestions(resp.get_json())


def test_optional_data_missing_is_said_on_the_card(client: FlaskClient) -> None:
    req = positive_control()
    req["prefetch"]["procedures"] = {"resourceType": "OperationOutcome", "issue": [
        {"severity": "error", "code": "exception"}]}  # fmt: skip
    body = post(client, req).get_json()
    assert any("procedures" in c["detail"] for c in body["cards"])


def test_cards_are_recorded_for_feedback(app: Flask, client: FlaskClient) -> None:
    req = positive_control()
    body = post(client, req).get_json()
    rows = app.extensions["cds"].store.cards_for(req["hookInstance"])
    assert {r.uuid for r in rows} == {c["uuid"] for c in body["cards"]}
    assert all(r.patient_hash and "gate-1" not in r.patient_hash for r in rows)
    assert {r.uuid: r.rule_ids for r in rows} == {
        c["uuid"]: c["extension"]["magnesium-aki"]["rules"] for c in body["cards"]}


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "why"),
    [(lambda r: r.pop("hook"), "hook"), (lambda r: r.pop("hookInstance"), "hookInstance"),
     (lambda r: r.pop("context"), "context"), (lambda r: r.update(hook="order-sign"), "mismatch"),
     (lambda r: r["context"].pop("patientId"), "patientId"),
     (lambda r: r.update(fhirAuthorization={"access_token": "x"}), "fhirAuthorization"),
     (lambda r: r.update(prefetch=[]), "prefetch")],
)  # fmt: skip
def test_400_on_a_bad_request(client: FlaskClient, mutate: Any, why: str) -> None:
    req = positive_control()
    mutate(req)
    outcome(post(client, req), 400)


@pytest.mark.parametrize("raw", ["{not json", "[]", '"text"', b"\xff\xfe"])
def test_400_on_malformed_json(client: FlaskClient, raw: str | bytes) -> None:
    outcome(post(client, raw), 400)


def test_400_on_draft_orders_that_are_not_a_bundle(client: FlaskClient) -> None:
    req = positive_control("order-sign")
    req["context"]["draftOrders"] = [{"resourceType": "MedicationRequest"}]
    outcome(post(client, req, SERVICE + "order-sign"), 400)


def test_404_unknown_service(client: FlaskClient) -> None:
    outcome(post(client, positive_control(), "/cds-services/no-such-service"), 404)
    outcome(client.get("/no/such/path"), 404)


def test_405_wrong_method(client: FlaskClient) -> None:
    outcome(client.get(PV), 405)
    outcome(client.put("/cds-services"), 405)


def test_413_body_too_large(client: FlaskClient) -> None:
    req = positive_control()
    req["extension"] = {"org.example.padding": "x" * 1_100_000}
    outcome(post(client, req), 413)


def test_415_not_json(client: FlaskClient) -> None:
    resp = client.post(PV, data=json.dumps(positive_control()), content_type="text/plain")
    outcome(resp, 415)
    outcome(client.post(PV, data=json.dumps(positive_control())), 415)


# --- CORS and operations -----------------------------------------------------------------


def test_cors_preflight_for_allowed_origin(client: FlaskClient) -> None:
    resp = client.options(PV, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
    allowed = resp.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    got = post(client, positive_control(), Origin=ORIGIN)
    assert got.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_no_cors_headers_for_other_origins(client: FlaskClient) -> None:
    resp = client.options(PV, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers


def test_health_readiness_metrics(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"]["database"] is True
    post(client, positive_control())
    text = client.get("/metrics").get_data(as_text=True)
    assert 'cds_http_requests_total{route="/cds-services/<service_id>",service="magnesium-aki-patient-view",status="200"}' in text
    assert "cds_http_request_seconds_bucket" in text


def test_rules_json_and_html(client: FlaskClient) -> None:
    doc = client.get("/rules", headers={"Accept": "application/json"}).get_json()
    assert doc["rules"] and all(r["citations"] for r in doc["rules"])
    html = client.get("/rules", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert html.mimetype == "text/html" and "doi.org" in html.get_data(as_text=True)


def test_openapi_lists_exactly_the_served_paths(app: Flask, client: FlaskClient) -> None:
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    ids = app.extensions["cds"].services
    served = {r.rule for r in app.url_map.iter_rules()} - {"/static/<path:filename>"}
    expanded = {r.replace("<service_id>", sid) for r in served for sid in ids}  # one path per service
    assert set(doc["paths"]) == expanded


def test_shadow_mode_records_but_returns_no_cards(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shadow.db'}"
    migrate(url)
    shadow = create_app({"CDS_DATABASE_URL": url, "CDS_AUTH": "off", "CDS_SHADOW": "1"})
    req = positive_control()
    resp = post(shadow.test_client(), req)
    assert resp.status_code == 200 and resp.get_json() == {"cards": []}
    assert shadow.extensions["cds"].store.cards_for(req["hookInstance"])
