"""Prefetch policy (style item 9): present / null / absent / OperationOutcome / bad entries,
the allowlist, the token, one deadline, retries and paging, against local stub servers."""

from __future__ import annotations

import json
import logging
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cds_service.config import Settings
from cds_service.hooks.fhir_client import (
    FhirClient,
    FhirUnavailable,
    allowlisted,
    new_session,
    within,
)
from cds_service.hooks.prefetch import PrefetchOutcome, PrefetchRequired, resolve_prefetch
from cds_service.hooks.prefetch_tokens import render, token_values

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.tools.fhir_stub import StubFhir  # noqa: E402

PAGED = REPO / "tests" / "fixtures" / "fhir" / "paged-search-hapi-style.json"
TOKEN = "s3cret-access-token"
PID = "patient-7f3a"
MG = "Observation?patient={{context.patientId}}&code=http://loinc.org|19123-9,http://loinc.org|2601-3&_sort=-date&_count=100"


@dataclass(frozen=True)
class Service:
    prefetch: dict[str, str] = field(
        default_factory=lambda: {
            "patient": "Patient/{{context.patientId}}",
            "magnesium": MG,
            "encounter": "Encounter/{{context.encounterId}}",
            "conditions": "Condition?patient={{context.patientId}}&clinical-status=active",
        }
    )
    required_prefetch: frozenset[str] = frozenset({"patient", "magnesium"})


SERVICE = Service()
PATIENT = {"resourceType": "Patient", "id": PID}
OBS = {"resourceType": "Observation", "id": "mg1", "status": "final"}
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}


def searchset(*resources: Any) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def request(prefetch: dict[str, Any] | None = None, server: str | None = None, **ctx: Any) -> dict[str, Any]:
    req: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {"userId": "Practitioner/dr1", "patientId": PID, **ctx},
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "user/*.read", "subject": "cds"},
    }
    if prefetch is not None:
        req["prefetch"] = prefetch
    if server is not None:
        req["fhirServer"] = server
    return req


def settings(*allow: str, deadline_ms: int = 2000) -> Settings:
    return Settings.from_mapping({"CDS_FHIR_ALLOWLIST": ",".join(allow), "CDS_FHIR_DEADLINE_MS": deadline_ms})


def resolve(req: dict[str, Any], st: Settings | None = None, service: Any = SERVICE) -> PrefetchOutcome:
    return resolve_prefetch(req, service, st or settings(), new_session())


FULL = {"patient": PATIENT, "magnesium": searchset(OBS), "encounter": None, "conditions": searchset()}


# --- the policy table, no server ---------------------------------------------------------

def test_all_present_is_used_as_is() -> None:
    out = resolve(request(FULL))
    assert out.prefetch == FULL
    assert (out.missing, out.bad_resources, out.fetched) == ([], 0, [])


def test_unknown_keys_are_ignored() -> None:
    out = resolve(request({**FULL, "foreign": PATIENT, "other": OUTCOME}))
    assert set(out.prefetch) == set(SERVICE.prefetch)
    assert out.missing == []


def test_null_is_no_data_and_never_refetched() -> None:
    with StubFhir({"/Condition": (200, searchset(OBS))}) as stub:
        out = resolve(request({**FULL, "conditions": None}, stub.base), settings(stub.base))
    assert out.prefetch["conditions"] is None
    assert out.missing == [] and out.fetched == []
    assert stub.seen == []


@pytest.mark.parametrize(
    ("value", "bad"),
    [(OUTCOME, 0), ("not a resource", 1), ({"id": "x"}, 1), ([PATIENT], 1),
     ({"resourceType": "Bundle", "type": "searchset", "entry": {"resource": OBS}}, 1)],
    ids=["operation-outcome", "string", "no-resourceType", "list", "entry-not-array"],
)
def test_unusable_optional_value_is_missing_not_refetched(value: Any, bad: int) -> None:
    with StubFhir({"/Condition": (200, searchset(OBS))}) as stub:
        out = resolve(request({**FULL, "conditions": value}, stub.base), settings(stub.base))
    assert out.prefetch["conditions"] is None
    assert out.missing == ["conditions"]
    assert out.bad_resources == bad
    assert stub.seen == []


