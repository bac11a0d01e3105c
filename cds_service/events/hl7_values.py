"""HL7 v2 value types: TS/DTM times, NM numbers, SN structured numerics."""

from __future__ import annotations

import re
from datetime import datetime, tzinfo

from cds_service.clinical.fhir_common import parse_time
from cds_service.clinical.numbers import Reported

_TS = re.compile(
    r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?\s*([+-]\d{4})?(?:\^\w*)?$"
)
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_COMPARATOR = re.compile(r"^(<=|>=|<|>|=)?\s*([+-]?(?:\d+\.?\d*|\.\d+))$")
FHIR_COMPARATORS = {"<": "<", ">": ">", "<=": "<=", ">=": ">=", "=": None, "": None}


def ts_to_iso(value: str) -> str | None:
    """An HL7 TS/DTM as an ISO 8601 string (a date stays a date; no offset stays naive).

    Year or year-month only, or an unreadable value, gives None.
    """
    match = _TS.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, frac, offset = match.groups()
    if month is None or day is None:
        return None
    text = f"{year}-{month}-{day}"
    if hour is not None:
        text += f"T{hour}:{minute or '00'}:{second or '00'}"
        if frac:
            text += "." + frac.ljust(6, "0")[:6]
        if offset:
            text += f"{offset[:3]}:{offset[3:]}"
    return text


def parse_ts(value: str, tz: tzinfo) -> tuple[datetime | None, bool]:
    """An HL7 time as an aware datetime (site timezone when none) and whether it had no zone."""
    iso = ts_to_iso(value)
    if iso is None:
        return None, False
    try:
        parsed = parse_time(iso, tz)
    except ValueError:
        return None, False
    if parsed is None:
        return None, False
    return parsed.time, parsed.no_timezone


def parse_nm(value: str) -> float | None:
    """An NM value, or None when it is not a number."""
    text = value.strip()
    return Reported(text) if _NUMBER.match(text) else None


def parse_sn(value: str, component: str) -> tuple[float, str | None] | None:
    """An SN value ``[comparator]^num1`` (``<^1.0``), or ``<1.0`` in one component.

    Ranges and ratios (``1^-^3``, ``1^:^128``) are not single numbers: None.
    """
    parts = value.split(component)
    if len(parts) > 2 and any(p.strip() for p in parts[2:]):
        return None
    if len(parts) >= 2:
        comparator, number = parts[0].strip(), parts[1].strip()
        if comparator not in FHIR_COMPARATORS or not _NUMBER.match(number):
            return None
        return Reported(number), FHIR_COMPARATORS[comparator]
    match = _COMPARATOR.match(value.strip())
    if not match:
        return None
    return Reported(match.group(2)), FHIR_COMPARATORS[match.group(1) or ""]
