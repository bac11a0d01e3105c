"""Every FHIR Subscription notification form read into one shape (no server, no database)."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.events.fhir_notify_forms import (
    CLASSIC,
    BadNotification,
    local_ref,
    parse_notification,
)

OBS = {"resourceType": "Observation", "id": "mg-1", "status": "final",
       "subject": {"reference": "Patient/p-1"}}  # fmt: skip


def status(kind: str, count: int | None, *events: tuple[int, str | None]) -> dict[str, Any]:
    """An R4B/R5 SubscriptionStatus."""
    res: dict[str, Any] = {"resourceType": "SubscriptionStatus", "status": "active", "type": kind,
                           "subscription": {"reference": "https://fhir.example/Subscription/s1"},
                           "topic": "http://example.org/topic/labs"}  # fmt: skip
    if count is not None:
        res["eventsSinceSubscriptionStart"] = str(count)
    res["notificationEvent"] = [
        {"eventNumber": str(n), **({"focus": {"reference": f}} if f else {})} for n, f in events
    ]
    return res


def parameters(kind: str, count: int, *events: tuple[int, str]) -> dict[str, Any]:
    """An R4 backport Parameters status."""
    params: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": "Subscription/s1"}},
        {"name": "status", "valueCode": "active"},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(count)},
    ]
    for n, focus in events:
        params.append({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": str(n)},
            {"name": "timestamp", "valueInstant": "2024-05-10T08:00:00Z"},
            {"name": "focus", "valueReference": {"reference": focus}}]})  # fmt: skip
    return {"resourceType": "Parameters", "parameter": params}


def bundle(first: dict[str, Any], *rest: dict[str, Any], btype: str = "history") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": btype,
            "entry": [{"fullUrl": "urn:uuid:0", "resource": first}, *rest]}  # fmt: skip


def test_r4_classic_forms() -> None:
    empty = parse_notification(None)
    assert (empty.form, empty.type, empty.subscription) == (CLASSIC, "event-notification", CLASSIC)
    assert empty.resources == () and empty.numbers == []
    single = parse_notification(OBS)
    assert single.form == CLASSIC and single.resources == (OBS,)
    several = parse_notification({"resourceType": "Bundle", "type": "collection",
                                  "entry": [{"resource": OBS}, {"resource": {**OBS, "id": "mg-2"}}]})  # fmt: skip
    assert [r["id"] for r in several.resources] == ["mg-1", "mg-2"]


@pytest.mark.parametrize("kind", ["handshake", "heartbeat"])
def test_r4b_handshake_and_heartbeat(kind: str) -> None:
    note = parse_notification(bundle(status(kind, 0)))
    assert (note.form, note.type, note.subscription) == ("r4b", kind, "Subscription/s1")
    assert note.events_since_start == 0 and note.numbers == []


def test_r4b_full_resource_event() -> None:
    note = parse_notification(
        bundle(status("event-notification", 7, (7, "Observation/mg-1")), {"resource": OBS})
    )
    assert note.type == "event-notification" and note.numbers == [7]
    assert note.events[0].focus == "Observation/mg-1" and note.resources == (OBS,)


def test_r5_id_only_event_ignores_the_host() -> None:
    entry = {"fullUrl": "https://evil.example/fhir/Observation/mg-9",
             "request": {"method": "PUT", "url": "Observation/mg-9"}}  # fmt: skip
    note = parse_notification(
        bundle(
            status("event-notification", 3, (3, "https://evil.example/fhir/Observation/mg-9")),
            entry,
            btype="subscription-notification",
        )
    )
    assert note.form == "r5" and note.resources == ()
    assert note.ids == ("Observation/mg-9",) and note.events[0].focus == "Observation/mg-9"


def test_empty_payload_counts_the_event() -> None:
    note = parse_notification(bundle(status("event-notification", 12)))
    assert note.events == () and note.resources == () and note.numbers == [12]


def test_r4_backport_parameters() -> None:
    hello = parse_notification(bundle(parameters("handshake", 0)))
    assert (hello.form, hello.type, hello.subscription) == (
        "r4-backport",
        "handshake",
        "Subscription/s1",
    )
    note = parse_notification(
        bundle(
            parameters("event-notification", 2, (2, "http://x.example/Observation/o2/_history/3"))
        )
    )
    assert note.numbers == [2] and note.events[0].focus == "Observation/o2"
    assert note.events[0].timestamp == "2024-05-10T08:00:00Z"


def test_local_ref() -> None:
    assert local_ref("Observation/1") == "Observation/1"
    assert local_ref("https://h.example/base/Observation/1/_history/2") == "Observation/1"
    assert local_ref("urn:uuid:1") is None and local_ref("#c1") is None and local_ref(5) is None
    assert local_ref("Observation/../../etc") is None


MALFORMED: list[Any] = [
    [], "text", 5, {"no": "type"}, {"resourceType": 5},
    {"resourceType": "Bundle", "type": "history", "entry": "x"},
    {"resourceType": "Bundle", "type": "history", "entry": [1, 2]},
    {"resourceType": "Bundle", "type": "subscription-notification", "entry": [{"resource": OBS}]},
    {"resourceType": "Bundle", "type": "subscription-notification", "entry": []},
    bundle(status("bogus", 1)),
    bundle({**status("event-notification", 1), "eventsSinceSubscriptionStart": "abc"}),
    bundle({**status("event-notification", 1), "eventsSinceSubscriptionStart": "-4"}),
    bundle({**status("event-notification", 1), "eventsSinceSubscriptionStart": "9" * 40}),
    bundle({**status("event-notification", 1), "notificationEvent": 5}),
    bundle({**status("event-notification", 1), "notificationEvent": [{"eventNumber": True}]}),
    bundle({"resourceType": "Parameters", "parameter": "x"}),
    bundle({"resourceType": "Parameters", "parameter": [{"name": "type", "valueCode": "heartbeat"},
                                                        {"name": "notification-event", "part": 3}]}),
]  # fmt: skip


@pytest.mark.parametrize("body", MALFORMED)
def test_malformed_bodies_are_refused(body: Any) -> None:
    with pytest.raises(BadNotification):
        parse_notification(body)