@pytest.mark.parametrize("key", ["patient", "magnesium"])
def test_operation_outcome_for_required_key_raises(key: str) -> None:
    with pytest.raises(PrefetchRequired) as err:
        resolve(request({**FULL, key: OUTCOME}))
    assert err.value.keys == [key]
    assert "OperationOutcome" in err.value.reason


def test_bad_bundle_entries_are_skipped_and_counted() -> None:
    bundle = searchset(OBS)
    bundle["entry"] += [
        "junk",
        {"fullUrl": "urn:uuid:1"},
        {"resource": {"id": "no-type"}},
        {"resource": {"resourceType": 7}},
        {"resource": {"resourceType": "OperationOutcome", "issue": []}, "search": {"mode": "outcome"}},
    ]
    out = resolve(request({**FULL, "magnesium": bundle}))
    assert out.bad_resources == 4
    assert out.prefetch["magnesium"]["entry"] == [{"resource": OBS}]
    assert out.missing == []
    assert len(bundle["entry"]) == 6  # the request is not modified


def test_absent_without_fhir_server_optional_missing_required_raises() -> None:
    out = resolve(request({"patient": PATIENT, "magnesium": searchset(OBS)}))
    assert out.missing == ["encounter", "conditions"] or out.missing == ["conditions"]
    with pytest.raises(PrefetchRequired) as err:
        resolve(request({"encounter": None, "conditions": None}))
    assert err.value.keys == ["patient", "magnesium"]
    assert "no fhirServer" in err.value.reason


def test_missing_context_token_gives_none_for_optional_and_raises_for_required() -> None:
    out = resolve(request({"patient": PATIENT, "magnesium": searchset(OBS), "conditions": None}))
    assert out.prefetch["encounter"] is None and out.missing == []
    req = request({"encounter": None, "conditions": None})
    del req["context"]["patientId"]
    with pytest.raises(PrefetchRequired) as err:
        resolve(req)
    assert "context lacks a prefetch token" in err.value.reason


def test_tokens_are_url_encoded_and_user_tokens_derived() -> None:
    values = token_values({"patientId": "a b/c&d", "userId": "PractitionerRole/r1", "x": {"y": 1}})
    assert render("Patient/{{context.patientId}}", values) == "Patient/a%20b%2Fc%26d"
    assert render("PractitionerRole?_id={{userPractitionerRoleId}}", values) == "PractitionerRole?_id=r1"
    assert render("Practitioner/{{userPractitionerId}}", values) is None
    assert render("X?y={{context.x}}", values) is None


# --- the allowlist and the token -----------------------------------------------------------

A = "https://fhir.a.org/r4"


@pytest.mark.parametrize(
    ("server", "ok"),
    [
        (A, True),
        (A + "/", True),
        (A + "/sub", True),
        ("https://fhir.a.org/r40", False),
        ("https://evil.org/?x=https://fhir.a.org/r4", False),
        ("https://evil.org/https://fhir.a.org/r4", False),
        ("https://fhir.a.org/r4@evil.org", False),
        ("https://fhir.a.org/r4/../admin", False),
        ("https://fhir.a.org/r4/%2e%2e/admin", False),
        (A + "?x=1", False),
        (A + "#x", False),
        ("http://fhir.a.org/r4", False),
        ("https://fhir.a.org", False),
        ("", False),
    ],
)
def test_allowlist_prefix_rules(server: str, ok: bool) -> None:
    assert (allowlisted(server, (A,)) is not None) is ok
    assert (allowlisted(server, (A + "/",)) is not None) is ok


