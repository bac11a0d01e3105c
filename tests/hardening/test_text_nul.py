"""U+0000 (which PostgreSQL cannot store in text) is handled alike on SQLite and PostgreSQL.

Decision (docs/decisions.md §14): the store replaces U+0000 by U+FFFD in every string it
writes, on every database; an HL7 v2 message holding one is answered AE (ERR-2 names the
field) and kept for diagnosis; feedback and the card log store the text with the marker.
"""

from __future__ import annotations

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds_service.store.events_models import Hl7Message
from cds_service.store.models import CardRecord, Feedback
from tests.hardening.support import PATIENT_VIEW, hook_request, oru
from tests.hardening_ids import MRN
from tests.hl7support import msa, segment


def test_hl7_message_with_nul_is_answered_ae_and_kept(app: Flask, client: FlaskClient) -> None:
    body = oru("NUL-1", mrn=MRN + "\x00")
    response = client.post("/hl7v2", data=body, content_type="application/hl7-v2")
    assert response.status_code == 200
    ack = response.get_data(as_text=True)
    assert msa(ack)[1:3] == ["AE", "NUL-1"]
    err = segment(ack, "ERR")
    assert err is not None and err[2] == "PID^1^3" and err[3].startswith("102")
    with Session(app.extensions["cds"].store.engine) as session:
        row = session.scalars(select(Hl7Message).where(Hl7Message.control_id == "NUL-1")).one()
    assert row.status == "AE" and row.raw is not None
    assert "\x00" not in row.raw and f"{MRN}\ufffd" in row.raw  # kept, with the marker


def test_binary_bytes_with_nul_get_an_ack(client: FlaskClient) -> None:
    body = b"MSH|^~\\&|A|B|C|D|20240510093000||ORU^R01|BIN-1|P|2.5\r" + bytes(range(256))
    response = client.post("/hl7v2", data=body, content_type="application/octet-stream")
    assert response.status_code == 200
    assert msa(response.get_data(as_text=True))[1] in ("AE", "AR")


def test_resent_nul_message_gets_the_stored_ack(client: FlaskClient) -> None:
    body = oru("NUL-2", mrn=MRN + "\x00")
    first = client.post("/hl7v2", data=body, content_type="application/hl7-v2")
    again = client.post("/hl7v2", data=body, content_type="application/hl7-v2")
    assert first.get_data() == again.get_data()


def test_feedback_with_nul_is_stored_with_the_marker(app: Flask, client: FlaskClient) -> None:
    item = {
        "card": "0b3c1a8e-5b9f-4c55-9a63-2f6d7e0f1a11",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-01-02T03:04:05Z",
        "overrideReason": {
            "reason": {"code": "not\u0000relevant", "system": "http://example.org/override"},
            "userComment": "patient on\u0000dialysis",
        },
    }
    response = client.post(f"{PATIENT_VIEW}/feedback", json={"feedback": [item]})
    assert response.status_code == 200
    with Session(app.extensions["cds"].store.engine) as session:
        query = select(Feedback).where(Feedback.card_uuid == item["card"])
        row = session.scalars(query).one()
    assert row.override_code == "not\ufffdrelevant"
    assert row.user_comment == "patient on\ufffddialysis"


def test_hook_instance_with_nul_still_logs_the_cards(app: Flask, client: FlaskClient) -> None:
    response = client.post(PATIENT_VIEW, json=hook_request(hookInstance="hook\u0000instance-1"))
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    assert cards, "the positive control gives a card"
    logged = app.extensions["cds"].store.cards_for("hook\ufffdinstance-1")
    assert sorted(r.uuid for r in logged) == sorted(c["uuid"] for c in cards)
    assert all(isinstance(r, CardRecord) for r in logged)
