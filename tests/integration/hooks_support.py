"""Builders for CDS Hooks requests (times relative to now) and response checks, shared by suites."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.hooks.request import schema_errors
from tests.shared_data import SHARED

ROOT = Path(__file__).parents[2]
SPEC = SHARED / "spec/cds-hooks"
MAPPINGS = ROOT / "mappings"
PATIENT = "gate-1"
SERVICE = "/cds-services/magnesium-aki-"


@cache
def coding(value_set: str, system_part: str = "") -> dict[str, str]:
    """The first code of a value set (optionally of a system containing ``system_part``)."""
    data = yaml.safe_load((MAPPINGS / "codes" / f"{value_set}.yaml").read_text("utf-8"))
    for c in data.get("codes") or []:
        if system_part in c["system"]:
            return {"system": c["system"], "code": str(c["code"]), "display": c["display"]}
    r = next(r for r in data["ranges"] if system_part in r["system"])
    return {"system": r["system"], "code": str(r.get("prefix") or r["from"]), "display": r["display"]}


def ago(hours: float) -> str:
    """An instant ``hours`` before now, ISO 8601 in UTC."""
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat(timespec="seconds")


def observation(rid: str, value_set: str, value: float, unit: str, hours_ago: float) -> dict[str, Any]:
    """A final laboratory/vital Observation for the gate patient."""
    return {
        "resourceType": "Observation", "id": rid, "status": "final",
        "code": {"coding": [coding(value_set)]},
        "subject": {"reference": f"Patient/{PATIENT}"},
        "effectiveDateTime": ago(hours_ago),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
    }  # fmt: skip


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    """A searchset Bundle of the resources."""
    return {
        "resourceType": "Bundle", "type": "searchset", "total": len(resources),
        "entry": [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}",
                   "resource": r} for r in resources],
    }  # fmt: skip


def condition(rid: str, value_set: str, system_part: str = "") -> dict[str, Any]:
    """An active Condition coded from a value set."""
    return {
        "resourceType": "Condition", "id": rid,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [coding(value_set, system_part)]},
        "subject": {"reference": f"Patient/{PATIENT}"},
    }  # fmt: skip


def included(bundle: dict[str, Any], *resources: dict[str, Any]) -> dict[str, Any]:
    """The searchset with ``resources`` appended as ``_include`` matches (search.mode include)."""
    extra = [{"fullUrl": f"https://ehr.example.org/fhir/{r['resourceType']}/{r['id']}", "resource": r,
              "search": {"mode": "include"}} for r in resources]  # fmt: skip
    return {**bundle, "entry": [*bundle["entry"], *extra]}


def icu_encounter(location_id: str = "loc-micu", hours: float = 36) -> dict[str, Any]:
    """The in-progress admission, its Location named by reference only (as EHRs send it)."""
    return {
        "resourceType": "Encounter", "id": "enc-1", "status": "in-progress",
        "class": coding("encounter-inpatient", "v3-ActCode"),
        "subject": {"reference": f"Patient/{PATIENT}"}, "period": {"start": ago(hours)},
        "location": [{"location": {"reference": f"Location/{location_id}"}, "status": "active",
                      "period": {"start": ago(hours)}}],
    }  # fmt: skip


def icu_location(location_id: str = "loc-micu", name: str = "MICU") -> dict[str, Any]:
    """An ICU Location: v3 RoleCode ICU and a unit name."""
    return {"resourceType": "Location", "id": location_id, "name": name,
            "type": [{"coding": [coding("icu-location")]}]}  # fmt: skip


def positive_control(hook: str = "patient-view") -> dict[str, Any]:
    """Adult ICU patient, serum Mg 1.5 mg/dL, eGFR 75, creatinine 0.9, weight 70 kg.

    Shaped as EHRs send it: no ``encounterId`` (patient-view), the in-progress encounter found
    by the ``encounters`` search with its Location included; beside it an earlier finished
    admission, as a server that ignores ``status=`` returns it.
    """
    earlier = {
        "resourceType": "Encounter", "id": "enc-0", "status": "finished",
        "class": coding("encounter-inpatient", "v3-ActCode"),
        "subject": {"reference": f"Patient/{PATIENT}"}, "period": {"start": ago(24 * 60), "end": ago(24 * 55)},
    }  # fmt: skip
    prefetch: dict[str, Any] = {
        "patient": {"resourceType": "Patient", "id": PATIENT, "gender": "female", "birthDate": "1960-04-02"},
        "encounters": included(searchset(earlier, icu_encounter()), icu_location()),
        "magnesium": searchset(observation("mg-1", "serum-magnesium-mass", 1.5, "mg/dL", 2)),
        "creatinine": searchset(observation("cr-1", "creatinine", 0.9, "mg/dL", 2)),
        "egfr": searchset(observation("egfr-1", "egfr", 75, "mL/min/{1.73_m2}", 2)),
        "weight": searchset(observation("wt-1", "body-weight", 70, "kg", 20)),
        "albumin": None,
        "conditions": searchset(),
        "procedures": searchset(),
        "planned-procedures": searchset(),
        "service-requests": searchset(),
        "medications": searchset(),
        "administrations": searchset(),
    }  # fmt: skip
    context: dict[str, Any] = {"userId": "Practitioner/example", "patientId": PATIENT}
    if hook in ("order-select", "order-sign"):
        context["draftOrders"] = {"resourceType": "Bundle", "type": "collection", "entry": []}
    if hook == "order-select":
        context["selections"] = []
    if hook == "result-review":
        context["results"] = searchset(observation("mg-1", "serum-magnesium-mass", 1.5, "mg/dL", 2))
    return {"hook": hook, "hookInstance": f"test-{hook}-{datetime.now(UTC).timestamp()}",
            "context": context, "prefetch": prefetch}  # fmt: skip


def spec_example(name: str) -> dict[str, Any]:
    """A JSON example of the CDS Hooks spec folder."""
    data: dict[str, Any] = json.loads((SPEC / name).read_text("utf-8"))
    return data


def wrap_order_context(name: str, hook: str) -> dict[str, Any]:
    """A spec order-select/order-sign context wrapped into a request with prefetch."""
    context = spec_example(name)["context"]
    req = positive_control(hook)
    pid = context["patientId"]
    prefetch = json.loads(json.dumps(req["prefetch"]).replace(PATIENT, pid))
    return {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": copy.deepcopy(context), "prefetch": prefetch}  # fmt: skip


def empty_members(node: Any, path: str = "$") -> list[str]:
    """Paths of null or empty members (``cards: []`` at the top is allowed)."""
    found: list[str] = []
    if isinstance(node, dict):
        for k, v in node.items():
            p = f"{path}.{k}"
            if v is None or v == "" or v == {} or (v == [] and p != "$.cards"):
                found.append(p)
            found += empty_members(v, p)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += empty_members(v, f"{path}[{i}]")
    return found


def check_response(body: dict[str, Any]) -> None:
    """A CDS Hooks response: valid shape and no null or empty members."""
    assert schema_errors("cds-response.schema.json", body) == []
    assert empty_members(body) == []


def medication_suggestions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Every MedicationRequest suggested by any card."""
    return [
        a["resource"]
        for card in body["cards"]
        for s in card.get("suggestions", [])
        for a in s.get("actions", [])
        if a.get("resource", {}).get("resourceType") == "MedicationRequest"
    ]
