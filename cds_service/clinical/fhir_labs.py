"""Observations to ``LabResult`` (usable) or ``Excluded`` (read, not used), per evidence.md §1.

Classification is by code (LOINC or a site-mapped local code) into a value set;
the unit sent wins over the code's property; every number is converted to the
canonical unit of its quantity before any comparison.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.fhir_common import (
    BadResource,
    JsonDict,
    ResourceIndex,
    coding_fields,
    concept_of,
    get_dict,
    get_dicts,
    get_number,
    get_str,
    name_of,
    read_time,
)
from cds_service.clinical.terminology import code_key, system_key
from cds_service.clinical.units import Quantity, UnknownUnit
from cds_service.rules.model import Bounds, Knowledge

# Value-set id -> (snapshot series, quantity in units.yaml). Series None: a
# magnesium measured in another specimen (never feeds serum rules).
LAB_SETS: dict[str, tuple[str | None, str]] = {
    "serum-magnesium-mass": (m.SERUM_MG, "magnesium"),
    "serum-magnesium-moles": (m.SERUM_MG, "magnesium"),
    "ionized-magnesium": (m.IONIZED_MG, "magnesium"),
    "whole-blood-magnesium": (None, "magnesium"),
    "other-specimen-magnesium": (None, "magnesium"),
    "creatinine": (m.CREATININE, "creatinine"),
    "albumin": (m.ALBUMIN, "albumin"),
    "egfr": (m.EGFR, "egfr"),
    "body-weight": (m.WEIGHT, "weight"),
}
NON_SERUM_SPECIMEN = "non-serum-specimen"
FINAL_STATUSES = frozenset({"final", "amended", "corrected"})
# LabResult.time_flags by (time taken from ``issued``, dateTime sent without an offset)
_TIME_FLAGS = {
    (False, False): frozenset(),
    (True, False): frozenset({"issued"}),
    (False, True): frozenset({"no-timezone"}),
    (True, True): frozenset({"issued", "no-timezone"}),
}

#: Plausibility bounds in the canonical unit of their quantity: gt, ge, lt, le.
Limits = tuple[float | None, float | None, float | None, float | None]


@dataclass(frozen=True)
class LabTable:
    """Lookups derived once from Knowledge: code -> value set, quantities, plausibility."""

    knowledge: Knowledge
    exact: dict[tuple[str, str], str]
    #: (system, code) as sent -> value set: the site's lab codes, and the ``exact`` codes
    #: that normalise to themselves (one look-up for the usual LOINC coding).
    direct: dict[tuple[str, str], str]
    ranged: tuple[str, ...]
    quantities: dict[str, Quantity]
    plausible: dict[str, Bounds]
    limits: dict[str, Limits]


_TABLES: dict[int, LabTable] = {}


def lab_table(knowledge: Knowledge) -> LabTable:
    """The lab lookup table for this Knowledge (cached per Knowledge object)."""
    table = _TABLES.get(id(knowledge))
    if table is not None and table.knowledge is knowledge:
        return table
    exact: dict[tuple[str, str], str] = {}
    ranged: list[str] = []
    for set_id in LAB_SETS:
        if set_id not in knowledge.valuesets:
            continue
        vs = knowledge.valuesets.get(set_id)
        for key in vs.codes:
            exact.setdefault(key, set_id)
        if vs.ranges:
            ranged.append(set_id)
    direct = {key: set_id for key, set_id in exact.items() if _match_key(*key) == key}
    for key, local in knowledge.site.lab_codes.items():
        if local.value_set in LAB_SETS:
            direct[key] = local.value_set  # a site code wins
    quantities = {
        q: knowledge.units[q] for _, q in LAB_SETS.values() if q in knowledge.units.quantities
    }
    # Knowledge.plausible holds the magnesium bounds; other quantities' bounds
    # (units.yaml `plausible:`) come from Knowledge.plausible_limits when the loader gives it.
    extra: Any = getattr(knowledge, "plausible_limits", None) or {}
    plausible: dict[str, Bounds] = {str(k): v for k, v in dict(extra).items()}
    plausible["magnesium"] = knowledge.plausible
    limits: dict[str, Limits] = {}
    for qname, bounds in plausible.items():
        if qname in quantities:
            with suppress(UnknownUnit):  # then each result is reported unreadable, as before
                limits[qname] = _canonical_limits(bounds, quantities[qname])
    table = LabTable(knowledge, exact, direct, tuple(ranged), quantities, plausible, limits)
    if len(_TABLES) > 8:
        _TABLES.clear()
    _TABLES[id(knowledge)] = table
    return table


def _match_key(system: str, code: str) -> tuple[str, str]:
    """The key under which value sets index a code."""
    return system_key(system), code_key(system, code)


def _lab_set(system: str, code: str, table: LabTable) -> str | None:
    """The lab value set of one code (a site code first), or None."""
    set_id = table.direct.get((system, code))
    if set_id is None:
        set_id = table.exact.get(_match_key(system, code))
    if set_id is None and table.ranged:
        set_id = table.knowledge.valuesets.classify(m.Coding(system, code), table.ranged)
    return set_id


def _classify(obs: JsonDict, table: LabTable) -> tuple[str, m.Coding] | None:
    """The value set of the first coding that has one (site codes first), and the coding.

    Every coding is checked first (a wrongly typed one makes the resource unreadable).
    A site code's documented unit is not used for a result sent without one:
    that result stays "unit uncertain" (evidence.md §1).
    """
    for system, code, display in coding_fields(get_dict(obs, "code")):
        set_id = _lab_set(system, code, table)
        if set_id is not None:
            return set_id, m.Coding(system, code, display)
    return None


def classify_codings(codings: tuple[m.Coding, ...], table: LabTable) -> tuple[str, m.Coding] | None:
    """The lab value set of the first coding that has one (site codes first), and the coding.

    Shared by the FHIR reader and the HL7 v2 cheap scan (OBX-3).
    """
    for c in codings:
        set_id = _lab_set(c.system, c.code, table)
        if set_id is not None:
            return set_id, c
    return None


def _canonical_limits(bounds: Bounds, quantity: Quantity) -> Limits:
    """Bounds given in any unit of the quantity, in its canonical unit.

    :raises UnknownUnit: the bounds' unit is not a unit of the quantity.
    """

    def conv(b: float | None) -> float | None:
        return None if b is None else quantity.to_canonical(b, bounds.unit)

    return conv(bounds.gt), conv(bounds.ge), conv(bounds.lt), conv(bounds.le)


def _within(value: float, limits: Limits) -> bool:
    """Whether a canonical value lies within canonical limits."""
    gt, ge, lt, le = limits
    return not (
        (gt is not None and not value > gt)
        or (ge is not None and not value >= ge)
        or (lt is not None and not value < lt)
        or (le is not None and not value <= le)
    )


def _reference_range(obs: JsonDict) -> str | None:
    """The lab's first reference range as ``low-high unit`` (or its text)."""
    for rr in get_dicts(obs, "referenceRange"):
        low, high = get_dict(rr, "low"), get_dict(rr, "high")
        lo = get_number(low, "value") if low else None
        hi = get_number(high, "value") if high else None
        q = low or high or {}
        unit = get_str(q, "unit") or get_str(q, "code") or ""
        if lo is not None and hi is not None:
            return f"{lo:g}-{hi:g} {unit}".strip()
        if lo is not None:
            return f"≥ {lo:g} {unit}".strip()
        if hi is not None:
            return f"≤ {hi:g} {unit}".strip()
        return get_str(rr, "text")
    return None


