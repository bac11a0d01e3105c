"""FHIR Subscription context as servers hold it: a result's Specimen by reference, magnesium
given (MedicationAdministration), planned procedures (active ServiceRequest)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from cds_service.clinical import model as m
from cds_service.store.events_models import AdviceIssued, LabResultRow
from tests.integration.hooks_support import ago
from tests.unit.fhir_fakes import FakeFhir
from tests.unit.test_fhir_notify import client, fake, post, rows  # noqa: F401 - fixtures
from tests.unit.test_fhir_notify_forms import bundle, status

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


def notify(client: FlaskClient, key: str, resource: dict[str, Any]) -> Any:  # noqa: F811
    resp = post(client, bundle(status("event-notification", 1, (1, key)), {"resource": resource}))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()


def low(client: FlaskClient) -> AdviceIssued:  # noqa: F811
    (row,) = [a for a in rows(client, AdviceIssued) if a.direction == "low"]
    return row


def test_the_specimen_a_result_references_is_read_and_decides(
    client: FlaskClient, fake: FakeFhir  # noqa: F811
) -> None:
    fake.resources["Specimen/sp-u"] = {"resourceType": "Specimen", "id": "sp-u",
                                       "type": {"coding": [{"system": "http://snomed.info/sct",
                                                            "code": "122575003", "display": "Urine specimen"}]}}  # fmt: skip
    mg = {**fake.resources["Observation/mg1"], "specimen": {"reference": "Specimen/sp-u"}}
    notify(client, "Observation/mg1", mg)
    assert "Specimen/sp-u" in fake.gets
    stored = {r.kind: r for r in rows(client, LabResultRow) if r.code == "19123-9"}
    assert (stored["serum-mg"].usable, stored["serum-mg"].reason_code) == (
        False, m.SPECIMEN_NOT_SERUM
    )
    assert stored["serum-mg"].specimen == "Urine specimen"
    assert all("icu-hypomagnesemia-repletion" not in a.rules for a in rows(client, AdviceIssued))


def test_magnesium_given_on_the_server_withholds_the_suggestion(
    client: FlaskClient, fake: FakeFhir  # noqa: F811
) -> None:
    fake.resources["MedicationAdministration/ma1"] = {
        "resourceType": "MedicationAdministration", "id": "ma1", "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "6585", "display": "magnesium sulfate"}]},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": ago(2),
    }  # fmt: skip
    notify(client, "Observation/mg1", fake.resources["Observation/mg1"])
    assert any(q.startswith("MedicationAdministration?patient=p1") for q in fake.searches)
    advice = low(client)
    assert "icu-hypomagnesemia-repletion" in advice.rules
    assert any("mg-active" in w["conditions"] for w in advice.detail["withheld"])


def test_without_the_administration_the_suggestion_stands(
    client: FlaskClient, fake: FakeFhir  # noqa: F811
) -> None:
    notify(client, "Observation/mg1", fake.resources["Observation/mg1"])
    advice = low(client)
    assert "icu-hypomagnesemia-repletion" in advice.rules and "withheld" not in advice.detail


def test_an_active_service_request_is_a_planned_procedure(
    client: FlaskClient, fake: FakeFhir  # noqa: F811
) -> None:
    fake.resources["ServiceRequest/pci"] = {
        "resourceType": "ServiceRequest", "id": "pci", "status": "active", "intent": "order",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "415070008",
                             "display": "Percutaneous coronary intervention"}]},
        "subject": {"reference": "Patient/p1"},
    }  # fmt: skip
    notify(client, "Observation/mg1", fake.resources["Observation/mg1"])
    assert any(q.startswith("ServiceRequest?patient=p1&status=active") for q in fake.searches)
    assert any("contrast-u-shape" in a.rules for a in rows(client, AdviceIssued))
