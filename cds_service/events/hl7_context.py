"""PID, PV1, EVN, DG1, PR1 and MRG segments as plain records (no database, no clock)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from cds_service.clinical.fhir_context import encounter_class
from cds_service.events.hl7_config import Hl7Maps
from cds_service.events.hl7_parse import Seg
from cds_service.events.hl7_values import parse_ts, ts_to_iso
from cds_service.rules.model import Knowledge


@dataclass(frozen=True)
class PatientId:
    """A patient identifier: system URI and value (never logged)."""

    system: str
    value: str


@dataclass(frozen=True)
class Demographics:
    """The patient key and the facts the rules need (age, sex)."""

    identifier: PatientId
    birth_date: str | None = None
    sex: str | None = None


@dataclass(frozen=True)
class Visit:
    """PV1: class, current unit, visit number, admit and discharge times."""

    klass: str
    class_code: str
    unit: str
    is_icu: bool
    visit_number: str
    admit: datetime | None
    discharge: datetime | None


@dataclass(frozen=True)
class CodedEvent:
    """A DG1 diagnosis or PR1 procedure: system URI, code, display, time."""

    system: str
    code: str
    display: str | None
    time: datetime | None


def identifier_system(seg: Seg, rep: str) -> str:
    """CX.4 assigning authority (OID as urn:oid, else its namespace), else CX.5 type."""
    authority = _component(seg, rep, 4)
    namespace, universal, kind = seg.sub(authority, 1), seg.sub(authority, 2), seg.sub(authority, 3)
    if universal:
        return f"urn:oid:{universal}" if kind.upper() in ("ISO", "") else universal
    if namespace:
        return f"urn:hl7v2:aa:{namespace}"
    return f"urn:hl7v2:cx5:{_component(seg, rep, 5) or 'unknown'}"


def _component(seg: Seg, rep: str, n: int) -> str:
    parts = rep.split(seg.seps.component)
    return parts[n - 1].strip() if n - 1 < len(parts) else ""


def pick_identifier(seg: Seg, field: int, maps: Hl7Maps) -> PatientId | None:
    """The patient key among a CX list: first of the preferred CX.5 types, else the first."""
    ids = [(rep, seg.comp(field, 1, rep=rep)) for rep in seg.reps(field)]
    ids = [(rep, value) for rep, value in ids if value]
    if not ids:
        return None
    for wanted in maps.patient_identifier_types:
        for rep, value in ids:
            if _component(seg, rep, 5).upper() == wanted:
                return PatientId(identifier_system(seg, rep), value)
    rep, value = ids[0]
    return PatientId(identifier_system(seg, rep), value)


def demographics(pid: Seg, maps: Hl7Maps) -> Demographics | None:
    """PID-3 key, PID-7 birth date, PID-8 sex; None without a usable identifier."""
    identifier = pick_identifier(pid, 3, maps)
    if identifier is None:
        return None
    birth = ts_to_iso(pid.comp(7, 1))
    sex = {"F": "female", "M": "male", "O": "other", "U": "unknown"}.get(pid.comp(8, 1).upper())
    return Demographics(identifier, birth[:10] if birth else None, sex)


def visit(pv1: Seg, maps: Hl7Maps, knowledge: Knowledge, tz: tzinfo) -> Visit:
    """PV1-2 class (encounter value sets), PV1-3 unit (ICU by name), PV1-19, PV1-44, PV1-45."""
    code = pv1.comp(2, 1).upper()
    enc = {"class": {"system": maps.patient_class_system, "code": code}} if code else {}
    klass = encounter_class(enc, knowledge)
    unit, description = pv1.comp(3, 1), pv1.comp(3, 9)
    is_icu = knowledge.icu_names.match(unit, description) is not None
    return Visit(
        klass=klass,
        class_code=code,
        unit=unit or description,
        is_icu=is_icu,
        visit_number=pv1.comp(19, 1),
        admit=parse_ts(pv1.comp(44, 1), tz)[0],
        discharge=parse_ts(pv1.comp(45, 1), tz)[0],
    )


def event_time(evn: Seg | None, msh_time: str, tz: tzinfo) -> datetime | None:
    """When the ADT event happened: EVN-6, else EVN-2, else MSH-7."""
    for value in ((evn.comp(6, 1), evn.comp(2, 1)) if evn else ()) + (msh_time,):
        at = parse_ts(value, tz)[0]
        if at is not None:
            return at
    return None


def coded(
    seg: Seg, field: int, time_field: int, default: str, maps: Hl7Maps, tz: tzinfo
) -> CodedEvent | None:
    """A coded DG1/PR1 entry (CE: code^text^system), None without a code."""
    code = seg.comp(field, 1)
    if not code:
        return None
    system_name = seg.comp(field, 3)
    system = maps.system_uri(system_name) if system_name else default
    return CodedEvent(
        system, code, seg.comp(field, 2) or None, parse_ts(seg.comp(time_field, 1), tz)[0]
    )
