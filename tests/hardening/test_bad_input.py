"""Hostile JSON and bodies get a 4xx OperationOutcome (or lose only the bad resource), never 500.

On SQLite and PostgreSQL. The chunked-body cases need a server that frames chunked bodies:
tests/hardening/test_serving.py sends them to ``cds-service serve``.
"""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from tests.hardening.support import PATIENT_VIEW, hook_request
from tests.integration.hooks_support import observation, searchset

DEPTHS = [900, 1_000, 5_000, 100_000]


def outcome_status(response: object) -> tuple[int, str]:
    """(status, issue code) of an OperationOutcome response."""
    body = response.get_json()  # type: ignore[attr-defined]
    assert body["resourceType"] == "OperationOutcome"
    return response.status_code, body["issue"][0]["code"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("path", [PATIENT_VIEW, f"{PATIENT_VIEW}/feedback", "/fhir/notifications"])
def test_deeply_nested_json_is_400(client: FlaskClient, path: str, depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    response = client.post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert outcome_status(response)[0] == 400


@pytest.mark.parametrize("levels", [200, 320])
def test_deep_nesting_inside_a_valid_request_is_not_500(client: FlaskClient, levels: int) -> None:
    # Bundles nested in Bundles (3 JSON levels each) as a prefetch value and in the context
    nested = '{"resourceType": "Bundle", "type": "collection", "entry": [{"resource": ' * levels
    nested += '"leaf"' + "}]}" * levels
    text = json.dumps(hook_request(hookInstance="A", extension="B"))
    text = text.replace('"A"', '"deep-1"').replace('"B"', nested)
    request = json.loads(text) if levels < 250 else None  # shallow enough for the test's own json
    if request is not None:
        assert request["extension"]["resourceType"] == "Bundle"
    text = text.replace('"conditions": {', f'"conditions": {nested}, "x": {{', 1)
    response = client.post(PATIENT_VIEW, data=text.encode(), content_type="application/json")
    assert response.status_code in (200, 400), response.get_data(as_text=True)[:300]


def _with_bad_mg(value_literal: str) -> bytes:
    request = hook_request()
    good = observation("mg-good", "serum-magnesium-mass", 1.5, "mg/dL", 2)
    bad = observation("mg-bad", "serum-magnesium-mass", 0.0, "mg/dL", 1)
    request["prefetch"]["magnesium"] = searchset(bad, good)
    text = json.dumps(request)
    marker = '"value": 0.0'
    assert text.count(marker) == 1
    return text.replace(marker, f'"value": {value_literal}').encode()


@pytest.mark.parametrize(
    "literal",
    ["9" * 400, "9" * 400 + ".5", "1e400", "-" + "9" * 400, "9" * 4_400, "NaN", "Infinity"],
    ids=["400-digit-int", "400-digit-decimal", "1e400", "negative", "4400-digit-int", "NaN", "Inf"],
)
def test_one_unreadable_number_skips_that_resource_only(client: FlaskClient, literal: str) -> None:
    response = client.post(PATIENT_VIEW, data=_with_bad_mg(literal), content_type="application/json")
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    cards = response.get_json()["cards"]
    used = [c["extension"]["magnesium-aki"].get("magnesium", {}) for c in cards]
    assert cards and all(m.get("value_mg_dl") in (None, 1.5) for m in used)
    assert any(m.get("value_mg_dl") == 1.5 for m in used)  # the good result still counts


def test_huge_integer_outside_resources_is_400(client: FlaskClient) -> None:
    text = json.dumps(hook_request(context="X")).replace('"X"', "9" * 5_000)
    response = client.post(PATIENT_VIEW, data=text.encode(), content_type="application/json")
    assert outcome_status(response) == (400, "invalid")


def test_declared_body_over_the_limit_is_413(client: FlaskClient) -> None:
    limit = client.application.extensions["cds"].settings.max_body_bytes
    body = b"{" + b" " * limit + b"}"
    for path, kind in ((PATIENT_VIEW, "application/json"), ("/hl7v2", "application/hl7-v2"),
                       (f"{PATIENT_VIEW}/feedback", "application/json")):  # fmt: skip
        assert outcome_status(client.post(path, data=body, content_type=kind))[0] == 413


def test_empty_hl7_body_is_400(client: FlaskClient) -> None:
    response = client.post("/hl7v2", data=b"", content_type="application/hl7-v2")
    assert outcome_status(response) == (400, "invalid")


def test_empty_feedback_list_is_400(client: FlaskClient) -> None:
    response = client.post(f"{PATIENT_VIEW}/feedback", json={"feedback": []})
    assert outcome_status(response) == (400, "invalid")


def test_string_fhir_authorization_is_400(client: FlaskClient) -> None:
    response = client.post(PATIENT_VIEW, json=hook_request(fhirAuthorization="Bearer abc"))
    assert outcome_status(response) == (400, "invalid")
