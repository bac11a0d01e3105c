"""Clinical context from FHIR: encounters and ICU stays, conditions, procedures, medications.

Each reader takes one resource (a dict) and returns a model object or None
when the resource does not count (evidence.md §2). Readers raise
``BadResource`` for wrongly typed fields; the caller records the exclusion.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from cds_service.clinical import model as m
from cds_service.clinical.fhir_common import (
    JsonDict,
    ResourceIndex,
    coding_fields,
    codings_of,
    concept_of,
    get_dict,
    get_dicts,
    get_list,
    get_str,
    name_of,
    period_of,
    time_of,
)
from cds_service.rules.model import Knowledge

ENCOUNTER_CLASS_SETS = (
    ("encounter-inpatient", "inpatient"),
    ("encounter-emergency", "emergency"),
    ("encounter-ambulatory", "ambulatory"),
)
ICU_LOCATION = "icu-location"
DROPPED_ENCOUNTER = frozenset({"cancelled", "entered-in-error"})
ACTIVE_CONDITION = frozenset({"active", "recurrence", "relapse"})
REFUTED_CONDITION = frozenset({"refuted", "entered-in-error"})
PERFORMED_PROCEDURE = frozenset({"completed", "in-progress"})
PLANNED_PROCEDURE = frozenset({"preparation"})
PLANNED_REQUEST = frozenset({"active", "draft", "on-hold"})
DROPPED_DRAFT = frozenset({"cancelled", "entered-in-error", "revoked"})
ADMINISTERED = frozenset({"completed", "in-progress"})


def _any_in(knowledge: Knowledge, codings: tuple[m.Coding, ...], set_id: str) -> bool:
    """Whether any coding is in the value set (a missing set is empty)."""
    vs = knowledge.valuesets
    return set_id in vs and any(vs.in_set(c, set_id) for c in codings)


def encounter_class(enc: JsonDict, knowledge: Knowledge) -> str:
    """inpatient | emergency | ambulatory | other, from Encounter.class (R4 Coding or R5 list)."""
    codings: list[m.Coding] = []
    for item in get_list(enc, "class"):
        if isinstance(item, dict):
            codings.extend(codings_of(item))
    found = tuple(codings)
    for set_id, klass in ENCOUNTER_CLASS_SETS:
        if _any_in(knowledge, found, set_id):
            return klass
    return "other"


def location_is_icu(
    loc: JsonDict | None, display: str | None, knowledge: Knowledge
) -> tuple[tuple[m.Coding, ...], bool]:
    """A Location's type codings and whether it is an ICU: by type (v3 RoleCode) or unit name.

    Names (``mappings/icu-units.yaml`` with the site's) are matched in the Location's name,
    aliases, id, identifier values and type texts, and in the reference's display.
    """
    names = knowledge.icu_names
    if loc is None:
        return (), names.match(display) is not None
    types: list[m.Coding] = []
    texts: list[str | None] = [get_str(loc, "name"), display]
    for cc in get_dicts(loc, "type"):
        concept = concept_of(cc)
        types.extend(concept.codings)
        texts += [concept.text, *(c.display for c in concept.codings)]
    texts += [a for a in get_list(loc, "alias") if isinstance(a, str)]
    texts += [get_str(i, "value") for i in get_dicts(loc, "identifier")]
    texts.append(get_str(loc, "id"))
    is_icu = _any_in(knowledge, tuple(types), ICU_LOCATION) or names.match(*texts) is not None
    return tuple(types), is_icu


def read_encounter(
    enc: JsonDict, knowledge: Knowledge, index: ResourceIndex, tz: tzinfo
) -> tuple[m.Encounter, str | None] | None:
    """An Encounter (with its location periods) and its partOf id; None if cancelled."""
    status = get_str(enc, "status") or "unknown"
    if status in DROPPED_ENCOUNTER:
        return None
    start, end = period_of(enc, "period", tz)
    if start is None:
        start, end = period_of(enc, "actualPeriod", tz)
    locations: list[m.LocationPeriod] = []
    for item in get_dicts(enc, "location"):
        ref = get_dict(item, "location")
        display = get_str(ref, "display") if ref else None
        loc = index.resolve(ref, enc)
        types, is_icu = location_is_icu(loc, display, knowledge)
        ls, le = period_of(item, "period", tz)
        label = (get_str(ref, "reference") if ref else None) or display or "?"
        locations.append(m.LocationPeriod(label, types, ls, le, is_icu))
    own_types: list[m.Coding] = []
    for cc in (*get_dicts(enc, "type"), *get_dicts(enc, "serviceType")):
        own_types.extend(codings_of(cc))
    is_icu = _any_in(knowledge, tuple(own_types), ICU_LOCATION) or (
        bool(locations) and all(lp.is_icu for lp in locations)
    )
    part_of = get_dict(enc, "partOf")
    parent = get_str(part_of, "reference") if part_of else None
    parent_id = index.key(parent).split("/")[-1] if parent else None
    rid = get_str(enc, "id") or name_of(enc)
    encounter = m.Encounter(
        rid, encounter_class(enc, knowledge), status, start, end, tuple(locations), is_icu
    )
    return encounter, parent_id


def icu_stays(encounter: m.Encounter, parent_id: str | None) -> list[m.IcuStay]:
    """ICU stays of one encounter: its timed ICU location periods, else the ICU encounter itself."""
    owner = parent_id or encounter.id
    periods = [
        m.IcuStay(lp.start, lp.end, "Encounter.location", owner)
        for lp in encounter.locations
        if lp.is_icu and lp.start is not None
    ]
    if periods:
        return periods
    if encounter.is_icu and encounter.start is not None:
        return [m.IcuStay(encounter.start, encounter.end, "Encounter", owner)]
    return []


def _status_code(res: JsonDict, key: str) -> str | None:
    """The code of a status CodeableConcept (clinicalStatus, verificationStatus)."""
    cc = get_dict(res, key)
    if cc is None:
        return None
    codings = coding_fields(cc)
    return codings[0][1] if codings else get_str(cc, "text")


def read_condition(cond: JsonDict, tz: tzinfo) -> m.Condition | None:
    """A Condition that counts (active/recurrence/relapse or no status; not refuted)."""
    clinical = _status_code(cond, "clinicalStatus")
    if clinical is not None and clinical not in ACTIVE_CONDITION:
        return None
    if _status_code(cond, "verificationStatus") in REFUTED_CONDITION:
        return None
    onset = time_of(cond.get("onsetDateTime"), tz)
    if onset is None:
        period = get_dict(cond, "onsetPeriod")
        onset = time_of(period.get("start"), tz) if period else None
    recorded = time_of(cond.get("recordedDate"), tz)
    return m.Condition(
        get_str(cond, "id") or name_of(cond), concept_of(get_dict(cond, "code")), onset, recorded
    )


def _performed(res: JsonDict, tz: tzinfo, prefix: str) -> tuple[datetime | None, datetime | None]:
    """Start and end: ``<prefix>Period`` start/end, else ``<prefix>DateTime`` for both."""
    start, end = period_of(res, f"{prefix}Period", tz)
    if start is None and end is None:
        at = time_of(res.get(f"{prefix}DateTime"), tz)
        if at is not None:
            return at, at
    return start, end


def read_procedure(proc: JsonDict, tz: tzinfo) -> m.Procedure | None:
    """A Procedure: completed/in-progress (performed), preparation (planned)."""
    status = get_str(proc, "status") or "unknown"
    if status not in PERFORMED_PROCEDURE and status not in PLANNED_PROCEDURE:
        return None
    start, end = _performed(proc, tz, "performed")
    if start is None and end is None:
        start, end = _performed(proc, tz, "occurrence")
    return m.Procedure(
        get_str(proc, "id") or name_of(proc),
        concept_of(get_dict(proc, "code")),
        status,
        start,
        end,
        planned=status in PLANNED_PROCEDURE,
    )


def read_service_request(req: JsonDict, tz: tzinfo, *, draft: bool) -> m.Procedure | None:
    """A planned procedure from a ServiceRequest (active/draft/on-hold, or a draft order)."""
    status = get_str(req, "status") or "unknown"
    if (draft and status in DROPPED_DRAFT) or (not draft and status not in PLANNED_REQUEST):
        return None
    concept = concept_of(get_dict(req, "code"))
    if not concept.codings and not concept.text:
        return None  # nothing a value set could match
    start, end = _performed(req, tz, "occurrence")
    return m.Procedure(
        get_str(req, "id") or name_of(req),
        concept,
        status,
        start,
        end,
        planned=True,
        source="draft-order" if draft else "ServiceRequest",
    )


def _medication_concept(res: JsonDict, index: ResourceIndex) -> m.Concept:
    """medicationCodeableConcept, else the referenced Medication's code (R5 CodeableReference)."""
    cc = get_dict(res, "medicationCodeableConcept")
    if cc is not None:
        return concept_of(cc)
    ref = get_dict(res, "medicationReference")
    med = get_dict(res, "medication")
    if ref is None and med is not None:
        if "concept" in med:
            return concept_of(get_dict(med, "concept"))
        ref = get_dict(med, "reference")
    target = index.resolve(ref, res)
    if target is not None:
        return concept_of(get_dict(target, "code"))
    return m.Concept(text=get_str(ref, "display") if ref else None)


def read_medication(
    res: JsonDict, index: ResourceIndex, tz: tzinfo, *, draft: bool = False
) -> m.Medication | None:
    """A MedicationRequest/Statement/Administration that counts (or a draft order)."""
    rtype = res["resourceType"]
    status = get_str(res, "status") or "unknown"
    time: datetime | None = None
    authored: datetime | None = None
    if rtype == "MedicationRequest":
        if (draft and status in DROPPED_DRAFT) or (not draft and status != "active"):
            return None
        authored = time_of(res.get("authoredOn"), tz)
    elif rtype == "MedicationStatement":
        if status != "active":
            return None
        time = _performed(res, tz, "effective")[0]
    elif rtype == "MedicationAdministration":
        if status not in ADMINISTERED:
            return None
        # R5 spells it occurence[x]
        time = _performed(res, tz, "effective")[0] or _performed(res, tz, "occurence")[0]
    else:
        return None
    return m.Medication(
        get_str(res, "id") or name_of(res),
        _medication_concept(res, index),
        status,
        rtype,
        draft=draft,
        time=time,
        authored=authored,
    )
