"""FHIR R4 resources the service suggests, built and validated with ``fhir.resources.R4B``.

Each resource is built as FHIR JSON and validated by its R4B model; the validated JSON is
what the card carries (dumping the model again would cost more than validating it and
give the same JSON: ``test_suggested_resources_are_their_own_r4b_dump``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.rules.model import Dose, Finding


class OrderCodes:
    """Codings for suggested orders, from ``mappings/orders.yaml``."""

    def __init__(self, path: Path) -> None:
        with path.open(encoding="utf-8") as fh:
            self.data: dict[str, Any] = yaml.safe_load(fh)

    def medication(self, set_id: str) -> dict[str, Any]:
        """The CodeableConcept for an ordered medication."""
        med = self.data["medications"][set_id]
        return {"coding": [dict(c) for c in med["coding"]], "text": med["text"]}

    def route(self, route: str) -> dict[str, Any]:
        """The CodeableConcept for a route of administration."""
        return {"coding": [dict(self.data["routes"][route])], "text": route}

    def serum_magnesium(self) -> dict[str, Any]:
        """The code ordered to measure serum magnesium."""
        return dict(self.data["lab_orders"]["serum_magnesium"])

    def lab_category(self) -> dict[str, Any]:
        """The ServiceRequest category for laboratory orders."""
        return {"coding": [dict(self.data["lab_orders"]["category"])]}


def _id(seed: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, seed))


def fhir_datetime(moment: datetime) -> str:
    """An aware datetime as a FHIR dateTime, UTC written ``Z`` (as R4B models write it)."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def lab_order(
    finding: Finding, patient_id: str, codes: OrderCodes, now: datetime, label: str
) -> dict[str, Any]:
    """A draft ServiceRequest for a serum magnesium measurement, validated."""
    suggestion = finding.suggestion or {}
    code = (
        dict(suggestion["code"])
        if suggestion.get("kind") == "lab-order"
        else codes.serum_magnesium()
    )
    resource = {
        "resourceType": "ServiceRequest",
        "id": _id(f"sr:{patient_id}:{finding.rule_id}:{now.isoformat()}"),
        "status": "draft",
        "intent": "proposal",
        "category": [codes.lab_category()],
        "code": {"coding": [code], "text": code.get("display", label)},
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": fhir_datetime(now),
        "reasonCode": [{"text": label}],
    }
    ServiceRequest.model_validate(resource)
    return resource


def _dosage(dose: Dose, codes: OrderCodes, text: str) -> dict[str, Any]:
    dosage: dict[str, Any] = {
        "text": text,
        "route": codes.route(dose.route),
        "doseAndRate": [
            {
                "doseQuantity": {
                    "value": round(dose.grams, 2),
                    "unit": "g",
                    "system": "http://unitsofmeasure.org",
                    "code": "g",
                }
            }
        ],
    }
    if dose.over_minutes:
        rate_mg_min = dose.grams * 1000 / dose.over_minutes
        dosage["doseAndRate"][0]["rateQuantity"] = {
            "value": round(rate_mg_min, 1),
            "unit": "mg/min",
            "system": "http://unitsofmeasure.org",
            "code": "mg/min",
        }
    if dose.per_day:
        repeat: dict[str, Any] = {"frequency": 1, "period": 1, "periodUnit": "d"}
        if dose.days:
            repeat["boundsDuration"] = {
                "value": dose.days,
                "unit": "d",
                "system": "http://unitsofmeasure.org",
                "code": "d",
            }
        dosage["timing"] = {"repeat": repeat}
    return dosage


def medication_order(
    finding: Finding, patient_id: str, codes: OrderCodes, now: datetime, label: str
) -> dict[str, Any]:
    """A draft MedicationRequest for magnesium sulfate with the computed dose, validated."""
    assert finding.dose is not None and finding.suggestion is not None
    dose = finding.dose
    resource = {
        "resourceType": "MedicationRequest",
        "id": _id(f"mr:{patient_id}:{finding.rule_id}:{now.isoformat()}"),
        "status": "draft",
        "intent": "proposal",
        "medicationCodeableConcept": codes.medication(finding.suggestion["medication"]),
        "subject": {"reference": f"Patient/{patient_id}"},
        "authoredOn": fhir_datetime(now),
        "dosageInstruction": [_dosage(dose, codes, label)],
        "note": [{"text": label}],
    }
    MedicationRequest.model_validate(resource)
    return resource
