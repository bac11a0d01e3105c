"""Advice as a FHIR ``Communication`` on ``CDS_FHIR_BASE`` (built and validated with R4B).

The Communication carries our advice id as its identifier, so a retried delivery is a
conditional create (``If-None-Exist``) and a withdrawal finds the one to mark
``entered-in-error``. Subject: ``Patient/<id>`` for patients known by their FHIR id, else
the Patient found by identifier, else a logical reference by identifier.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from fhir.resources.R4B.communication import Communication

from cds_service.events.fhir_access import FhirWriter
from cds_service.events.fhir_results import FHIR_PATIENT_SYSTEM
from cds_service.store.events_models import AdviceIssued, Patient

ADVICE_SYSTEM = "urn:magnesium-aki-cds:advice"
RULE_SYSTEM = "urn:magnesium-aki-cds:rule"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/communication-category"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
PRIORITY = {"info": "routine", "warning": "urgent", "critical": "stat"}
WITHDRAWN_TEXT = "Advice withdrawn: the result it rested on was corrected or retracted."


@dataclass(frozen=True)
class AdviceRefs:
    """What a delivery knows besides the advice row: about, recipient, ordering text."""

    about: str | None = None
    orderer: str = ""


def advice_identifier(advice: AdviceIssued, patient: Patient) -> str:
    """A stable identifier value for one advice (its id and a digest of its unique key)."""
    key = f"{patient.id_hash}|{advice.rule_id}|{advice.trigger_key}"
    return f"{advice.id}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def recipient(orderer: str) -> dict[str, Any] | None:
    """A Reference to the ordering practitioner (FHIR reference, or XCN from OBR-16/ORC-12)."""
    if orderer.startswith(("Practitioner/", "PractitionerRole/")):
        return {"reference": orderer}
    parts = orderer.split("~", 1)[0].split("^")
    if not parts or not parts[0].strip():
        return None
    ident: dict[str, Any] = {"value": parts[0].strip()}
    if len(parts) > 8 and parts[8].split("&", 1)[0].upper() == "NPI":
        ident["system"] = NPI_SYSTEM
    ref: dict[str, Any] = {"type": "Practitioner", "identifier": ident}
    name = " ".join(p for p in (parts[5:6] + parts[2:3] + parts[1:2]) if p.strip())
    if name:
        ref["display"] = name
    return ref


def subject_ref(patient: Patient, client: FhirWriter | None) -> dict[str, Any]:
    """The Patient reference on the server (see the module docstring)."""
    if patient.id_system == FHIR_PATIENT_SYSTEM:
        return {"reference": f"Patient/{patient.id_value}"}
    if client is not None:
        token = quote(f"{patient.id_system}|{patient.id_value}", safe="|:")
        found = client.search_all(f"Patient?identifier={token}&_count=2")
        if len(found) == 1 and isinstance(found[0].get("id"), str):
            return {"reference": f"Patient/{found[0]['id']}"}
    return {
        "type": "Patient",
        "identifier": {"system": patient.id_system, "value": patient.id_value},
    }


def build_communication(
    advice: AdviceIssued,
    patient_ref: dict[str, Any],
    refs: AdviceRefs,
    identifier: str,
    now: datetime,
    *,
    withdrawn: bool = False,
) -> dict[str, Any]:
    """The Communication JSON for one advice (validated; raises ``ValueError`` if invalid)."""
    detail = advice.detail.get("detail") if isinstance(advice.detail, dict) else None
    text = advice.summary + (f"\n\n{detail}" if isinstance(detail, str) and detail else "")
    category = "notification" if advice.indicator == "info" else "alert"
    body: dict[str, Any] = {
        "resourceType": "Communication",
        "identifier": [{"system": ADVICE_SYSTEM, "value": identifier}],
        "status": "entered-in-error" if withdrawn else "completed",
        "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": category}]}],
        "priority": PRIORITY.get(advice.indicator, "routine"),
        "subject": patient_ref,
        "topic": {"coding": [{"system": RULE_SYSTEM, "code": advice.rule_id}]},
        "sent": now.isoformat(),
        "sender": {"display": "Magnesium-AKI clinical decision support"},
        "payload": [{"contentString": text}],
    }
    if withdrawn:
        body["statusReason"] = {"text": WITHDRAWN_TEXT}
    if refs.about:
        body["about"] = [{"reference": refs.about}]
    who = recipient(refs.orderer) if refs.orderer else None
    if who is not None:
        body["recipient"] = [who]
    validated = Communication.model_validate(body)
    out: dict[str, Any] = validated.model_dump(mode="json", exclude_none=True)
    return out


def deliver_communication(
    client: FhirWriter,
    advice: AdviceIssued,
    patient: Patient,
    refs: AdviceRefs,
    now: datetime,
    *,
    withdrawn: bool,
) -> str:
    """Create (idempotently) or mark entered-in-error; a short outcome text.

    :raises FhirUnavailable: the server refused or did not answer (the worker retries).
    """
    ident = advice_identifier(advice, patient)
    search = f"Communication?identifier={quote(ADVICE_SYSTEM, safe=':')}|{ident}"
    if withdrawn:
        existing = client.search_all(search)
        for res in existing:
            if res.get("status") != "entered-in-error" and isinstance(res.get("id"), str):
                res["status"], res["statusReason"] = "entered-in-error", {"text": WITHDRAWN_TEXT}
                client.send("PUT", f"Communication/{res['id']}", res)
        if existing:
            return f"marked entered-in-error ({len(existing)})"
    body = build_communication(
        advice, subject_ref(patient, client), refs, ident, now, withdrawn=withdrawn
    )
    status, _ = client.send(
        "POST", "Communication", body, {"If-None-Exist": search.split("?", 1)[1]}
    )
    return "created" if status == 201 else f"exists (HTTP {status})"
