"""/openapi.json says what the service does (the mismatches schemathesis found, pinned)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from flask.testing import FlaskClient

from tests.hardening.support import PATIENT_VIEW, hook_request

FEEDBACK = f"{PATIENT_VIEW}/feedback"


def document(client: FlaskClient) -> dict[str, Any]:
    doc: dict[str, Any] = client.get("/openapi.json").get_json()
    return doc


def test_the_cds_request_schema_is_the_one_the_service_validates_with(client: FlaskClient) -> None:
    served = document(client)["components"]["schemas"]["CdsRequest"]
    text = resources.files("cds_service.hooks").joinpath("schemas", "cds-request.schema.json")
    schema = json.loads(text.read_text("utf-8"))
    assert served["properties"] == schema["properties"]
    assert served["properties"]["fhirAuthorization"]["type"] == "object"
    assert served["required"] == schema["required"]
    # and the service answers as it says: a string fhirAuthorization is refused
    response = client.post(PATIENT_VIEW, json=hook_request(fhirAuthorization="Bearer x"))
    assert response.status_code == 400


def test_each_service_path_names_its_own_hook(client: FlaskClient) -> None:
    paths = document(client)["paths"]
    schema = paths[PATIENT_VIEW]["post"]["requestBody"]["content"]["application/json"]["schema"]
    narrowed = schema["allOf"][1]["properties"]
    assert narrowed["hook"] == {"const": "patient-view"}
    assert "patientId" in narrowed["context"]["required"]
    assert "/cds-services/{id}" not in paths
    assert "security" not in paths[PATIENT_VIEW]["post"]  # CDS_AUTH=off here: nothing is checked


def test_feedback_needs_at_least_one_item(client: FlaskClient) -> None:
    schema = document(client)["components"]["schemas"]["Feedback"]["properties"]["feedback"]
    assert schema["minItems"] == 1
    assert client.post(FEEDBACK, json={"feedback": []}).status_code == 400


def test_every_status_the_service_sends_is_documented(client: FlaskClient) -> None:
    paths = document(client)["paths"]
    sent = {
        (PATIENT_VIEW, "415"): client.post(PATIENT_VIEW, data=b"x", content_type="text/plain"),
        (FEEDBACK, "415"): client.post(FEEDBACK, data=b"x", content_type="text/plain"),
        (FEEDBACK, "400"): client.post(FEEDBACK, json={"feedback": []}),
        ("/hl7v2", "415"): client.post("/hl7v2", data=b"x", content_type="image/png"),
        ("/hl7v2", "400"): client.post("/hl7v2", data=b"", content_type="application/hl7-v2"),
    }
    for (path, status), response in sent.items():
        assert str(response.status_code) == status, (path, response.status_code)
        assert status in paths[path]["post"]["responses"], (path, status)
    hl7_body = paths["/hl7v2"]["post"]["requestBody"]
    assert hl7_body["required"] is True
    assert all(c["schema"].get("minLength") == 1 for c in hl7_body["content"].values())
