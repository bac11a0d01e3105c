"""OBX segments of interest → normalised results, through the FHIR reader's own rules.

An OBX is rewritten as the Observation it stands for (code, status, valueQuantity with
comparator and unit, effective time, and its order's specimen, SPM-4 or OBR-15, as a
contained Specimen) and read by ``clinical.fhir_labs.read_observation``:
units, conversions, plausibility, status and comparators follow exactly one set of
rules (evidence.md §1) whichever channel a result came by.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.fhir_common import ResourceIndex
from cds_service.clinical.fhir_labs import LabTable, classify_codings, read_observation
from cds_service.events.hl7_config import Hl7Maps
from cds_service.events.hl7_er7 import component_of
from cds_service.events.hl7_parse import Seg
from cds_service.events.hl7_scan import obx_codings
from cds_service.events.hl7_values import parse_nm, parse_sn, ts_to_iso


@dataclass(frozen=True)
class Issue:
    """A problem worth an AE: table 0357 key, ERR-2 location, text without patient data."""

    key: str
    location: str
    text: str


@dataclass(frozen=True)
class ObxRecord:
    """One OBX of interest, read: what to store and what it does to earlier results."""

    index: int
    set_id: str
    value_set: str
    code: m.Coding
    action: str
    status: str
    result: m.LabResult | m.Excluded
    value_text: str
    flags: str
    orderer: str
    issue: Issue | None = None


def _value(seg: Seg, maps: Hl7Maps, loc: str) -> tuple[dict[str, Any], Issue | None]:
    """valueQuantity / valueString for OBX-2 and OBX-5 (and OBX-6 units)."""
    vtype = seg.comp(2, 1).upper()
    raw = seg.field(5)
    text = seg.comp(5, 1) if vtype != "SN" else raw
    unit_code, unit_text = seg.comp(6, 1), seg.comp(6, 2)
    if vtype in maps.numeric_types and raw.strip():
        if vtype == "SN":
            sn = parse_sn(raw, seg.seps.component)
            number, comparator = sn if sn is not None else (None, None)
        else:
            number, comparator = parse_nm(text), None
        if number is None:
            issue = Issue("data_type", f"{loc}^5", f"OBX-5 is not a valid {vtype} value")
            return {"valueString": text[:64]}, issue
        quantity: dict[str, Any] = {"value": number}
        if comparator:
            quantity["comparator"] = comparator
        if unit_code:
            quantity["code"] = unit_code
        if unit_text:
            quantity["unit"] = unit_text
        return {"valueQuantity": quantity}, None
    return ({"valueString": text[:64]} if text else {}), None


def specimen_of(spm: Seg | None, obr: Seg | None, maps: Hl7Maps) -> dict[str, Any] | None:
    """The order's specimen as a FHIR Specimen: SPM-4 (v2.5+), else OBR-15.1 (v2.3-2.4).

    SPM-4 is a CWE (code^text^system); OBR-15.1 a CE in subcomponents (code&text&system) or
    plain text. The text is kept as ``type.text`` and matched against the not-serum words.
    """
    if spm is not None and spm.comp(4, 1) + spm.comp(4, 2):
        code, text, system = spm.comp(4, 1), spm.comp(4, 2), spm.comp(4, 3)
    elif obr is not None and obr.field(15):
        first = component_of(obr.field(15), 1, obr.seps)
        code, text, system = (obr.sub(first, n) for n in (1, 2, 3))
    else:
        return None
    kind: dict[str, Any] = {}
    if code and system:
        kind["coding"] = [{"system": maps.system_uri(system), "code": code}]
    if text or code:
        kind["text"] = text or code
    return {"resourceType": "Specimen", "id": "spm", "type": kind} if kind else None


def read_obx(
    seg: Seg,
    obr: Seg | None,
    orc: Seg | None,
    maps: Hl7Maps,
    table: LabTable,
    tz: tzinfo,
    specimen: dict[str, Any] | None = None,
) -> ObxRecord | None:
    """One OBX as an ObxRecord (None when its OBX-3 is not of interest after all).

    ``specimen``: the order's Specimen (``specimen_of``): it decides whether a serum
    magnesium code really is a serum result (evidence.md §1).
    """
    codings = obx_codings(seg.field(3), seg.seps, maps)
    found = classify_codings(codings, table)
    if found is None:
        return None
    value_set, coding = found
    loc = f"OBX^{seg.index + 1}"
    status_code = seg.comp(11, 1).upper()
    issue: Issue | None = None
    mapped = maps.result_status.get(status_code)
    if mapped is None:
        status, action = maps.result_status_missing, "add"
        if status_code:
            issue = Issue("table_value", f"{loc}^11", "OBX-11 result status is not in table 0085")
    else:
        status, action = mapped.status, mapped.action
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"hl7-obx-{seg.index + 1}",
        "status": status,
        "code": {
            "coding": [
                {"system": c.system, "code": c.code, "display": c.display}
                for c in codings
                if c.system
            ]
        },
    }
    when = ts_to_iso(seg.comp(14, 1)) or (ts_to_iso(obr.comp(7, 1)) if obr else None)
    if when:
        obs["effectiveDateTime"] = when
    value, value_issue = _value(seg, maps, loc)
    obs.update(value)
    issue = issue or value_issue
    reference = seg.comp(7, 1)
    if reference:
        obs["referenceRange"] = [{"text": reference[:64]}]
    if specimen is not None:
        obs["contained"], obs["specimen"] = [specimen], {"reference": f"#{specimen['id']}"}
    result = read_observation(obs, table, ResourceIndex(), tz)
    if result is None:  # pragma: no cover - classified above
        return None
    orderer = (obr.field(16) if obr else "") or (orc.field(12) if orc else "")
    return ObxRecord(
        index=seg.index,
        set_id=seg.comp(1, 1),
        value_set=value_set,
        code=coding,
        action=action,
        status=status,
        result=result,
        value_text=seg.field(5)[:255],
        flags=",".join(r for r in seg.reps(8) if r)[:64],
        orderer=orderer[:255],
        issue=issue,
    )
