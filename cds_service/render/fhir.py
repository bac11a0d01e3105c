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

from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.servicerequest import ServiceRequest

from cds_service.rules.mapfile import read_mapping
from cds_service.rules.model import Dose, Finding


class OrderCodes:
    """Codings for suggested orders, from ``mappings/orders.yaml``."""

    def __init__(self, path: Path) -> None:
        """Load and validate ``orders.yaml``.

        :raises MappingError: the file does not fit its schema.
        """
        self.data: dict[str, Any] = read_mapping(path, "orders")

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


UCUM = "http://unitsofmeasure.org"


def _quantity(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _timing(dose: Dose) -> dict[str, Any]:
    """When and for how long: every order is bounded (``count`` and/or ``boundsDuration``)."""
    repeat: dict[str, Any] = {}
    minutes = dose.over_minutes
    if minutes:
        if minutes % 60 == 0:
            repeat.update(duration=minutes // 60, durationUnit="h")
        else:
            repeat.update(duration=minutes, durationUnit="min")
    if dose.per_day:
        repeat.update(frequency=1, period=1, periodUnit="d")
    if dose.count:
        repeat["count"] = dose.count
    if dose.days:
        repeat["boundsDuration"] = _quantity(dose.days, "d")
    return {"repeat": repeat}


def _dosages(dose: Dose, codes: OrderCodes, text: str) -> list[dict[str, Any]]:
    """The dose (with its rate and duration), and a maintenance infusion when there is one."""
    dose_and_rate: dict[str, Any] = {"doseQuantity": _quantity(dose.grams, "g")}
    rate = dose.rate_mg_min
    if rate is not None:
        dose_and_rate["rateQuantity"] = _quantity(round(rate, 1), "mg/min")
    out = [
        {
            "sequence": 1,
            "text": text,
            "timing": _timing(dose),
            "route": codes.route(dose.route),
            "doseAndRate": [dose_and_rate],
        }
    ]
    if dose.infusion_g_per_h is not None:
        out.append(
            {
                "sequence": 2,
                "text": text,
                "timing": {"repeat": {"count": 1}},
                "route": codes.route(dose.route),
                "doseAndRate": [{"rateQuantity": _quantity(dose.infusion_g_per_h, "g/h")}],
            }
        )
    return out


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
        "dosageInstruction": _dosages(dose, codes, label),
        "note": [{"text": label}],
    }
    MedicationRequest.model_validate(resource)
    return resource
