"""Acceptance (issue 8): context as EHRs send it, over HTTP against a real FHIR server (Medplum).

Every patient is shaped as EHRs hold it: the current admission names its Locations by reference
only (``{"reference": "Location/123"}``, no display), beside an earlier finished admission. Each
is called through ``magnesium-aki-patient-view`` five ways: with the prefetch an EHR fills from
the discovery templates (tests/integration/ehr_prefetch.py) without and with ``encounterId``;
with a prefetch that ignores ``_include`` plus ``fhirServer`` (the service reads the Locations);
and without prefetch, through the FHIR fallback, without and with ``encounterId``. The cards must
be the same every way, and the rule the patient is built for must be among them: every ICU rule,
the safety gate's positive control (and the same patient with magnesium given 2 h ago), and a
planned PCI as an active ServiceRequest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.store import migrate
from tests.integration.ehr_prefetch import ehr_prefetch
from tests.integration.fhir_server import FhirServer
from tests.integration.hooks_support import SERVICE, ago, check_response, coding
from tests.integration.test_hooks_fallback_http import comparable, medication_suggestions, rules

pytestmark = pytest.mark.integration

TOKEN = "context-as-sent-token"
PV = "patient-view"
UCUM = "http://unitsofmeasure.org"
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


def urn(n: int) -> str:
    return f"urn:uuid:8c0e0000-0000-4000-8000-{n:012d}"


class Chart:
    """One transaction Bundle of patients, each built from a few keyword choices."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.n = 0
        self.locations = {
            "ward": self.add({"resourceType": "Location", "id": "ward", "name": "4 North",
                              "type": [{"coding": [{"system": ROLE, "code": "HU"}]}]}),
            "micu": self.add({"resourceType": "Location", "id": "micu", "name": "Unit 7",
                              "type": [{"coding": [coding("icu-location")]}]}),  # by type only
            "sicu": self.add({"resourceType": "Location", "id": "sicu", "name": "SICU-3"}),  # by name
            "picu": self.add({"resourceType": "Location", "id": "picu", "name": "PICU 2"}),
        }  # fmt: skip

    def add(self, res: dict[str, Any]) -> str:
        self.n += 1
        url = urn(self.n)
        self.entries.append({"fullUrl": url, "resource": res,
                             "request": {"method": "POST", "url": res["resourceType"]}})  # fmt: skip
        return url

    def obs(self, pid: str, value_set: str, value: float, unit: str, hours: float) -> None:
        self.add({"resourceType": "Observation", "id": f"{pid}-{value_set}-{hours}", "status": "final",
                  "code": {"coding": [coding(value_set)]}, "subject": {"reference": self.ref},
                  "effectiveDateTime": ago(hours),
                  "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit}})  # fmt: skip

    def patient(self, pid: str, *, born: str = "1960-04-02", icu: str | None = "micu",
                icu_hours: float = 30, mg: tuple[tuple[float, float], ...] = ((1.5, 28), (1.5, 2)),
                albumin: tuple[float, float] | None = None, conditions: tuple[str, ...] = (),
                meds: tuple[str, ...] = (), given_mg_hours: float | None = None,
                planned: str | None = None) -> None:  # fmt: skip
        """An in-progress admission (40 h), its ward then ``icu`` from ``icu_hours`` by reference."""
        self.ref = self.add({"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": born})
        inpatient = coding("encounter-inpatient", "v3-ActCode")
        micu = self.locations["micu"]
        self.add({"resourceType": "Encounter", "id": f"{pid}-old", "status": "finished", "class": inpatient,
                  "subject": {"reference": self.ref}, "period": {"start": ago(24 * 40), "end": ago(24 * 36)},
                  "location": [{"location": {"reference": micu}, "period": {"start": ago(24 * 40), "end": ago(24 * 39)}}]})  # fmt: skip
        stay = [{"location": {"reference": self.locations["ward"]}, "status": "completed" if icu else "active",
                 "period": {"start": ago(40), **({"end": ago(icu_hours)} if icu else {})}}]  # fmt: skip
        if icu:
            stay.append({"location": {"reference": self.locations[icu]}, "status": "active",
                         "period": {"start": ago(icu_hours)}})  # fmt: skip
        self.add({"resourceType": "Encounter", "id": f"{pid}-enc", "status": "in-progress", "class": inpatient,
                  "subject": {"reference": self.ref}, "period": {"start": ago(40)}, "location": stay})  # fmt: skip
        for value, hours in mg:
            self.obs(pid, "serum-magnesium-mass", value, "mg/dL", hours)
        self.obs(pid, "creatinine", 0.5 if born > "2010" else 0.9, "mg/dL", 2)
        self.obs(pid, "egfr", 75, "mL/min/{1.73_m2}", 2)
        self.obs(pid, "body-weight", 30 if born > "2010" else 70, "kg", 20)
        if albumin:
            self.obs(pid, "albumin", albumin[0], "g/dL", albumin[1])
        for value_set in conditions:
            self.add({"resourceType": "Condition", "id": f"{pid}-{value_set}",
                      "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                     "code": "active"}]},
                      "code": {"coding": [coding(value_set, "icd-10")]}, "subject": {"reference": self.ref},
                      "recordedDate": ago(icu_hours)})  # fmt: skip
        for value_set in meds:
            self.add({"resourceType": "MedicationRequest", "id": f"{pid}-{value_set}", "status": "active",
                      "intent": "order", "medicationCodeableConcept": {"coding": [coding(value_set, "rxnorm")]},
                      "subject": {"reference": self.ref}, "authoredOn": ago(20)})  # fmt: skip
        if given_mg_hours is not None:
            self.add({"resourceType": "MedicationAdministration", "id": f"{pid}-mg-given", "status": "completed",
                      "medicationCodeableConcept": {"text": "Magnesium sulfate 2 g in 50 mL NS IV"},
                      "subject": {"reference": self.ref},
                      "effectivePeriod": {"start": ago(given_mg_hours + 1), "end": ago(given_mg_hours)}})  # fmt: skip
        if planned:
            self.add({"resourceType": "ServiceRequest", "id": f"{pid}-planned", "status": "active", "intent": "order",
                      "code": {"coding": [coding(planned)]}, "subject": {"reference": self.ref},
                      "authoredOn": ago(5)})  # fmt: skip

    def bundle(self) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


#: patient -> (how it is built, the rule it must produce)
PATIENTS: dict[str, tuple[dict[str, Any], str]] = {
    "positive-control": ({}, "icu-hypomagnesemia-repletion"),  # also icu-admission-low
    "icu-admission-high": ({"mg": ((2.6, 28), (2.2, 2))}, "icu-admission-high"),
    "sepsis": ({"icu_hours": 10, "mg": ((1.9, 8),), "conditions": ("sepsis",)}, "sepsis-mg"),
    "vanco-pip-tazo": ({"icu": "sicu", "mg": ((1.8, 20), (1.8, 2)),
                        "meds": ("vancomycin", "piperacillin-tazobactam")}, "vanco-pip-tazo-mg"),
    "paediatric-icu": ({"born": "2014-06-01", "icu": "picu", "mg": ((2.3, 28),), "albumin": (2.5, 28)},
                       "pediatric-icu-corrected-high"),
    "icu-monitoring-gap": ({"icu": "sicu", "mg": ((2.0, 30),)}, "monitoring-gap"),
    "magnesium-given": ({"given_mg_hours": 2}, "icu-hypomagnesemia-repletion"),
    "planned-pci": ({"icu": None, "mg": ((2.0, 3),), "planned": "pci-angiography"}, "contrast-u-shape"),
}  # fmt: skip


@pytest.fixture
def app(fhir_server: FhirServer, tmp_path: Path) -> Iterator[Flask]:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    migrate(url)
    yield create_app({"CDS_DATABASE_URL": url, "CDS_AUTH": "off", "CDS_SECRET": "test-secret",
                      "CDS_FHIR_ALLOWLIST": fhir_server.base, "CDS_FHIR_DEADLINE_MS": 5000})  # fmt: skip


def post(client: FlaskClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    resp = client.post(SERVICE + PV, data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    check_response(resp.get_json())
    cards: list[dict[str, Any]] = resp.get_json()["cards"]
    return cards


def test_every_icu_rule_the_gate_and_planned_procedures_with_context_as_ehrs_send_it(
    fhir_server: FhirServer, app: Flask
) -> None:
    chart = Chart()
    for pid, (build, _) in PATIENTS.items():
        chart.patient(pid, **build)
    bundle = chart.bundle()
    ids = fhir_server.ids(bundle, fhir_server.load(bundle))
    client = app.test_client()
    templates = client.get("/cds-services").get_json()["services"]
    (discovery,) = [s["prefetch"] for s in templates if s["hook"] == PV]
    seen: list[str] = []
    app.extensions["cds"].session.hooks["response"].append(lambda r, *a, **k: seen.append(r.url))
    access = {"fhirServer": fhir_server.base,
              "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                    "scope": "patient/*.read", "subject": "cds-service"}}  # fmt: skip
    answered: dict[str, list[dict[str, Any]]] = {}
    for pid, (_, rule) in PATIENTS.items():
        patient, encounter = ids[pid].split("/")[1], ids[f"{pid}-enc"].split("/")[1]
        ways: dict[str, list[dict[str, Any]]] = {}
        for enc_id in (None, encounter):
            ctx = {"userId": "Practitioner/dr-1", "patientId": patient}
            if enc_id:
                ctx["encounterId"] = enc_id
            body = {"hook": PV, "hookInstance": f"as-sent-{pid}-{enc_id}", "context": ctx}
            ways[f"ehr prefetch, encounterId {bool(enc_id)}"] = post(
                client, {**body, "prefetch": ehr_prefetch(fhir_server.base, discovery, ctx)})
            assert seen == [], f"{pid}: a prefetch from the templates needs no fetch"
            ways[f"fallback, encounterId {bool(enc_id)}"] = post(client, {**body, **access})
            assert seen and all(u.startswith(fhir_server.base + "/") for u in seen)
            seen.clear()
            if enc_id is None:  # an EHR that ignores _include: the service reads the Locations
                bare = ehr_prefetch(fhir_server.base, discovery, ctx, includes=False)
                ways["prefetch without _include"] = post(client, {**body, "prefetch": bare, **access})
                reads = sorted({u.split("/")[-2] for u in seen})
                assert reads == ["Location"], (pid, seen)
                seen.clear()  # fmt: skip
        first = next(iter(ways.values()))
        for way, cards in ways.items():
            assert comparable(cards) == comparable(first), f"{pid}: {way} differs"
        assert rule in rules(first), (pid, sorted(rules(first)))
        assert not any("Not available for this evaluation" in c["detail"] for c in first), pid
        answered[pid] = first

    control = answered["positive-control"]
    assert {"icu-admission-low", "icu-hypomagnesemia-repletion"} <= rules(control)
    (dose,) = medication_suggestions(control)  # the gate's positive control: a dose suggested
    assert dose["subject"]["reference"] == f"Patient/{ids['positive-control'].split('/')[1]}"
    given = answered["magnesium-given"]
    assert medication_suggestions(given) == []  # magnesium given 2 h ago: no new suggestion
    (low,) = [c for c in given if "icu-hypomagnesemia-repletion" in c["extension"]["magnesium-aki"]["rules"]]
    assert low["summary"].endswith("(magnesium suggestion withheld)")
    assert low["extension"]["magnesium-aki"]["withheld"] == ["mg-active"]
    assert ("Magnesium suggestion withheld by the safety gate: magnesium already active, ordered or "
            "recently given (Magnesium sulfate 2 g in 50 mL NS IV)") in low["detail"]  # fmt: skip
    assert "monitoring-gap" not in rules(answered["positive-control"])
    assert "contrast-u-shape" not in rules(answered["positive-control"])
    assert not any("icu" in r for r in rules(answered["planned-pci"]))  # the ward patient
