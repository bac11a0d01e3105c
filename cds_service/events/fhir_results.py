"""FHIR Observations into the HL7 helper's result store: patients, versions, corrections.

A FHIR patient is keyed by its logical id on ``CDS_FHIR_BASE`` (``FHIR_PATIENT_SYSTEM``),
unless one of its identifiers already names a patient known from HL7 v2. Each
Observation is linked (``fhir_resource``) to the result row of its current version: the
same version again is a no-op; ``entered-in-error``/``cancelled`` retracts the row; any
other new version supersedes it. Either way advice on the old row is withdrawn.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.clinical.fhir_common import JsonDict, ResourceIndex, get_dict, get_dicts, get_str
from cds_service.clinical.fhir_labs import LabTable, read_observation
from cds_service.clinical.numbers import as_reported
from cds_service.events.hl7_context import Demographics, PatientId
from cds_service.events.patients import Hasher, find_patient, resolve_patient
from cds_service.store.events_models import LabResultRow, Patient
from cds_service.store.subscription_models import FhirResourceLink

FHIR_PATIENT_SYSTEM = "urn:magnesium-aki-cds:fhir-patient"
RETRACTED = frozenset({"entered-in-error", "cancelled"})


@dataclass
class FhirStored:
    """What storing a batch of Observations did."""

    new: list[LabResultRow] = field(default_factory=list)
    withdrawn: list[int] = field(default_factory=list)
    duplicates: int = 0


def fhir_patient(
    session: Session, logical_id: str, resource: JsonDict | None, hasher: Hasher, now: datetime
) -> Patient:
    """The stored patient of a FHIR Patient (found by id or identifier, else created)."""
    key = PatientId(FHIR_PATIENT_SYSTEM, logical_id)
    birth = get_str(resource, "birthDate") if resource else None
    sex = get_str(resource, "gender") if resource else None
    if find_patient(session, key, hasher) is None and resource is not None:
        for ident in get_dicts(resource, "identifier"):
            system, value = get_str(ident, "system"), get_str(ident, "value")
            if system and value and find_patient(session, PatientId(system, value), hasher):
                key = PatientId(system, value)  # known from HL7 v2: one patient, one history
                break
    return resolve_patient(session, Demographics(key, birth, sex), hasher, now)


def fingerprint(obs: JsonDict) -> str:
    """A digest of what makes a result (status, code, value, times, unit)."""
    keys = ("status", "code", "effectiveDateTime", "effectiveInstant", "effectivePeriod",
            "issued", "valueQuantity", "valueString", "valueInteger", "dataAbsentReason",
            "subject", "specimen")  # fmt: skip
    text = json.dumps({k: obs.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _row(
    result: m.LabResult | m.Excluded, obs: JsonDict, patient_id: int, now: datetime
) -> LabResultRow:
    coding = next(iter(get_dicts(get_dict(obs, "code") or {}, "coding")), {})
    row = LabResultRow(
        patient_id=patient_id, status=(get_str(obs, "status") or "unknown")[:24],
        code_system=(get_str(coding, "system") or "")[:255],
        code=(get_str(coding, "code") or "")[:64],
        display=(get_str(coding, "display") or "")[:255] or None, abnormal_flags="", orderer="",
        message_id=None, obx_set_id="", superseded=False, retracted=False, received_at=now,
        original_text="", time_flags="", date_only=False,
    )  # fmt: skip
    if isinstance(result, m.LabResult):
        row.code_system, row.code = result.code.system[:255], result.code.code[:64]
        row.kind, row.usable, row.value, row.unit = result.kind, True, result.value, result.unit
        row.original_value, row.original_unit = result.original_value, result.original_unit
        row.comparator, row.time, row.date_only = result.comparator, result.time, result.date_only
        row.original_text = f"{result.comparator or ''}{as_reported(result.original_value)}"
        row.time_flags = ",".join(sorted(result.time_flags))
        row.reference_range = (result.reference_range or "")[:128] or None
    else:
        row.kind, row.usable, row.time = (result.kind or "other")[:40], False, result.time
        row.original_text = (result.value_text or "")[:255]
        row.original_unit, row.reason_code, row.reason = (
            result.unit,
            result.reason_code,
            result.reason,
        )
        row.specimen = result.specimen
    return row


def _same_row(session: Session, row: LabResultRow) -> LabResultRow | None:
    """A current identical result of the patient (the same result sent by HL7 v2 too)."""
    if row.time is None:
        return None
    query = select(LabResultRow).where(
        LabResultRow.patient_id == row.patient_id, LabResultRow.code == row.code,
        LabResultRow.code_system == row.code_system, LabResultRow.time == row.time,
        LabResultRow.superseded.is_(False), LabResultRow.retracted.is_(False),
    )  # fmt: skip
    for old in session.scalars(query):
        if (old.status, old.value, old.original_unit) == (row.status, row.value, row.original_unit):
            return old
    return None


def store_observation(
    session: Session,
    obs: JsonDict,
    patient: Patient,
    table: LabTable,
    tz: tzinfo,
    now: datetime,
    out: FhirStored,
    orderer: str = "",
    index: ResourceIndex | None = None,
) -> None:
    """Store one Observation version (see the module docstring); ``out`` collects the effect.

    ``index``: resources its references may point at (the Specimens read with it).
    """
    rid = get_str(obs, "id")
    if not rid:
        return
    key, meta = f"Observation/{rid}"[:255], get_dict(obs, "meta") or {}
    version, digest = (get_str(meta, "versionId") or "")[:64], fingerprint(obs)
    link = session.scalar(select(FhirResourceLink).where(FhirResourceLink.resource == key))
    if link is not None and (link.fingerprint == digest or (version and link.version == version)):
        out.duplicates += 1
        return
    old = session.get(LabResultRow, link.lab_result_id) if link and link.lab_result_id else None
    status = get_str(obs, "status") or "unknown"
    index = index if index is not None else ResourceIndex()
    result = None if status in RETRACTED else read_observation(obs, table, index, tz)
    new: LabResultRow | None = None
    if result is not None:
        new = _row(result, obs, patient.id, now)
        new.orderer = orderer[:255]
        same = _same_row(session, new) if old is None else None
        if same is not None:
            new = same
        else:
            session.add(new)
            session.flush()
            out.new.append(new)
    if old is not None and not (old.retracted or old.superseded):
        if new is None:
            old.retracted = True
        else:
            old.superseded, old.superseded_by = True, new.id
        out.withdrawn.append(old.id)
    if link is None:
        link = FhirResourceLink(resource=key, updated_at=now)
        session.add(link)
    link.version, link.fingerprint, link.status = version, digest, status[:24]
    link.lab_result_id = new.id if new is not None else (old.id if old is not None else None)
    link.updated_at = now