_MG_KINDS = frozenset({m.SERUM_MG, m.IONIZED_MG})


def _specimen(
    obs: JsonDict, index: ResourceIndex, table: LabTable, kind: str
) -> tuple[str | None, str | None]:
    """The specimen's name, and the text saying a magnesium result is not serum (or None).

    "The specimen decides" (evidence.md §1): a Specimen type in a not-serum value set, or a
    not-serum word (``mappings/specimens.yaml``) in the specimen's type or display, or in the
    Observation's code text or displays. Whole blood is a specimen of ionized magnesium.
    """
    ref = get_dict(obs, "specimen")
    texts: list[str | None] = []
    name = None
    ionized = kind == m.IONIZED_MG
    words = table.knowledge.specimen_words
    if ref is not None:
        spec = index.resolve(ref, obs)
        concept = concept_of(get_dict(spec, "type")) if spec is not None else m.Concept()
        display = get_str(ref, "display")
        name = concept.text or next((c.display or c.code for c in concept.codings), None) or display
        if kind not in _MG_KINDS:
            return name, None
        vs = table.knowledge.valuesets
        sets = words.sets(ionized=ionized)
        if concept.codings and sets and vs.concept_match(concept, sets) == "code":
            return name, name
        texts += [concept.text, display]
        texts += [t for c in concept.codings for t in (c.display, c.code)]
    elif kind not in _MG_KINDS:
        return None, None
    code = get_dict(obs, "code")
    if code is not None:
        texts.append(get_str(code, "text"))
        texts += [d for _, _, d in coding_fields(code)]
    return name, words.find(texts, ionized=ionized)


def _time(obs: JsonDict, tz: tzinfo) -> tuple[datetime | None, str, frozenset[str], bool]:
    """Result time: effective[DateTime|Instant], else effectivePeriod.start, else issued."""
    source = "effective"
    parsed = read_time(obs.get("effectiveDateTime") or obs.get("effectiveInstant"), tz)
    if parsed is None:
        period = get_dict(obs, "effectivePeriod")
        parsed = read_time(period.get("start"), tz) if period else None
    if parsed is None:
        parsed, source = read_time(obs.get("issued"), tz), "issued"
    if parsed is None:
        return None, source, frozenset(), False
    time, date_only, no_timezone = parsed
    return time, source, _TIME_FLAGS[source == "issued", no_timezone], date_only