def test_paging_links_may_query_the_base_but_not_leave_it() -> None:
    assert within(A + "?_getpages=x&_getpagesoffset=2", A)
    assert not within("https://fhir.a.org/r40?_getpages=x", A)
    client = FhirClient(A, new_session())
    with pytest.raises(FhirUnavailable):
        client.url("https://evil.org/r4/Patient/1")
    assert client.url("Patient/1") == A + "/Patient/1"


@pytest.mark.parametrize("allow", ["", "{base}0", "{base}/r4"], ids=["empty", "lookalike", "sub-path"])
def test_token_never_sent_to_a_server_off_the_allowlist(allow: str) -> None:
    with StubFhir({"/Patient/" + PID: (200, PATIENT)}) as stub:
        entries = [allow.format(base=stub.base)] if allow else []
        out = resolve(request({"magnesium": searchset(OBS), "patient": PATIENT}, stub.base), settings(*entries))
        with pytest.raises(PrefetchRequired):
            resolve(request({}, stub.base), settings(*entries))
    assert stub.seen == []
    assert out.missing == ["encounter", "conditions"] or out.missing == ["conditions"]


def test_token_sent_only_to_the_allowlisted_server_and_not_to_a_foreign_next_link() -> None:
    with StubFhir({"/Observation": (200, searchset(OBS))}) as evil:
        leaking = searchset(OBS)
        leaking["link"] = [{"relation": "next", "url": evil.base + "/Observation?page=2"}]
        replies = {"/Patient/" + PID: (200, PATIENT), "/Condition": (200, leaking)}
        with StubFhir(replies) as good:
            out = resolve(request({"magnesium": searchset(OBS)}, good.base), settings(good.base))
    assert evil.seen == []
    assert out.missing == ["conditions"]
    assert out.fetched == ["patient"]
    assert {s.headers.get("Authorization") for s in good.seen} == {f"Bearer {TOKEN}"}


def test_no_fhir_authorization_means_no_authorization_header() -> None:
    with StubFhir({"/Patient/" + PID: (200, PATIENT)}) as stub:
        req = request({"magnesium": searchset(OBS), "conditions": None}, stub.base)
        del req["fhirAuthorization"]
        out = resolve(req, settings(stub.base))
    assert out.prefetch["patient"] == PATIENT
    assert all("Authorization" not in s.headers for s in stub.seen)


# --- fetching: parallel, deadline, retries, paging, errors ---------------------------------

def test_absent_keys_are_fetched_and_tokens_filled() -> None:
    replies = {
        "/Patient/" + PID: (200, PATIENT),
        "/Observation": (200, searchset(OBS, "junk")),
        "/Encounter/e1": (200, {"resourceType": "Encounter", "id": "e1"}),
        "/Condition": (200, searchset()),
    }
    with StubFhir(replies) as stub:
        out = resolve(request({}, stub.base, encounterId="e1"), settings(stub.base))
    assert out.fetched == ["patient", "magnesium", "encounter", "conditions"]
    assert out.prefetch["magnesium"]["entry"] == [{"resource": OBS}]
    assert out.bad_resources == 1 and out.missing == []
    paths = sorted(s.path for s in stub.seen)
    assert f"/fhir/Observation?patient={PID}&code=http://loinc.org%7C19123-9,http://loinc.org%7C2601-3&_sort=-date&_count=100" in paths


def test_read_404_is_no_data_other_errors_are_missing() -> None:
    replies = {
        "/Observation": (200, searchset(OBS)),
        "/Encounter/e1": (404, OUTCOME),
        "/Condition": (500, OUTCOME),
    }
    with StubFhir(replies) as stub:
        out = resolve(request({"patient": PATIENT}, stub.base, encounterId="e1"), settings(stub.base))
        assert out.prefetch["encounter"] is None and "encounter" in out.fetched
        assert out.missing == ["conditions"]
        replies2 = {**replies, "/Condition": (200, "<html>not json</html>")}
    with StubFhir(replies2) as stub:
        out = resolve(request({"patient": PATIENT}, stub.base), settings(stub.base))
    assert out.missing == ["conditions"]


