"""FHIR Subscription notifications in every form design.md lists, read into one shape.

R4 classic rest-hook (empty body, the resource, or a Bundle of resources); R4 backport
(history Bundle, first entry a Parameters with the status); R4B (history Bundle, first
entry SubscriptionStatus); R5 (Bundle type ``subscription-notification``). References are
kept as ``Type/id`` only: a host named in a notification is never used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from cds_service.clinical.fhir_common import ref_key

CLASSIC = "classic"
TYPES = frozenset({"handshake", "heartbeat", "event-notification", "query-status", "query-event"})
_ID = re.compile(r"^[A-Za-z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$")
JsonDict = dict[str, Any]


class BadNotification(ValueError):
    """The body is not a notification in any supported form (the text names what is wrong)."""


@dataclass(frozen=True)
class Event:
    """One notification event: its number (if sent), its time text, its focus ``Type/id``."""

    number: int | None
    timestamp: str | None
    focus: str | None


@dataclass(frozen=True)
class Notification:
    """A notification: form, type, subscription key, counters, events and resources sent."""

    form: str
    type: str
    subscription: str
    topic: str | None = None
    events_since_start: int | None = None
    events: tuple[Event, ...] = ()
    resources: tuple[JsonDict, ...] = ()
    ids: tuple[str, ...] = ()

    @property
    def numbers(self) -> list[int]:
        """Event numbers sent (the counter stands for the event when no event is listed)."""
        found = [e.number for e in self.events if e.number is not None]
        if not found and self.type == "event-notification" and self.events_since_start:
            return [self.events_since_start]
        return found


def local_ref(reference: Any) -> str | None:
    """``Type/id`` of a reference (absolute URL, relative or ``_history``), else None."""
    if not isinstance(reference, str) or reference.startswith(("#", "urn:")):
        return None
    key = ref_key(reference.split("?", 1)[0].rstrip("/"))
    return key if _ID.match(key) else None


def _dicts(value: Any, what: str) -> list[JsonDict]:
    """A list of objects (absent: empty).

    :raises BadNotification: anything else.
    """
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise BadNotification(f"{what} must be a list of objects")
    return value


def _int(value: Any, what: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise BadNotification(f"{what} is not an integer")
    try:
        number = int(str(value).strip())
    except ValueError:
        raise BadNotification(f"{what} is not an integer") from None
    if not 0 <= number < 2**62:
        raise BadNotification(f"{what} is out of range")
    return number


def _ref(value: Any) -> str | None:
    return local_ref(value.get("reference")) if isinstance(value, dict) else None


def _status_resource(status: JsonDict) -> tuple[str, str, str | None, int | None, list[Event]]:
    """R4B/R5 SubscriptionStatus: type, subscription, topic, counter, events."""
    events = []
    for item in _dicts(status.get("notificationEvent"), "notificationEvent"):
        ts = item.get("timestamp")
        events.append(
            Event(
                _int(item.get("eventNumber"), "eventNumber"),
                ts if isinstance(ts, str) else None,
                _ref(item.get("focus")),
            )
        )
    topic = status.get("topic")
    return (
        str(status.get("type") or ""),
        _ref(status.get("subscription")) or CLASSIC,
        topic if isinstance(topic, str) else None,
        _int(status.get("eventsSinceSubscriptionStart"), "eventsSinceSubscriptionStart"),
        events,
    )


def _value(param: JsonDict) -> Any:
    for key, value in param.items():
        if key.startswith("value"):
            return value
    return None


def _parameters(params: JsonDict) -> tuple[str, str, str | None, int | None, list[Event]]:
    """R4 backport Parameters: the same facts as a SubscriptionStatus."""
    kind, sub, topic, count, events = "", CLASSIC, None, None, []
    for param in _dicts(params.get("parameter"), "Parameters.parameter"):
        name, value = param.get("name"), _value(param)
        if name == "type":
            kind = str(value or "")
        elif name == "subscription":
            sub = _ref(value) or (local_ref(value) if isinstance(value, str) else None) or CLASSIC
        elif name == "topic" and isinstance(value, str):
            topic = value
        elif name == "events-since-subscription-start":
            count = _int(value, "events-since-subscription-start")
        elif name == "notification-event":
            parts = {p.get("name"): _value(p) for p in _dicts(param.get("part"), "part")}
            ts = parts.get("timestamp")
            events.append(
                Event(
                    _int(parts.get("event-number"), "event-number"),
                    ts if isinstance(ts, str) else None,
                    _ref(parts.get("focus")),
                )
            )
    return kind, sub, topic, count, events


def _entries(bundle: JsonDict) -> list[JsonDict]:
    return _dicts(bundle.get("entry"), "Bundle.entry")


def _payload(entries: list[JsonDict]) -> tuple[tuple[JsonDict, ...], tuple[str, ...]]:
    """Full resources sent, and ``Type/id`` of entries sent without their resource (id-only)."""
    resources, ids = [], []
    for entry in entries:
        res = entry.get("resource")
        if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
            resources.append(res)
            continue
        request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
        key = local_ref(entry.get("fullUrl")) or local_ref((request or {}).get("url"))
        if key:
            ids.append(key)
    return tuple(resources), tuple(ids)


def parse_notification(body: Any) -> Notification:
    """Read a notification body (``None`` for an empty body).

    :raises BadNotification: not a notification in any supported form.
    """
    if body is None:
        return Notification(CLASSIC, "event-notification", CLASSIC)
    if not isinstance(body, dict) or not isinstance(body.get("resourceType"), str):
        raise BadNotification("the body is not a FHIR resource")
    if body["resourceType"] != "Bundle":
        return Notification(CLASSIC, "event-notification", CLASSIC, resources=(body,))
    entries = _entries(body)
    first = entries[0].get("resource") if entries else None
    first_type = first.get("resourceType") if isinstance(first, dict) else None
    btype = body.get("type")
    if btype == "subscription-notification" or (
        btype == "history" and first_type in ("SubscriptionStatus", "Parameters")
    ):
        if not isinstance(first, dict) or first_type not in ("SubscriptionStatus", "Parameters"):
            raise BadNotification("the first entry must be the subscription status")
        read = _parameters if first_type == "Parameters" else _status_resource
        kind, sub, topic, count, events = read(first)
        if kind not in TYPES:
            raise BadNotification("the notification type is missing or unknown")
        form = "r5" if btype == "subscription-notification" else "r4b"
        form = "r4-backport" if first_type == "Parameters" else form
        resources, ids = _payload(entries[1:])
        return Notification(form, kind, sub, topic, count, tuple(events), resources, ids)
    resources, ids = _payload(entries)
    return Notification(CLASSIC, "event-notification", CLASSIC, resources=resources, ids=ids)