def _non_numeric_text(obs: JsonDict) -> str | None:
    """What was sent instead of a number (valueString, a coded value, dataAbsentReason)."""
    if isinstance(obs.get("valueString"), str):
        return str(obs["valueString"])
    for key in ("valueCodeableConcept", "dataAbsentReason"):
        cc = get_dict(obs, key)
        if cc is not None:
            c = concept_of(cc)
            return c.text or next((x.display or x.code for x in c.codings), key)
    for key in ("valueBoolean", "valueRange", "valueRatio", "valueSampledData", "valuePeriod"):
        if key in obs:
            return str(obs[key])
    return None


def read_observation(
    obs: JsonDict, table: LabTable, index: ResourceIndex, tz: tzinfo
) -> m.LabResult | m.Excluded | None:
    """One Observation as a usable result, an exclusion, or None when not of interest.

    :raises BadResource: a field has the wrong JSON type.
    """
    found = _classify(obs, table)
    if found is None:
        return None
    set_id, coding = found
    kind, qname = LAB_SETS[set_id]
    name = name_of(obs)
    time, source, flags, date_only = _time(obs, tz)
    vq = get_dict(obs, "valueQuantity")
    if vq is None and "valueInteger" in obs:
        vq = {"value": obs["valueInteger"]}
    value: float | None = None
    comparator: str | None = None
    units_sent: list[str] = []
    if vq:
        value, comparator = get_number(vq, "value"), get_str(vq, "comparator")
        units_sent = list(filter(None, (get_str(vq, "unit"), get_str(vq, "code"))))
    shown_kind = kind if kind is not None else set_id
    # what was sent instead of a number is read here, before the checks below (it may raise)
    non_numeric = _non_numeric_text(obs) if value is None else None

    specimen, not_serum = _specimen(obs, index, table, kind) if kind else (None, None)
    if not_serum is not None:
        not_serum = not_serum[:40]

    def excluded(code: str, reason: str) -> m.Excluded:
        sent = f"{comparator or ''}{value:g}" if value is not None else non_numeric
        unit = units_sent[0] if units_sent else None
        return m.Excluded(name, code, reason, shown_kind, sent, unit, time, not_serum)

    if kind is None:
        return excluded(m.NON_SERUM, f"magnesium not measured in serum/plasma ({set_id})")
    if not_serum is not None:
        return excluded(m.SPECIMEN_NOT_SERUM, f"not serum or plasma: {not_serum}")
    status = get_str(obs, "status") or "unknown"
    if status not in FINAL_STATUSES:
        return excluded(m.NOT_FINAL, f"status is {status}, not final")
    if time is None:
        return excluded(m.NO_TIME, "no effective or issued time")
    if value is None:
        return excluded(
            m.NON_NUMERIC, "no numeric value" if non_numeric is None else "not a number"
        )
    quantity = table.quantities.get(qname)
    if quantity is None:
        return excluded(m.UNKNOWN_UNIT, f"no unit table for {qname}")
    if not units_sent:
        return excluded(m.UNIT_UNCERTAIN, "no unit sent")
    preferred = quantity.preferred
    known = {preferred[u] for u in map(str.strip, units_sent) if u in preferred}
    if not known:
        return excluded(m.UNKNOWN_UNIT, f"unit {units_sent[0]!r} is not a unit of {qname}")
    if len(known) > 1 and len({quantity.factors[u] for u in known}) > 1:
        return excluded(m.UNIT_UNCERTAIN, f"unit text and code disagree ({', '.join(units_sent)})")
    unit = next(iter(known))
    try:
        canonical = quantity.to_canonical(value, unit)
    except UnknownUnit:  # pragma: no cover - known was checked above
        return excluded(m.UNKNOWN_UNIT, f"unit {unit!r} is not a unit of {qname}")
    bounds = table.plausible.get(qname)
    if bounds is not None:
        # the table lacks limits only when the bounds' unit is unknown: that raises here, as before
        limits = table.limits.get(qname) or _canonical_limits(bounds, quantity)
        if not _within(canonical, limits):
            return excluded(
                m.IMPLAUSIBLE,
                f"{canonical:.4g} {quantity.canonical} is outside {bounds.describe()}",
            )
    # positional, in field order: keywords make this call a third slower (one per result)
    return m.LabResult(
        name,  # id
        kind,
        canonical,  # value
        quantity.canonical,  # unit
        time,
        coding,  # code
        value,  # original_value
        unit,  # original_unit
        comparator,
        status,
        source,  # time_source
        flags,  # time_flags
        date_only,
        _reference_range(obs),
        specimen,
    )


def bad_resource(res: Any, error: str) -> m.Excluded:
    """An Excluded for a resource that could not be read."""
    name = name_of(res) if isinstance(res, dict) else f"{type(res).__name__}/?"
    return m.Excluded(name, m.BAD_RESOURCE, f"unreadable resource: {error}")


__all__ = [
    "LAB_SETS",
    "BadResource",
    "LabTable",
    "bad_resource",
    "classify_codings",
    "lab_table",
    "read_observation",
]
