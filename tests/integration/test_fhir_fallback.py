"""FHIR fallback against a real FHIR server (Medplum in memory): with no prefetch, the service's
own queries give exactly what a client's prefetch of the same resources would hold; with the
server gone, required keys raise PrefetchRequired and optional ones are listed as missing."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

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
# the template sorts by date). Written from the fixture, not from the server's answers.
EXPECTED: dict[str, dict[str, list[str]]] = {
    "fa-patient": {
        "patient": ["fa-patient"],
        "encounter": ["fa-enc"],
        "magnesium": ["fa-mg1", "fa-mg2"],
        "creatinine": ["fa-cr1", "fa-cr2"],
        "albumin": ["fa-alb"],
        "egfr": ["fa-egfr"],
        "weight": ["fa-wt"],
        "conditions": ["fa-sepsis"],  # the resolved pneumonia is not active
        "procedures": ["fa-cvc"],
        "medications": ["fa-vanco", "fa-piptazo"],  # the stopped PPI is not active
    },
    "fb-patient": {
        "patient": ["fb-patient"],
        "encounter": [],  # no encounterId in the context: no query, None
        "magnesium": ["fb-mg1"],
        "creatinine": ["fb-cr1"],
        "albumin": [],
        "egfr": [],
        "weight": ["fb-wt"],
        "conditions": ["fb-pneumonia"],
        "procedures": [],
        "medications": ["fb-vanco"],
    },
}
ENCOUNTER = {"fa-patient": "fa-enc", "fb-patient": None}


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


def hook_request(server: FhirServer, ids: dict[str, str], patient: str) -> dict[str, Any]:
    context: dict[str, Any] = {"userId": "Practitioner/dr-1", "patientId": ids[patient].split("/")[1]}
    encounter = ENCOUNTER[patient]
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
    server: FhirServer, service: ServiceDef, expected: dict[str, list[str]]
) -> dict[str, Any]:
    """The prefetch a CDS client would send holding the expected resources (read one by one)."""
    out: dict[str, Any] = {}
    for key, template in service.prefetch.items():
        found = []
        for ref in expected[key]:
            resp = requests.get(f"{server.base}/{ref}", timeout=10)
            assert resp.status_code == 200, ref
            found.append(resp.json())
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


@pytest.mark.parametrize("patient", sorted(EXPECTED))
def test_fetched_data_equals_what_a_prefetch_would_hold(
    fhir_server: FhirServer, service: ServiceDef, knowledge: Knowledge, patient: str
) -> None:
    ids = load_fixture(fhir_server)
    expected = {k: [ids[i] for i in v] for k, v in EXPECTED[patient].items()}
    assert set(expected) == set(service.prefetch), "EXPECTED must cover every template key"
    request = hook_request(fhir_server, ids, patient)

    fetched = resolve_prefetch(request, service, settings(fhir_server), new_session())

    assert (fetched.missing, fetched.bad_resources) == ([], 0)
    assert fetched.fetched == [k for k in service.prefetch if k != "encounter" or ENCOUNTER[patient]]
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
    assert len(from_fetch.serum_mg) == len(expected["magnesium"]) > 0
    assert not from_fetch.missing and not from_fetch.excluded


def test_server_stopped_mid_test_required_raise_optional_missing(
    fhir_server: FhirServer, service: ServiceDef
) -> None:
    ids = load_fixture(fhir_server)
    request = hook_request(fhir_server, ids, "fa-patient")
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
