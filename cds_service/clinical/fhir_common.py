"""Small helpers for walking FHIR R4 JSON as plain dicts (the hot path: no pydantic).

Accessors raise ``BadResource`` when a field has the wrong JSON type; the
extractors catch it per resource, so one bad resource never fails a request.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, tzinfo
from typing import Any, NamedTuple

from cds_service.clinical.model import Coding, Concept

JsonDict = dict[str, Any]


class BadResource(ValueError):
    """A resource whose fields do not have the JSON types FHIR gives them."""


def get_dict(res: JsonDict, key: str) -> JsonDict | None:
    """A JSON object field, or None when absent."""
    val = res.get(key)
    if val is None or isinstance(val, dict):
        return val
    raise BadResource(f"{key} is not an object")


def get_list(res: JsonDict, key: str) -> list[Any]:
    """A JSON array field (a single object is accepted as a one-item list)."""
    val = res.get(key)
    if val is None:
        return []
    if isinstance(val, list):
        return val
    if isinstance(val, dict):
        return [val]
    raise BadResource(f"{key} is not an array")


def get_dicts(res: JsonDict, key: str) -> Iterator[JsonDict]:
    """The objects of an array field.

    :raises BadResource: an item is not an object.
    """
    for item in get_list(res, key):
        if not isinstance(item, dict):
            raise BadResource(f"{key} holds a non-object")
        yield item


def get_str(res: JsonDict, key: str) -> str | None:
    """A string field, or None when absent."""
    val = res.get(key)
    if val is None or isinstance(val, str):
        return val
    raise BadResource(f"{key} is not a string")


def get_number(res: JsonDict, key: str) -> float | None:
    """A numeric field (JSON number, not bool), or None when absent."""
    val = res.get(key)
    if val is None:
        return None
    if isinstance(val, bool) or not isinstance(val, int | float):
        raise BadResource(f"{key} is not a number")
    return float(val)


def codings_of(cc: JsonDict | None) -> tuple[Coding, ...]:
    """The codings (system and code both present) of a CodeableConcept or a Coding."""
    if cc is None:
        return ()
    raw = [cc] if "code" in cc and "coding" not in cc else get_list(cc, "coding")
    out: list[Coding] = []
    for c in raw:
        if not isinstance(c, dict):
            raise BadResource("coding is not an object")
        system, code = get_str(c, "system"), get_str(c, "code")
        if system and code:
            out.append(Coding(system, code, get_str(c, "display")))
    return tuple(out)


def concept_of(cc: JsonDict | None) -> Concept:
    """A Concept from a CodeableConcept (codings without system or code are dropped)."""
    if cc is None:
        return Concept()
    return Concept(codings_of(cc), get_str(cc, "text"))


class ParsedTime(NamedTuple):
    """A FHIR date/dateTime read as an aware datetime."""

    time: datetime
    date_only: bool
    no_timezone: bool


def parse_time(value: Any, tz: tzinfo) -> ParsedTime | None:
    """Read a FHIR date, dateTime or instant; None when unreadable or only a year/month.

    A date is midnight in ``tz`` (``date_only``); a dateTime without an offset
    is read in ``tz`` (``no_timezone``).

    :raises BadResource: the value is not a string.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadResource("date/time is not a string")
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return ParsedTime(datetime(d.year, d.month, d.day, tzinfo=tz), True, False)
        if len(value) < 10:
            return None
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return ParsedTime(dt.replace(tzinfo=tz), False, True)
    return ParsedTime(dt, False, False)


def parse_date(value: Any) -> date | None:
    """A full FHIR date (YYYY-MM-DD, or the date part of a dateTime); None otherwise."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def period_of(res: JsonDict, key: str, tz: tzinfo) -> tuple[datetime | None, datetime | None]:
    """Start and end of a Period field (None when absent or unreadable)."""
    period = get_dict(res, key)
    if period is None:
        return None, None
    start = parse_time(period.get("start"), tz)
    end = parse_time(period.get("end"), tz)
    return (start.time if start else None), (end.time if end else None)


def ref_key(reference: str) -> str:
    """Normalise a literal reference to ``Type/id`` (absolute URLs and _history cut)."""
    if reference.startswith(("urn:", "#")):
        return reference
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) >= 2:
        return f"{parts[-2]}/{parts[-1]}"
    return reference


def name_of(res: JsonDict) -> str:
    """``Type/id`` of a resource (``Type/?`` without an id)."""
    rid = res.get("id")
    return f"{res.get('resourceType', '?')}/{rid if isinstance(rid, str) else '?'}"


class ResourceIndex:
    """Resources by ``Type/id`` and by ``fullUrl``, for resolving references."""

    __slots__ = ("by_key", "by_url")

    def __init__(self) -> None:
        self.by_key: dict[str, JsonDict] = {}
        self.by_url: dict[str, str] = {}

    def add(self, res: JsonDict, full_url: str | None) -> bool:
        """Index a resource; False when one with the same ``Type/id`` was already there."""
        rid = res.get("id")
        key = f"{res['resourceType']}/{rid}" if isinstance(rid, str) else None
        if full_url and key:
            self.by_url[full_url] = key
        if key is None:
            if full_url:
                self.by_key[full_url] = res
            return True
        if key in self.by_key:
            return False
        self.by_key[key] = res
        return True

    def key(self, reference: str) -> str:
        """The index key a reference points at (fullUrl mapped to ``Type/id``)."""
        if reference in self.by_url:
            return self.by_url[reference]
        return ref_key(reference)

    def resolve(self, ref: JsonDict | None, container: JsonDict) -> JsonDict | None:
        """The resource a Reference points at: contained (``#id``) or in the index."""
        if ref is None:
            return None
        reference = get_str(ref, "reference")
        if not reference:
            return None
        if reference.startswith("#"):
            for inner in get_dicts(container, "contained"):
                if inner.get("id") == reference[1:]:
                    return inner
            return None
        return self.by_key.get(self.key(reference))
