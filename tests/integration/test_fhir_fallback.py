"""FHIR fallback against a real FHIR server (Medplum in memory): with no prefetch, the service's
own queries give exactly what a client's prefetch of the same resources would hold; with the
server gone, required keys raise PrefetchRequired and optional ones are listed as missing.

The patients are shaped as EHRs send them: no ``encounterId`` in patient-view (one case sends
it), an earlier finished admission beside the current one, Encounter Locations and a result's
Specimen named by reference only (no display). A client that ignores ``_include`` sends the
matches alone: the service reads the Locations and the Specimen itself."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from cds_service.clinical import model as m
from cds_service.clinical.fhir_extract import snapshot_from_cds_request
from cds_service.config import Settings
from cds_service.hooks.fhir_client import new_session
from cds_service.hooks.prefetch import PrefetchOutcome, PrefetchRequired, resolve_prefetch
from cds_service.hooks.services import ServiceDef, load_services
from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge
from tests.integration.fhir_server import FhirServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "tests" / "fixtures" / "fhir" / "fallback-two-patients-transaction.json"
NOW = datetime(2024, 5, 4, tzinfo=UTC)
TOKEN = "fallback-test-token"

# What each template key must return, by the fixture's own resource ids (newest first where
# the template sorts by date; included resources after the matches). Written from the
# fixture, not from the server's answers.
FA: dict[str, list[str]] = {
    "patient": ["fa-patient"],
    "encounter": [],  # no encounterId in the context: no query, None
    # the in-progress admission (not the finished one) with its Locations included
    "encounters": ["fa-enc", "fa-ward", "fa-micu"],
    "magnesium": ["fa-mg1", "fa-mg-urine", "fa-mg2", "fa-spec-urine"],
    "creatinine": ["fa-cr1", "fa-cr2"],
    "albumin": ["fa-alb"],
    "egfr": ["fa-egfr"],
    "weight": ["fa-wt"],
    "conditions": ["fa-sepsis"],  # the resolved pneumonia is not active
    "procedures": ["fa-prep", "fa-cvc"],  # Medplum sorts the one without a date first
    "planned-procedures": ["fa-prep"],
    "service-requests": ["fa-sr-angio"],  # the completed one is not active
    "medications": ["fa-vanco", "fa-piptazo"],  # the stopped PPI is not active
    "administrations": ["fa-ma-vanco", "fa-ma-mg"],
}
CASES: dict[str, tuple[str, str | None, dict[str, list[str]]]] = {
    "fa-no-encounter-id": ("fa-patient", None, FA),
    "fa-encounter-id": ("fa-patient", "fa-enc", {**FA, "encounter": ["fa-enc", "fa-ward", "fa-micu"]}),
    "fb-no-encounter-id": ("fb-patient", None, {
        "patient": ["fb-patient"],
        "encounter": [],
        "encounters": ["fb-enc", "fb-ped"],
        "magnesium": ["fb-mg1"],
        "creatinine": ["fb-cr1"],
        "albumin": [],
        "egfr": [],
        "weight": ["fb-wt"],
        "conditions": ["fb-pneumonia"],
        "procedures": [],
        "planned-procedures": [],
        "service-requests": [],
        "medications": ["fb-vanco"],
        "administrations": [],
    }),
}  # fmt: skip


@pytest.fixture(scope="module")
def knowledge() -> Knowledge:
    return load_knowledge(ROOT / "mappings", site=ROOT / "mappings" / "site" / "example.yaml")


@pytest.fixture(scope="module")
def service(knowledge: Knowledge) -> ServiceDef:
    return load_services(ROOT / "mappings" / "services", knowledge)["magnesium-aki-patient-view"]


def resources(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if value.get("resourceType") == "Bundle":
        return [e["resource"] for e in value.get("entry", [])]
    return [value]


def refs(value: Any) -> list[str]:
    return [f"{r['resourceType']}/{r['id']}" for r in resources(value)]


def hook_request(server: FhirServer, ids: dict[str, str], patient: str,
                 encounter: str | None = None) -> dict[str, Any]:  # fmt: skip
    context: dict[str, Any] = {"userId": "Practitioner/dr-1", "patientId": ids[patient].split("/")[1]}
    if encounter:
        context["encounterId"] = ids[encounter].split("/")[1]
    return {
        "hook": "patient-view",
        "hookInstance": "0f3b2c1d-2e4f-4a5b-8c6d-7e8f9a0b1c2d",
        "fhirServer": server.base,
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "user/*.read", "subject": "cds"},
        "context": context,
    }  # fmt: skip


def settings(server: FhirServer, deadline_ms: int = 10000) -> Settings:
    return Settings.from_mapping(
        {"CDS_FHIR_ALLOWLIST": server.base, "CDS_FHIR_DEADLINE_MS": deadline_ms}
    )


def prefetch_like_a_client(
    server: FhirServer, service: ServiceDef, expected: dict[str, list[str]], *, includes: bool = True
) -> dict[str, Any]:
    """The prefetch a CDS client would send holding the expected resources (read one by one);
    ``includes=False``: a client that ignores ``_include`` (matches only)."""
    out: dict[str, Any] = {}
    for key, template in service.prefetch.items():
        found = []
        for ref in expected[key]:
            resp = requests.get(f"{server.base}/{ref}", timeout=10)
            assert resp.status_code == 200, ref
            found.append(resp.json())
        if not includes:
            own = template.split("?")[0].split("/")[0]
            found = [r for r in found if r["resourceType"] == own]
        if "?" not in template:
            out[key] = found[0] if found else None
        else:
            out[key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "total": len(found),
                "entry": [{"fullUrl": f"{server.base}/{r['resourceType']}/{r['id']}", "resource": r}
                          for r in found],
            }  # fmt: skip
    return out


def load_fixture(server: FhirServer) -> dict[str, str]:
    bundle = json.loads(BUNDLE.read_text(encoding="utf-8"))
    return server.ids(bundle, server.load(bundle))


def check_context(snap: m.ClinicalSnapshot, ids: dict[str, str], patient: str) -> None:
    """The context the fixture holds, read from Locations and Specimens given by reference."""
    if patient != "fa-patient":
        assert snap.icu_stays == () and snap.current_encounter_id == ids["fb-enc"].split("/")[1]
        return
    assert snap.current_encounter_id == ids["fa-enc"].split("/")[1]  # not the finished one
    (stay,) = [s for s in snap.icu_stays if s.end is None]
    assert stay.start == datetime(2024, 5, 2, 20, tzinfo=UTC)  # the MICU Location, by reference
    (urine,) = snap.excluded
    assert (urine.resource, urine.reason_code) == (f"Observation/{ids['fa-mg-urine'].split('/')[1]}",
                                                   m.SPECIMEN_NOT_SERUM)  # fmt: skip
    assert sorted(p.source for p in snap.procedures if p.planned) == ["Procedure", "ServiceRequest"]
    assert sorted(x.source for x in snap.medications) == [
        "MedicationAdministration", "MedicationAdministration", "MedicationRequest", "MedicationRequest"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_fetched_data_equals_what_a_prefetch_would_hold(
    fhir_server: FhirServer, service: ServiceDef, knowledge: Knowledge, case: str
) -> None:
    patient, encounter, wanted = CASES[case]
    ids = load_fixture(fhir_server)
    expected = {k: [ids[i] for i in v] for k, v in wanted.items()}
    assert set(expected) == set(service.prefetch), "CASES must cover every template key"
    request = hook_request(fhir_server, ids, patient, encounter)

    fetched = resolve_prefetch(request, service, settings(fhir_server), new_session())

    assert (fetched.missing, fetched.bad_resources) == ([], 0)
    assert fetched.fetched == [k for k in service.prefetch if k != "encounter" or encounter]
    for key, template in service.prefetch.items():
        got = refs(fetched.prefetch[key])
        if "_sort=" in template:
            assert got == expected[key], key
        else:
            assert sorted(got) == sorted(expected[key]), key

    client = prefetch_like_a_client(fhir_server, service, expected)
    for key in service.prefetch:
        by_ref = {f"{r['resourceType']}/{r['id']}": r for r in resources(client[key])}
        assert [by_ref[ref] for ref in refs(fetched.prefetch[key])] == resources(fetched.prefetch[key])
    given = resolve_prefetch({**request, "prefetch": client}, service, settings(fhir_server), new_session())
    assert given == PrefetchOutcome(client, [], 0, [])

    from_fetch = snapshot_from_cds_request({**request, "prefetch": fetched.prefetch}, knowledge, now=NOW)
    from_client = snapshot_from_cds_request({**request, "prefetch": client}, knowledge, now=NOW)
    assert from_fetch == from_client
    assert len(from_fetch.serum_mg) == len([r for r in expected["magnesium"] if "Observation/" in r]) - (
        patient == "fa-patient")  # fmt: skip
    assert not from_fetch.missing
    check_context(from_fetch, ids, patient)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_client_that_ignores_include_loses_nothing(
    fhir_server: FhirServer, service: ServiceDef, knowledge: Knowledge, case: str
) -> None:
    patient, encounter, wanted = CASES[case]
    ids = load_fixture(fhir_server)
    expected = {k: [ids[i] for i in v] for k, v in wanted.items()}
    request = hook_request(fhir_server, ids, patient, encounter)
    full = prefetch_like_a_client(fhir_server, service, expected)
    bare = prefetch_like_a_client(fhir_server, service, expected, includes=False)
    seen: list[str] = []
    session = new_session()
    session.hooks["response"].append(lambda resp, *a, **k: seen.append(resp.url))

    out = resolve_prefetch({**request, "prefetch": bare}, service, settings(fhir_server), session)

    assert (out.missing, out.bad_resources, out.fetched) == ([], 0, [])
    followed = sorted(u.removeprefix(fhir_server.base + "/") for u in seen)
    included = sorted(r for k in ("encounter", "encounters", "magnesium") for r in expected[k]
                      if not r.startswith(("Encounter/", "Observation/")))  # fmt: skip
    assert followed == sorted(set(included))  # each Location and Specimen read once, by id
    snap = snapshot_from_cds_request({**request, "prefetch": out.prefetch}, knowledge, now=NOW)
    assert snap == snapshot_from_cds_request({**request, "prefetch": full}, knowledge, now=NOW)
    check_context(snap, ids, patient)
    blind = snapshot_from_cds_request({**request, "prefetch": bare}, knowledge, now=NOW)
    assert (blind.icu_stays == ()) and (patient != "fa-patient" or not blind.excluded)


def test_server_stopped_mid_test_required_raise_optional_missing(
    fhir_server: FhirServer, service: ServiceDef
) -> None:
    ids = load_fixture(fhir_server)
    request = hook_request(fhir_server, ids, "fa-patient", "fa-enc")
    before = resolve_prefetch(request, service, settings(fhir_server), new_session())
    assert before.missing == []

    fhir_server.stop()

    started = time.monotonic()
    with pytest.raises(PrefetchRequired) as err:
        resolve_prefetch(request, service, settings(fhir_server, 2000), new_session())
    assert err.value.keys == ["patient", "magnesium"]
    assert "connection failed" in err.value.reason

    required = {"patient": before.prefetch["patient"], "magnesium": before.prefetch["magnesium"]}
    degraded = resolve_prefetch(
        {**request, "prefetch": required}, service, settings(fhir_server, 2000), new_session()
    )
    optional = [k for k in service.prefetch if k not in required]
    assert degraded.missing == optional
    assert degraded.fetched == [] and all(degraded.prefetch[k] is None for k in optional)
    assert degraded.prefetch["magnesium"] == before.prefetch["magnesium"]
    assert time.monotonic() - started < 4.5
