"""A fake FHIR server (reads and searches from a dict) and an ICU patient, for notification tests."""

from __future__ import annotations

from typing import Any

from cds_service.hooks.fhir_client import FhirUnavailable
from tests.integration.hooks_support import ago, coding


def obs(
    rid: str, value_set: str, value: float, unit: str, hours: float, **extra: Any
) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [coding(value_set)]}, "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": ago(hours), "meta": {"versionId": "1"},
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            **extra}  # fmt: skip


def icu_patient() -> dict[str, dict[str, Any]]:
    """An adult in an ICU encounter with renal data and weight; ``mg1`` is a low magnesium."""
    res = [
        {"resourceType": "Patient", "id": "p1", "birthDate": "1960-02-03", "gender": "male"},
        {"resourceType": "Location", "id": "icu", "type": [{"coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "ICU"}]}]},
        {"resourceType": "Encounter", "id": "e1", "status": "in-progress",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
         "subject": {"reference": "Patient/p1"}, "period": {"start": ago(30)},
         "location": [{"location": {"reference": "Location/icu"}, "period": {"start": ago(30)}}]},
        obs("cr1", "creatinine", 0.9, "mg/dL", 20), obs("egfr1", "egfr", 80, "mL/min/{1.73_m2}", 20),
        obs("wt1", "body-weight", 75, "kg", 22), obs("mg1", "serum-magnesium-mass", 1.2, "mg/dL", 1),
    ]  # fmt: skip
    return {f"{r['resourceType']}/{r['id']}": r for r in res}


class FakeFhir:
    """Answers reads and searches from a dict of resources; records what was asked."""

    def __init__(self, resources: dict[str, dict[str, Any]]) -> None:
        self.resources, self.gets, self.searches, self.down = resources, [], [], False

    def get(self, path: str) -> dict[str, Any]:
        self.gets.append(path)
        if self.down:
            raise FhirUnavailable("timeout")
        if path not in self.resources:
            raise FhirUnavailable("FHIR server error", 404)
        return self.resources[path]

    def fetch(self, query: str) -> dict[str, Any]:
        if "?" not in query:
            return self.get(query)
        self.searches.append(query)
        if self.down:
            raise FhirUnavailable("timeout")
        rtype, params = query.split("?", 1)
        patient = next((p[8:] for p in params.split("&") if p.startswith("patient=")), None)
        found = [r for r in self.resources.values() if r["resourceType"] == rtype
                 and (patient is None or r.get("subject", {}).get("reference") == f"Patient/{patient}")]  # fmt: skip
        if rtype == "Encounter":
            found += [r for r in self.resources.values() if r["resourceType"] == "Location"]
        return {
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [{"resource": r} for r in found],
        }

    def search_all(self, query: str) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.fetch(query)["entry"]]
