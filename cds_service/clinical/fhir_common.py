"""Small helpers for walking FHIR R4 JSON as plain dicts (the hot path: no pydantic).

Accessors raise ``BadResource`` when a field has the wrong JSON type; the
extractors catch it per resource, so one bad resource never fails a request.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, tzinfo
from itertools import starmap
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
    return val  # as sent: an int stays "2", a Reported float keeps "2.0" (clinical/numbers.py)


CodingFields = tuple[str, str, str | None]


def coding_fields(cc: JsonDict | None) -> list[CodingFields]:
    """``(system, code, display)`` of the codings that have both system and code.

    Checked like ``codings_of``, without building ``Coding`` objects: for callers
    that keep one of the codings, or none.

    :raises BadResource: a coding is not an object, or a field is not a string.
    """
    if cc is None:
        return []
    raw = [cc] if "code" in cc and "coding" not in cc else get_list(cc, "coding")
    out: list[CodingFields] = []
    for c in raw:
        if not isinstance(c, dict):
            raise BadResource("coding is not an object")
        # get_str inlined: this runs for every coding of every resource
        system, code = c.get("system"), c.get("code")
        if system is not None and not isinstance(system, str):
            raise BadResource("system is not a string")
        if code is not None and not isinstance(code, str):
            raise BadResource("code is not a string")
        if system and code:
            display = c.get("display")
            if display is not None and not isinstance(display, str):
                raise BadResource("display is not a string")
            out.append((system, code, display))
    return out


def codings_of(cc: JsonDict | None) -> tuple[Coding, ...]:
    """The codings (system and code both present) of a CodeableConcept or a Coding."""
    return tuple(starmap(Coding, coding_fields(cc)))


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


TimeFields = tuple[datetime, bool, bool]


def read_time(value: Any, tz: tzinfo) -> TimeFields | None:
    """``parse_time`` as a plain ``(time, date_only, no_timezone)`` tuple (half its cost).

    :raises BadResource: the value is not a string.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadResource("date/time is not a string")
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=tz), True, False
        if len(value) < 10:
            return None
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=tz), False, True
    return dt, False, False


def parse_time(value: Any, tz: tzinfo) -> ParsedTime | None:
    """Read a FHIR date, dateTime or instant; None when unreadable or only a year/month.

    A date is midnight in ``tz`` (``date_only``); a dateTime without an offset
    is read in ``tz`` (``no_timezone``).

    :raises BadResource: the value is not a string.
    """
    got = read_time(value, tz)
    return None if got is None else ParsedTime(*got)


def time_of(value: Any, tz: tzinfo) -> datetime | None:
    """The instant of a FHIR date, dateTime or instant (``parse_time(...).time``), or None.

    :raises BadResource: the value is not a string.
    """
    got = read_time(value, tz)
    return None if got is None else got[0]


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
    return time_of(period.get("start"), tz), time_of(period.get("end"), tz)


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

    __slots__ = ("_ref_keys", "by_key", "by_url")

    def __init__(self) -> None:
        self.by_key: dict[str, JsonDict] = {}
        self.by_url: dict[str, str] = {}
        self._ref_keys: dict[str, str] = {}  # ref_key of the references seen (most recur)

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
        key = self.by_url.get(reference)
        if key is None:
            key = self._ref_keys.get(reference)
            if key is None:
                key = self._ref_keys[reference] = ref_key(reference)
        return key

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
