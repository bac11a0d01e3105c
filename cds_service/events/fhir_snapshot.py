"""Context for a FHIR-triggered evaluation: look-ups on ``CDS_FHIR_BASE``, merged with the store.

Lab results always come from the store (FHIR lab history is stored first, with the
Specimens it references, so advice keys on stored result ids exactly as for HL7 v2); the
Patient, Encounters (with Locations, read when not included), Conditions, Procedures,
active ServiceRequests (planned procedures), MedicationRequests and MedicationAdministrations
come from the server. A look-up that fails is named in the snapshot's ``missing`` and the
evaluation goes on without it.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.clinical.fhir_assemble import Parts, build_parts, freeze
from cds_service.clinical.fhir_common import (
    BadResource,
    JsonDict,
    ResourceIndex,
    get_dict,
    get_dicts,
    get_str,
)
from cds_service.events.advise import SnapshotFn
from cds_service.events.fhir_notify_forms import local_ref
from cds_service.events.snapshot import build_snapshot
from cds_service.hooks.fhir_client import FhirClient, FhirUnavailable
from cds_service.rules.model import Knowledge
from cds_service.store.events_models import Patient

log = logging.getLogger("cds_service.events.fhir")
TRIGGER_SETS = ("serum-magnesium-mass", "serum-magnesium-moles", "ionized-magnesium",
                "creatinine", "albumin")  # fmt: skip
HISTORY_SETS = (*TRIGGER_SETS, "egfr", "body-weight")
MAX_LOCATIONS = 10
MAX_SPECIMENS = 10
MAX_ORDER_READS = 20


def codes_param(knowledge: Knowledge, set_ids: tuple[str, ...]) -> str:
    """``system|code,...`` of value sets (plus the site's local lab codes for them)."""
    out: list[str] = []
    for set_id in set_ids:
        if set_id not in knowledge.valuesets:
            continue
        out.extend(f"{s}|{c}" for s, c in sorted(knowledge.valuesets.get(set_id).codes))
        site = knowledge.site.lab_codes.values()
        out.extend(
            f"{c.system}|{c.code}" for c in site if c.value_set == set_id and ":" in c.system
        )
    return ",".join(dict.fromkeys(out))


@dataclass
class FhirContext:
    """What the server gave for one patient: its Patient, lab history, context, gaps."""

    patient: JsonDict | None = None
    labs: list[JsonDict] = field(default_factory=list)
    specimens: list[JsonDict] = field(default_factory=list)
    context: list[JsonDict] = field(default_factory=list)
    missing: set[str] = field(default_factory=set)


def _queries(pid: str, knowledge: Knowledge) -> dict[str, str]:
    return {
        "patient": f"Patient/{pid}",
        "labs": f"Observation?patient={pid}&code={codes_param(knowledge, HISTORY_SETS)}"
        "&_sort=-date&_count=200&_include=Observation:specimen",
        "encounter": f"Encounter?patient={pid}&_include=Encounter:location&_count=50",
        "conditions": f"Condition?patient={pid}&_count=200",
        "procedures": f"Procedure?patient={pid}&_count=100",
        "service-requests": f"ServiceRequest?patient={pid}&status=active&_count=100",
        "medications": f"MedicationRequest?patient={pid}&_count=200",
        "administrations": f"MedicationAdministration?patient={pid}"
        "&_sort=-effective-time&_count=100",
    }


def _resources(answer: JsonDict) -> list[JsonDict]:
    if answer.get("resourceType") != "Bundle":
        return [answer]
    return [r for e in get_dicts(answer, "entry") if (r := get_dict(e, "resource")) is not None]


def _reads(client: FhirClient, keys: list[str], limit: int) -> list[JsonDict]:
    """Read up to ``limit`` resources by ``Type/id``; those that fail are left out."""
    found = []
    for key in keys[:limit]:
        try:
            found.append(client.get(key))
        except FhirUnavailable:
            continue
    return found


def _locations(client: FhirClient, encounters: list[JsonDict], have: set[str]) -> list[JsonDict]:
    """Locations the encounters name that the search did not include (a few reads)."""
    wanted: list[str] = []
    for enc in encounters:
        for item in get_dicts(enc, "location"):
            key = local_ref(get_str(get_dict(item, "location") or {}, "reference"))
            if key and key.startswith("Location/") and key not in have and key not in wanted:
                wanted.append(key)
    return _reads(client, wanted, MAX_LOCATIONS)


def specimens(client: FhirClient, observations: list[JsonDict], have: set[str]) -> list[JsonDict]:
    """Specimens the Observations name by reference that are not held (newest first, a few)."""
    wanted: list[str] = []
    for obs in observations:
        key = local_ref(get_str(get_dict(obs, "specimen") or {}, "reference"))
        if key and key.startswith("Specimen/") and key not in have and key not in wanted:
            wanted.append(key)
    return _reads(client, wanted, MAX_SPECIMENS)


def fetch_context(client: FhirClient, pid: str, knowledge: Knowledge) -> FhirContext:
    """Look up one patient's Patient, lab history and clinical context (in parallel)."""
    out = FhirContext()
    queries = _queries(pid, knowledge)
    with ThreadPoolExecutor(max_workers=len(queries)) as pool:
        futures = {k: pool.submit(client.fetch, q) for k, q in queries.items()}
        for key, future in futures.items():
            try:
                found = _resources(future.result())
            except FhirUnavailable as exc:
                log.warning("fhir context look-up failed key=%s reason=%s", key, exc.reason)
                out.missing.add(key)
                continue
            if key == "patient":
                out.patient = (
                    found[0] if found and found[0].get("resourceType") == "Patient" else None
                )
            elif key == "labs":
                out.labs = [r for r in found if r.get("resourceType") == "Observation"]
                out.specimens = [r for r in found if r.get("resourceType") == "Specimen"]
            else:
                out.context.extend(found)
    encounters = [r for r in out.context if r.get("resourceType") == "Encounter"]
    have = {f"Location/{r.get('id')}" for r in out.context if r.get("resourceType") == "Location"}
    try:
        out.context.extend(_locations(client, encounters, have))
    except BadResource:  # an unreadable Encounter: its Locations stay unknown
        out.missing.add("locations")
    held = {f"Specimen/{r.get('id')}" for r in out.specimens}
    try:
        out.specimens.extend(specimens(client, out.labs, held))
    except BadResource:  # an unreadable Observation: it is skipped when stored
        out.missing.add("specimens")
    return out


def merged_snapshot(ctx: FhirContext, pid: str, knowledge: Knowledge, tz: tzinfo) -> SnapshotFn:
    """A snapshot builder for ``advise``: the store's snapshot plus the server's context."""

    def build(session: Session, patient: Patient, now: datetime) -> m.ClinicalSnapshot:
        base = build_snapshot(session, patient, now)
        index = ResourceIndex()
        resources = [r for r in [ctx.patient, *ctx.context] if r is not None]
        for res in resources:
            index.add(res, None)
        extra = build_parts(resources, [], knowledge, index=index, patient_id=pid, tz=tz, bad=[])
        parts = Parts(
            labs=[
                r
                for kind in (m.SERUM_MG, m.IONIZED_MG, m.CREATININE, m.ALBUMIN, m.EGFR, m.WEIGHT)
                for r in base.series(kind)
            ],
            excluded=[*base.excluded, *extra.excluded],
            encounters=[(e, None) for e in base.encounters] + extra.encounters,
            conditions=[*base.conditions, *extra.conditions],
            procedures=[*base.procedures, *extra.procedures],
            medications=[*base.medications, *extra.medications],
            birth=extra.birth or (base.birth_date.isoformat() if base.birth_date else None),
            sex=extra.sex or base.sex,
        )
        missing = sorted("lab history" if k == "labs" else k for k in ctx.missing)
        return freeze(parts, base.patient_id, None, now, missing)

    return build


def orderers(client: FhirClient, observations: dict[str, JsonDict]) -> dict[str, str]:
    """The ordering practitioner of each Observation, from its ServiceRequest (basedOn)."""
    found: dict[str, str] = {}
    reads = 0
    for key, obs in observations.items():
        based = obs.get("basedOn")
        for ref in [r for r in based if isinstance(r, dict)] if isinstance(based, list) else []:
            target = local_ref(get_str(ref, "reference"))
            if not target or not target.startswith("ServiceRequest/") or reads >= MAX_ORDER_READS:
                continue
            reads += 1
            try:
                requester = get_dict(client.get(target), "requester") or {}
            except FhirUnavailable:
                continue
            who = local_ref(get_str(requester, "reference"))
            if who and who.startswith(("Practitioner/", "PractitionerRole/")):
                found[key] = who
                break
    return found
