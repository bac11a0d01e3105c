"""Follow-up reads (hooks/prefetch_refs.py): Locations and Specimens named by reference only are
read from the allowlisted fhirServer under the same deadline and added as include entries."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.clinical.fhir_extract import snapshot_from_cds_request
from cds_service.config import Settings
from cds_service.hooks.fhir_client import new_session
from cds_service.hooks.prefetch import PrefetchOutcome, resolve_prefetch
from cds_service.hooks.prefetch_refs import MAX_READS
from cds_service.rules.model import Knowledge

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.tools.fhir_stub import StubFhir  # noqa: E402

PID = "p-ref-1"
TOKEN = "ref-follow-token"
NOW = datetime(2024, 5, 4, 12, tzinfo=UTC)
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"


@dataclass(frozen=True)
class Service:
    prefetch: dict[str, str] = field(
        default_factory=lambda: {
            "patient": "Patient/{{context.patientId}}",
            "encounters": "Encounter?patient={{context.patientId}}&status=in-progress"
            "&_include=Encounter:location",
            "magnesium": "Observation?patient={{context.patientId}}&code=http://loinc.org|19123-9"
            "&_include=Observation:specimen",
        }
    )
    required_prefetch: frozenset[str] = frozenset({"patient", "magnesium"})


PATIENT = {"resourceType": "Patient", "id": PID, "birthDate": "1960-01-01"}
MICU = {"resourceType": "Location", "id": "loc-7", "name": "MICU-2"}
WARD = {"resourceType": "Location", "id": "loc-3", "name": "4 North"}
URINE = {"resourceType": "Specimen", "id": "sp-1", "type": {"text": "Urine"}}


def encounter(*locations: dict[str, Any], rid: str = "enc-1") -> dict[str, Any]:
    return {
        "resourceType": "Encounter", "id": rid, "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{PID}"}, "period": {"start": "2024-05-03T08:00:00Z"},
        "location": list(locations),
    }  # fmt: skip


def at(ref: str, start: str) -> dict[str, Any]:
    return {"location": {"reference": ref}, "period": {"start": start}}


def mg(rid: str, specimen: str | None = None, value: float = 1.5) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation", "id": rid, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
        "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": "2024-05-04T10:00:00Z",
        "valueQuantity": {"value": value, "unit": "mg/dL"},
    }  # fmt: skip
    if specimen:
        obs["specimen"] = {"reference": specimen}
    return obs


def bundle(*resources: dict[str, Any], include: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset",
            "entry": [{"resource": r} for r in resources]
            + [{"resource": r, "search": {"mode": "include"}} for r in include]}  # fmt: skip


def request(prefetch: dict[str, Any], server: str | None, **context: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "hook": "patient-view", "hookInstance": "3f1c2d3e-0000-4000-8000-000000000001",
        "context": {"patientId": PID, **context}, "prefetch": prefetch,
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "user/*.read", "subject": "cds"},
    }  # fmt: skip
    if server:
        req["fhirServer"] = server
    return req


def resolve(req: dict[str, Any], *allow: str, deadline_ms: int = 2000) -> PrefetchOutcome:
    settings = Settings.from_mapping(
        {"CDS_FHIR_ALLOWLIST": ",".join(allow), "CDS_FHIR_DEADLINE_MS": deadline_ms}
    )
    return resolve_prefetch(req, Service(), settings, new_session())


def added(out: PrefetchOutcome, key: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in out.prefetch[key]["entry"] if e.get("search") == {"mode": "include"}]


def test_a_location_named_by_reference_only_is_read_and_makes_the_icu_stay(
    knowledge: Knowledge,
) -> None:
    given = {
        "patient": PATIENT,
        "encounters": bundle(encounter(at("Location/loc-3", "2024-05-03T08:00:00Z"),
                                       at("Location/loc-7", "2024-05-03T20:00:00Z"))),
        "magnesium": bundle(mg("mg-1")),
    }  # fmt: skip
    with StubFhir({"/Location/loc-7": (200, MICU), "/Location/loc-3": (200, WARD)}) as stub:
        out = resolve(request(given, stub.base), stub.base)
    assert sorted(r["id"] for r in added(out, "encounters")) == ["loc-3", "loc-7"]
    assert (out.missing, out.bad_resources, out.fetched) == ([], 0, [])
    assert sorted(s.path for s in stub.seen) == ["/fhir/Location/loc-3", "/fhir/Location/loc-7"]
    assert {s.headers["Authorization"] for s in stub.seen} == {f"Bearer {TOKEN}"}

    snap = snapshot_from_cds_request({**request(given, None), "prefetch": out.prefetch}, knowledge, now=NOW)
    assert snap.current_encounter_id == "enc-1"
    assert [(s.start.isoformat(), s.source) for s in snap.icu_stays] == [
        ("2024-05-03T20:00:00+00:00", "Encounter.location")
    ]
    # the same request without the follow-up read knows no ICU
    blind = snapshot_from_cds_request(request(given, None), knowledge, now=NOW)
    assert blind.icu_stays == ()


def test_included_or_contained_targets_are_not_read_again() -> None:
    contained = {**encounter({"location": {"reference": "#l1"}}, rid="enc-2"),
                 "contained": [{"resourceType": "Location", "id": "l1", "name": "MICU"}]}  # fmt: skip
    given = {
        "patient": PATIENT,
        "encounters": bundle(encounter(at("Location/loc-7", "2024-05-03T20:00:00Z")), contained,
                             include=(MICU,)),
        "magnesium": bundle(mg("mg-1", "Specimen/sp-1"), include=(URINE,)),
    }  # fmt: skip
    with StubFhir({}) as stub:
        out = resolve(request(given, stub.base), stub.base)
    assert stub.seen == [] and out.prefetch == given and out.missing == []


def test_without_a_usable_server_unread_references_are_named_missing() -> None:
    given = {"patient": PATIENT,
             "encounters": bundle(encounter(at("Location/loc-7", "2024-05-03T20:00:00Z"))),
             "magnesium": bundle(mg("mg-1", "Specimen/sp-1"))}  # fmt: skip
    assert resolve(request(given, None)).missing == ["locations", "specimens"]
    with StubFhir({"/Location/loc-7": (200, MICU)}) as stub:
        off_list = resolve(request(given, stub.base), "https://other.example/fhir")
    assert stub.seen == [] and off_list.missing == ["locations", "specimens"]


def test_a_reference_to_another_server_is_not_followed() -> None:
    given = {"patient": PATIENT,
             "encounters": bundle(encounter(at("https://evil.example/fhir/Location/loc-7", "2024-05-03T20:00:00Z"))),
             "magnesium": bundle(mg("mg-1"))}  # fmt: skip
    with StubFhir({"/Location/loc-7": (200, MICU)}) as stub:
        out = resolve(request(given, stub.base), stub.base)
    assert stub.seen == [] and out.missing == ["locations"]


def test_specimens_of_context_results_are_read_into_the_magnesium_bundle(
    knowledge: Knowledge,
) -> None:
    given = {"patient": PATIENT, "encounters": bundle(), "magnesium": bundle(mg("mg-old", value=1.9))}
    results = {"resourceType": "Bundle", "type": "collection",
               "entry": [{"resource": mg("mg-new", "Specimen/sp-1", 1.2)}]}  # fmt: skip
    with StubFhir({"/Specimen/sp-1": (200, URINE)}) as stub:
        req = request(given, stub.base, results=results)
        out = resolve(req, stub.base)
    assert [r["id"] for r in added(out, "magnesium")] == ["sp-1"]
    snap = snapshot_from_cds_request({**req, "prefetch": out.prefetch}, knowledge, now=NOW)
    assert [r.id for r in snap.serum_mg] == ["Observation/mg-old"]
    (ex,) = [x for x in snap.excluded if x.resource == "Observation/mg-new"]
    assert (ex.reason_code, ex.specimen) == (m.SPECIMEN_NOT_SERUM, "Urine")


def test_404_is_no_data_other_failures_missing_wrong_type_counted() -> None:
    given = {"patient": PATIENT,
             "encounters": bundle(encounter(at("Location/gone", "2024-05-03T08:00:00Z"),
                                            at("Location/odd", "2024-05-03T09:00:00Z"))),
             "magnesium": bundle(mg("mg-1", "Specimen/sp-9"))}  # fmt: skip
    replies = {"/Location/odd": (200, PATIENT), "/Specimen/sp-9": (500, {"resourceType": "OperationOutcome"})}
    with StubFhir(replies) as stub:
        out = resolve(request(given, stub.base), stub.base)
    assert out.missing == ["specimens"] and out.bad_resources == 1
    assert added(out, "encounters") == [] and out.prefetch["encounters"] == given["encounters"]


def test_at_most_max_reads_per_include_within_the_one_deadline() -> None:
    many = [at(f"Location/l{i}", "2024-05-03T08:00:00Z") for i in range(MAX_READS + 5)]
    given = {"patient": PATIENT, "encounters": bundle(encounter(*many)), "magnesium": bundle(mg("mg-1"))}
    replies = {f"/Location/l{i}": (200, {**WARD, "id": f"l{i}"}) for i in range(MAX_READS + 5)}
    with StubFhir(replies) as stub:
        out = resolve(request(given, stub.base), stub.base)
    assert len(stub.seen) == MAX_READS and len(added(out, "encounters")) == MAX_READS
    with StubFhir(replies, delay=3.0) as slow:
        late = resolve(request(given, slow.base), slow.base, deadline_ms=300)
    assert late.missing == ["locations"]


@pytest.mark.parametrize("value", [None, {"resourceType": "OperationOutcome", "issue": []}])
def test_nothing_to_follow_when_the_key_holds_no_encounter(value: Any) -> None:
    given = {"patient": PATIENT, "encounters": value, "magnesium": bundle(mg("mg-1"))}
    with StubFhir({}) as stub:
        out = resolve(request(given, stub.base), stub.base)
    assert stub.seen == [] and "locations" not in out.missing


def test_the_references_of_both_encounter_keys_are_followed() -> None:
    base = Service().prefetch  # in the order of the real templates: encounter, then encounters
    templates = {"patient": base["patient"],
                 "encounter": "Encounter?_id={{context.encounterId}}&_include=Encounter:location",
                 "encounters": base["encounters"], "magnesium": base["magnesium"]}  # fmt: skip
    service = Service(prefetch=templates)
    sub = {**encounter(at("Location/loc-7", "2024-05-03T20:00:00Z"), rid="enc-icu"),
           "partOf": {"reference": "Encounter/enc-1"}}  # fmt: skip
    given = {"patient": PATIENT,
             "encounter": bundle(encounter(at("Location/loc-3", "2024-05-03T08:00:00Z"))),
             "encounters": bundle(encounter(at("Location/loc-3", "2024-05-03T08:00:00Z")), sub),
             "magnesium": bundle(mg("mg-1"))}  # fmt: skip
    with StubFhir({"/Location/loc-7": (200, MICU), "/Location/loc-3": (200, WARD)}) as stub:
        allowed = Settings.from_mapping({"CDS_FHIR_ALLOWLIST": stub.base, "CDS_FHIR_DEADLINE_MS": 2000})
        out = resolve_prefetch(request(given, stub.base, encounterId="enc-1"), service, allowed, new_session())
    assert sorted(s.path for s in stub.seen) == ["/fhir/Location/loc-3", "/fhir/Location/loc-7"]
    # each Location read once, added to the first key (template order) that references it:
    # the ICU sub-encounter's Location, only in the in-progress search, is read too
    assert [r["id"] for r in added(out, "encounter")] == ["loc-3"]
    assert [r["id"] for r in added(out, "encounters")] == ["loc-7"]
    assert out.missing == []
