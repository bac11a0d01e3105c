"""FHIR fallback through the real Flask app against a real FHIR server (Medplum in memory).

Two patients are loaded with one transaction Bundle, shaped as EHRs hold them: the current
admission names its Locations by reference only, beside an earlier finished admission. For
each of the four hooks, with and without ``encounterId``, the service is called (a) with the
prefetch an EHR would send (tests/integration/ehr_prefetch.py: each discovery template, its
tokens filled, run against the server; a key whose token the context lacks is not sent) and
(b) with no prefetch, only ``fhirServer`` and a bearer token: the cards must be the same
(uuids, suggestion ids and ``authoredOn`` aside, which are per call), with and without
``encounterId``. Then the server is stopped: without prefetch every hook answers 412 with an
OperationOutcome; with only the required keys prefetched, 200 with degraded cards that name
the optional data that was missing. Never a 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.store import migrate
from tests.integration.ehr_prefetch import ehr_prefetch as fill_prefetch
from tests.integration.fhir_server import FhirServer
from tests.integration.hooks_support import SERVICE, ago, check_response, coding

pytestmark = pytest.mark.integration

TOKEN = "fallback-http-token"


def knowledge_texts() -> dict[str, Any]:
    """The card text of the real mappings/ (the names the cards give missing data)."""
    from cds_service.rules.loader import load_knowledge

    return load_knowledge(Path(__file__).parents[2] / "mappings").texts
HOOKS = ("patient-view", "order-select", "order-sign", "result-review")
OPTIONAL = ("encounter", "encounters", "creatinine", "albumin", "egfr", "weight", "conditions",
            "procedures", "planned-procedures", "service-requests", "medications",
            "administrations")  # fmt: skip
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
UCUM = "http://unitsofmeasure.org"


# --- data: one transaction Bundle, two patients ----------------------------------------------


def _obs(
    n: str, patient: str, value_set: str, value: float, unit: str, hours: float
) -> dict[str, Any]:
    return {
        "resourceType": "Observation", "id": n, "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": "vital-signs" if value_set == "body-weight" else "laboratory"}]}],
        "code": {"coding": [coding(value_set)]},
        "subject": {"reference": patient}, "effectiveDateTime": ago(hours),
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }  # fmt: skip


def _med(n: str, patient: str, value_set: str, status: str = "active") -> dict[str, Any]:
    return {"resourceType": "MedicationRequest", "id": n, "status": status, "intent": "order",
            "medicationCodeableConcept": {"coding": [coding(value_set, "rxnorm")]},
            "subject": {"reference": patient}, "authoredOn": ago(30)}  # fmt: skip


def _condition(n: str, patient: str, value_set: str, system_part: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition", "id": n,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "code": {"coding": [coding(value_set, system_part)]},
        "subject": {"reference": patient}, "recordedDate": ago(30),
    }  # fmt: skip


def transaction() -> dict[str, Any]:
    """Patient A: the positive control (adult, ICU, Mg 1.5 mg/dL, eGFR 75, 70 kg) with every
    prefetch key populated. Patient B: data that would change A's cards if a search leaked it
    (a newer, high Mg; dialysis; renal failure values)."""
    a, b = (
        "urn:uuid:6a1c0000-0000-4000-8000-00000000000a",
        "urn:uuid:6a1c0000-0000-4000-8000-00000000000b",
    )
    enc_a = "urn:uuid:6a1c0000-0000-4000-8000-0000000000ea"
    ward, micu = (
        "urn:uuid:6a1c0000-0000-4000-8000-0000000000c1",
        "urn:uuid:6a1c0000-0000-4000-8000-0000000000c2",
    )
    resources: list[tuple[str, dict[str, Any]]] = [
        (a, {"resourceType": "Patient", "id": "pa", "gender": "female", "birthDate": "1960-04-02",
             "name": [{"family": "Fallback", "given": ["Alma"]}]}),
        (ward, {"resourceType": "Location", "id": "pa-ward", "name": "5 West",
                "type": [{"coding": [{"system": ROLE, "code": "HU"}]}]}),
        (micu, {"resourceType": "Location", "id": "pa-micu", "name": "MICU-2"}),  # named only
        ("", {"resourceType": "Encounter", "id": "pa-enc-old", "status": "finished",
              "class": coding("encounter-inpatient", "v3-ActCode"), "subject": {"reference": a},
              "period": {"start": ago(24 * 40), "end": ago(24 * 35)},
              "location": [{"location": {"reference": micu}, "period": {"start": ago(24 * 40), "end": ago(24 * 38)}}]}),
        (enc_a, {"resourceType": "Encounter", "id": "pa-enc", "status": "in-progress",
                 "class": coding("encounter-inpatient", "v3-ActCode"),
                 "subject": {"reference": a}, "period": {"start": ago(40)},
                 "location": [  # by reference only, as EHRs send it
                     {"location": {"reference": ward}, "period": {"start": ago(40), "end": ago(36)}},
                     {"location": {"reference": micu}, "period": {"start": ago(36)}}]}),
        ("", _obs("pa-mg1", a, "serum-magnesium-mass", 1.5, "mg/dL", 2)),
        ("", _obs("pa-mg2", a, "serum-magnesium-mass", 1.9, "mg/dL", 30)),
        ("", _obs("pa-cr1", a, "creatinine", 0.9, "mg/dL", 2)),
        ("", _obs("pa-cr2", a, "creatinine", 0.8, "mg/dL", 30)),
        ("", _obs("pa-egfr", a, "egfr", 75, "mL/min/{1.73_m2}", 2)),
        ("", _obs("pa-alb", a, "albumin", 3.8, "g/dL", 2)),
        ("", _obs("pa-wt", a, "body-weight", 70, "kg", 20)),
        ("", _condition("pa-sepsis", a, "sepsis", "icd-10")),
        ("", {"resourceType": "Procedure", "id": "pa-cvc", "status": "completed",
              "code": {"coding": [{"system": "http://snomed.info/sct", "code": "233527006",
                                   "display": "Central venous cannula insertion"}]},
              "subject": {"reference": a}, "performedDateTime": ago(30)}),
        ("", _med("pa-vanco", a, "vancomycin")),
        ("", _med("pa-ppi", a, "proton-pump-inhibitor")),
        (b, {"resourceType": "Patient", "id": "pb", "gender": "male", "birthDate": "1970-01-01"}),
        ("", _obs("pb-mg1", b, "serum-magnesium-mass", 3.4, "mg/dL", 1)),
        ("", _obs("pb-cr1", b, "creatinine", 4.2, "mg/dL", 1)),
        ("", _obs("pb-egfr", b, "egfr", 12, "mL/min/{1.73_m2}", 1)),
        ("", _obs("pb-wt", b, "body-weight", 95, "kg", 1)),
        ("", _condition("pb-esrd", b, "esrd", "")),
        ("", _med("pb-cis", b, "cisplatin")),
    ]  # fmt: skip
    entries = []
    for i, (url, res) in enumerate(resources):
        entries.append({"fullUrl": url or f"urn:uuid:6a1c0000-0000-4000-8000-{i:012d}", "resource": res,
                        "request": {"method": "POST", "url": res["resourceType"]}})  # fmt: skip
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def draft_orders(patient: str) -> dict[str, Any]:
    """A magnesium sulfate and a cisplatin draft MedicationRequest for ``Patient/<id>``."""

    def draft(rid: str, value_set: str, dose_g: float | None) -> dict[str, Any]:
        res: dict[str, Any] = {
            "resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
            "medicationCodeableConcept": {"coding": [coding(value_set, "rxnorm")]},
            "subject": {"reference": f"Patient/{patient}"}, "authoredOn": ago(0),
        }  # fmt: skip
        if dose_g is not None:
            res["dosageInstruction"] = [{"doseAndRate": [{"doseQuantity": {
                "value": dose_g, "unit": "g", "system": UCUM, "code": "g"}}]}]  # fmt: skip
        return res

    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": draft("draft-mg", "magnesium-sulfate", 2)},
        {"resource": draft("draft-cis", "cisplatin", None)},
    ]}  # fmt: skip


def context(hook: str, patient: str, encounter: str | None, new_at: str = "") -> dict[str, Any]:
    """The hook's context; ``new_at``: when result-review's new result was taken (else now)."""
    ctx: dict[str, Any] = {"userId": "Practitioner/dr-1", "patientId": patient}
    if encounter:
        ctx["encounterId"] = encounter
    if hook in ("order-select", "order-sign"):
        ctx["draftOrders"] = draft_orders(patient)
    if hook == "order-select":
        ctx["selections"] = ["MedicationRequest/draft-mg", "MedicationRequest/draft-cis"]
    if hook == "result-review":  # a result just filed, not yet on the server
        new = _obs("new-mg", f"Patient/{patient}", "serum-magnesium-mass", 1.4, "mg/dL", 0.1)
        new["effectiveDateTime"] = new_at or new["effectiveDateTime"]
        ctx["results"] = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": new}],
        }
    return ctx


# --- the app, the EHR side, comparison -------------------------------------------------------


@pytest.fixture
def app(fhir_server: FhirServer, tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    migrate(url)
    yield create_app(
        {"CDS_DATABASE_URL": url, "CDS_AUTH": "off", "CDS_SECRET": "test-secret",
         "CDS_FHIR_ALLOWLIST": fhir_server.base, "CDS_FHIR_DEADLINE_MS": 5000}
    )  # fmt: skip


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def ehr_prefetch(server: FhirServer, template: dict[str, str], ctx: dict[str, Any]) -> dict[str, Any]:
    """What an EHR sends (tests/integration/ehr_prefetch.py) from this server."""
    return fill_prefetch(server.base, template, ctx)


def request_body(hook: str, ctx: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"hook": hook, "hookInstance": f"fallback-{hook}-{datetime.now(UTC).timestamp()}",
            "context": ctx, **extra}  # fmt: skip


def fhir_access(server: FhirServer) -> dict[str, Any]:
    return {"fhirServer": server.base,
            "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                  "scope": "patient/*.read", "subject": "cds-service"}}  # fmt: skip


def call(client: FlaskClient, hook: str, body: dict[str, Any]) -> Any:
    resp = client.post(SERVICE + hook, data=json.dumps(body), content_type="application/json")
    assert resp.status_code != 500, resp.get_data(as_text=True)
    assert "Traceback" not in resp.get_data(as_text=True)
    return resp


def comparable(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cards without what differs per call: uuids, suggestion resource ids and authoredOn."""
    out = []
    for given in cards:
        card = {k: v for k, v in given.items() if k != "uuid"}
        card["suggestions"] = [
            {**{k: v for k, v in s.items() if k != "uuid"},
             "actions": [{**a, "resource": {k: v for k, v in a["resource"].items() if k not in ("id", "authoredOn")}}
                         if "resource" in a else a for a in s["actions"]]}
            for s in card.get("suggestions", [])
        ]  # fmt: skip
        out.append(card)
    return out