def test_one_deadline_for_the_whole_call_with_a_slow_server() -> None:
    with StubFhir({"/Condition": (200, searchset())}, delay=5.0) as stub:
        t0 = time.monotonic()
        out = resolve(request({"patient": PATIENT, "magnesium": searchset(OBS)}, stub.base, encounterId="e1"),
                      settings(stub.base, deadline_ms=300))
        optional_s = time.monotonic() - t0
        t0 = time.monotonic()
        with pytest.raises(PrefetchRequired) as err:
            resolve(request({}, stub.base), settings(stub.base, deadline_ms=300))
        required_s = time.monotonic() - t0
    assert out.missing == ["encounter", "conditions"]
    assert "deadline" in err.value.reason or "timeout" in err.value.reason
    assert optional_s < 0.6 and required_s < 0.6, (optional_s, required_s)


def test_get_retries_on_503_then_succeeds() -> None:
    replies = {"/Patient/" + PID: [(503, OUTCOME), (502, OUTCOME), (200, PATIENT)]}
    with StubFhir(replies) as stub:
        out = resolve(request({"magnesium": searchset(OBS), "conditions": None}, stub.base), settings(stub.base))
    assert out.prefetch["patient"] == PATIENT
    assert len(stub.seen) == 3


def test_get_gives_up_after_retries() -> None:
    with StubFhir({"/Condition": (503, OUTCOME)}) as stub:
        out = resolve(request({"patient": PATIENT, "magnesium": searchset(OBS)}, stub.base), settings(stub.base))
    assert out.missing == ["conditions"]
    assert len(stub.seen) == 3


def test_connection_refused_is_missing_quickly() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{s.getsockname()[1]}/fhir"
    t0 = time.monotonic()
    out = resolve(request({"patient": PATIENT, "magnesium": searchset(OBS)}, base), settings(base))
    assert out.missing == ["conditions"]
    assert time.monotonic() - t0 < 1.5


def test_paging_across_three_recorded_pages() -> None:
    pages = json.loads(PAGED.read_text(encoding="utf-8"))["pages"]
    with StubFhir({k: (200, v) for k, v in pages.items()}) as stub:
        out = resolve(request({"patient": PATIENT, "conditions": None}, stub.base), settings(stub.base))
    bundle = out.prefetch["magnesium"]
    assert [e["resource"]["id"] for e in bundle["entry"]] == [f"mg-{i}" for i in range(1, 6)]
    assert bundle["entry"][0]["fullUrl"] == stub.base + "/Observation/mg-1"
    assert "link" not in bundle and bundle["total"] == 5
    assert len(stub.seen) == 3
    assert [s.path.split("_getpagesoffset=")[-1][:1] for s in stub.seen[1:]] == ["2", "4"]
    assert all(s.headers["Authorization"] == f"Bearer {TOKEN}" for s in stub.seen)


def test_paging_loop_is_cut() -> None:
    looping = searchset(OBS)
    looping["link"] = [{"relation": "next", "url": "{base}/Observation?page=2"}]
    with StubFhir({"/Observation": (200, looping)}) as stub:
        out = resolve(request({"patient": PATIENT}, stub.base), settings(stub.base),
                      Service(required_prefetch=frozenset({"patient"})))
    assert "magnesium" in out.missing


def test_logs_carry_no_token_and_no_patient_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with StubFhir({"/Patient/" + PID: (200, PATIENT), "/Condition": (500, OUTCOME)}) as stub:
        resolve(request({"magnesium": searchset(OBS)}, stub.base), settings(stub.base))
        with pytest.raises(PrefetchRequired) as err:
            resolve(request({"magnesium": OUTCOME}, stub.base), settings(stub.base))
    assert "conditions" in caplog.text
    assert TOKEN not in caplog.text and PID not in caplog.text
    assert TOKEN not in str(err.value) and PID not in str(err.value)