def rules(cards: list[dict[str, Any]]) -> set[str]:
    return {r for c in cards for r in c["extension"]["magnesium-aki"]["rules"]}


def medication_suggestions(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a["resource"] for c in cards for s in c.get("suggestions", []) for a in s["actions"]
            if a.get("resource", {}).get("resourceType") == "MedicationRequest"]  # fmt: skip


# --- tests -------------------------------------------------------------------------------------


def test_fallback_gives_the_same_cards_as_prefetch_then_412_or_degraded_when_the_server_stops(
    fhir_server: FhirServer, app: Flask, client: FlaskClient
) -> None:
    bundle = transaction()
    ids = fhir_server.ids(bundle, fhir_server.load(bundle))
    patient, encounter = ids["pa"].split("/")[1], ids["pa-enc"].split("/")[1]
    discovery = {s["hook"]: s for s in client.get("/cds-services").get_json()["services"]}
    seen: list[tuple[str, str | None]] = []  # requests the FHIR server answered, with their token

    def record(resp: requests.Response, *args: Any, **kwargs: Any) -> None:
        seen.append((str(resp.url), resp.request.headers.get("Authorization")))

    app.extensions["cds"].session.hooks["response"].append(record)

    answered: dict[str, list[dict[str, Any]]] = {}
    new_at = ago(0.1)  # one result-review result, the same in every call
    for hook in HOOKS:
        variants = []
        for enc_id in (None, encounter):  # patient-view: EHRs such as the Sandbox send none
            ctx = context(hook, patient, enc_id, new_at)
            prefetch = ehr_prefetch(fhir_server, discovery[hook]["prefetch"], ctx)
            assert ("encounter" in prefetch) is bool(enc_id), "an unfillable template is not sent"
            with_prefetch = call(client, hook, request_body(hook, ctx, prefetch=prefetch))
            assert with_prefetch.status_code == 200, with_prefetch.get_data(as_text=True)
            assert seen == [], "a complete prefetch must not cause a fetch"
            without = call(client, hook, request_body(hook, ctx, **fhir_access(fhir_server)))
            assert without.status_code == 200, without.get_data(as_text=True)
            for resp in (with_prefetch, without):
                check_response(resp.get_json())
            cards = with_prefetch.get_json()["cards"]
            assert cards, f"{hook}: the data must produce cards"
            assert comparable(without.get_json()["cards"]) == comparable(cards), (hook, enc_id)
            assert all(
                c["extension"]["magnesium-aki"]["magnesium"]["value_mg_dl"] != 3.4 for c in cards
            )
            assert not any("Not available for this evaluation" in c["detail"] for c in cards), hook
            # the fallback went to the allowlisted server, every request with the bearer token
            assert len(seen) >= len(prefetch)
            assert {url.startswith(fhir_server.base + "/") for url, _ in seen} == {True}
            assert {auth for _, auth in seen} == {f"Bearer {TOKEN}"}
            seen.clear()
            variants.append(comparable(cards))
        assert variants[0] == variants[1], f"{hook}: the same cards with and without encounterId"
        answered[hook] = cards
    # the ICU is known from the Location named by reference (MICU-2), without encounterId too
    assert "icu-hypomagnesemia-repletion" in rules(answered["patient-view"])

    # the data exercise what each hook is for
    assert medication_suggestions(answered["patient-view"]), (
        "positive control: Mg sulfate suggested"
    )
    assert any(m["subject"]["reference"] == f"Patient/{patient}"
               for m in medication_suggestions(answered["patient-view"]))  # fmt: skip
    for hook in ("order-select", "order-sign"):  # the draft orders count
        assert "cisplatin-mg-preload" in rules(answered[hook]), hook
        assert medication_suggestions(answered[hook]) == [], f"{hook}: magnesium is already ordered"
    assert any(c["extension"]["magnesium-aki"]["magnesium"]["value_mg_dl"] == 1.4
               for c in answered["result-review"])  # fmt: skip

    # required data for the degraded calls, taken while the server still runs
    required = {
        "patient": requests.get(f"{fhir_server.base}/Patient/{patient}", timeout=10).json(),
        "magnesium": ehr_prefetch(fhir_server, {"m": discovery["patient-view"]["prefetch"]["magnesium"]},
                                  {"patientId": patient})["m"],
    }  # fmt: skip

    fhir_server.stop()

    for hook in HOOKS:
        ctx = context(hook, patient, encounter)
        gone = call(client, hook, request_body(hook, ctx, **fhir_access(fhir_server)))
        assert gone.status_code == 412, gone.get_data(as_text=True)
        oo = gone.get_json()
        assert oo["resourceType"] == "OperationOutcome" and oo["issue"][0]["severity"] == "error"
        text = oo["issue"][0]["details"]["text"]
        assert "Required data unavailable" in text and "patient" in text and "magnesium" in text
        assert TOKEN not in gone.get_data(as_text=True)

        degraded = call(
            client, hook, request_body(hook, ctx, prefetch=required, **fhir_access(fhir_server))
        )
        assert degraded.status_code == 200, degraded.get_data(as_text=True)
        check_response(degraded.get_json())
        cards = degraded.get_json()["cards"]
        assert cards, f"{hook}: degraded, but still advice"
        for card in cards:
            said = re.search(r"Not available for this evaluation: ([^.\n]*)\.", card["detail"])
            assert said, (hook, card["detail"])
            names = knowledge_texts()["en"]["common"]["data_names"]
            assert said.group(1).split(", ") == [names[k] for k in sorted(OPTIONAL)], (hook, said.group(1))
        # without renal data and weight the gate withholds the magnesium dose, and says so
        assert medication_suggestions(cards) == [], hook
        if hook in ("order-select", "order-sign"):
            assert "mg-order-unsafe" in rules(cards), hook
