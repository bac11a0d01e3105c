"""Suspect results over CDS Hooks (Flask test client): what the clinician reads on the cards."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.store import migrate
from tests.integration.hooks_support import (
    PATIENT,
    SERVICE,
    ago,
    check_response,
    coding,
    observation,
    positive_control,
    searchset,
)
from tests.unit.suspect_support import EDGES, assert_reads

PV = SERVICE + "patient-view"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'cds.db'}"
    migrate(url)
    app: Flask = create_app(
        {"CDS_DATABASE_URL": url, "CDS_AUTH": "off", "CDS_SECRET": "test-secret"}
    )
    yield app.test_client()


def request(mg: list[tuple[float, float]], creatinine: list[tuple[float, float]],
            medications: list[dict[str, Any]] = ()) -> dict[str, Any]:  # type: ignore[assignment]  # fmt: skip
    """The positive control (adult ICU, eGFR 75, 70 kg) with these (value, hours ago) results."""
    req = positive_control()
    req["prefetch"]["magnesium"] = searchset(
        *(
            observation(f"mg-{i}", "serum-magnesium-mass", v, "mg/dL", h)
            for i, (v, h) in enumerate(mg)
        )
    )
    req["prefetch"]["creatinine"] = searchset(
        *(
            observation(f"cr-{i}", "creatinine", v, "mg/dL", h)
            for i, (v, h) in enumerate(creatinine)
        )
    )
    req["prefetch"]["medications"] = searchset(*medications)
    return req


def cards(client: FlaskClient, body: dict[str, Any], locale: str = "en") -> list[dict[str, Any]]:
    resp = client.post(PV, data=json.dumps(body), content_type="application/json",
                       headers={"Accept-Language": locale})  # fmt: skip
    assert resp.status_code == 200, resp.get_data(as_text=True)
    out: dict[str, Any] = resp.get_json()
    check_response(out)
    found: list[dict[str, Any]] = out["cards"]
    return found


def read(found: list[dict[str, Any]]) -> str:
    return "\n".join([c["summary"] for c in found] + [c["detail"] for c in found]
                     + [s["label"] for c in found for s in c.get("suggestions", [])])  # fmt: skip


def suggested(found: list[dict[str, Any]], resource_type: str) -> list[dict[str, Any]]:
    return [a["resource"] for c in found for s in c.get("suggestions", []) for a in s["actions"]
            if a["resource"]["resourceType"] == resource_type]  # fmt: skip


def magnesium_given(hours_ago: float) -> dict[str, Any]:
    """A completed magnesium sulfate MedicationAdministration."""
    return {
        "resourceType": "MedicationAdministration", "id": "ma-1", "status": "completed",
        "medicationCodeableConcept": {"coding": [coding("magnesium-sulfate")]},
        "subject": {"reference": f"Patient/{PATIENT}"}, "effectiveDateTime": ago(hours_ago),
    }  # fmt: skip


def test_issue_case_over_cds_hooks(client: FlaskClient) -> None:
    """Mg 2.4 -> 0.9 and creatinine 2.5 -> 0.9 in one draw, back to 2.8 / 2.7 two hours later."""
    at_draw = cards(client, request([(2.4, 6), (0.9, 0.2)], [(2.5, 6), (0.9, 0.2)]))
    assert all(c["indicator"] != "critical" for c in at_draw)
    assert "Urgent repletion" not in read(at_draw) and "IV magnesium" not in read(at_draw)
    assert suggested(at_draw, "MedicationRequest") == []
    (card,) = [c for c in at_draw if c["summary"].startswith("Suspect serum Mg 0.9 mg/dL")]
    assert card["summary"].endswith(
        "possible dilution: sample drawn near an infusion. Repeat the sample"
    )
    assert "is 63 % lower than the result before it, 2.4 mg/dL" in card["detail"]
    assert (
        "creatinine 0.9 mg/dL" in card["detail"]
        and "is 64 % lower than 2.5 mg/dL" in card["detail"]
    )
    (repeat,) = suggested(at_draw, "ServiceRequest")
    assert repeat["code"]["coding"][0]["code"] == "19123-9"
    assert [s["label"] for s in card["suggestions"]] == ["Repeat the serum Mg sample"]
    ext = card["extension"]["magnesium-aki"]
    assert ext["rules"] == ["mg-data-quality"] and ext["magnesium"]["value_mg_dl"] == 0.9

    after = cards(
        client, request([(2.4, 8), (0.9, 2.2), (2.8, 0.1)], [(2.5, 8), (0.9, 2.2), (2.7, 0.1)])
    )
    assert "AKI stage" not in read(after) and "Suspect " not in read(after)
    assert sum(c["detail"].count("Excluded as spurious") for c in after) == 1
    note = next(c["detail"] for c in after if "Excluded as spurious" in c["detail"])
    assert "serum Mg 0.9 mg/dL" in note and "creatinine 0.9 mg/dL" in note
    assert "the repeat, 2.8 mg/dL" in note and "the repeat, 2.7 mg/dL" in note


def test_jump_without_magnesium_given_is_suspect(client: FlaskClient) -> None:
    found = cards(client, request([(2.0, 20), (4.6, 0.5)], [(0.9, 2)]))
    (card,) = [c for c in found if c["summary"].startswith("Suspect serum Mg 4.6 mg/dL")]
    assert "possible contamination or spurious result" in card["summary"]
    assert "is 2.6 mg/dL above the result before it, 2.0 mg/dL" in card["detail"]
    assert "above the reference range" not in read(found)


def test_jump_with_magnesium_given_in_between_is_ordinary(client: FlaskClient) -> None:
    found = cards(client, request([(2.0, 20), (4.6, 0.5)], [(0.9, 2)], [magnesium_given(10)]))
    assert "Suspect " not in read(found)
    assert any(
        c["summary"].startswith("Serum Mg 4.6 mg/dL: above the reference range") for c in found
    )


@pytest.mark.parametrize(("locale", "lead"), [
    ("en", "Confirm with a repeat sample; stop magnesium meanwhile"),
    ("zh-CN", "请复查确认，其间停用镁剂"),
])  # fmt: skip
def test_toxic_on_a_suspect_value(client: FlaskClient, locale: str, lead: str) -> None:
    found = cards(client, request([(2.4, 20), (7.5, 0.5)], [(0.9, 2)]), locale)
    (toxic,) = [c for c in found if c["indicator"] == "critical"]
    value = {"en": "7.5 mg/dL", "zh-CN": "3.09 mmol/L"}[locale]  # mmol/L first in Chinese
    assert toxic["summary"].startswith(lead) and value in toxic["summary"]
    assert toxic["source"]["topic"]["code"] == "hypermagnesemia-toxic"  # the lead
    assert suggested(found, "MedicationRequest") == []
    assert len(suggested(found, "ServiceRequest")) == 1  # the repeat, on the data-quality card


@pytest.mark.parametrize(("mg", "creatinine", "expect", "shown"), [c[1:] for c in EDGES],
                         ids=[c[0] for c in EDGES])  # fmt: skip
def test_parameter_edges_over_cds_hooks(
    client: FlaskClient, mg: list[tuple[float, int]], creatinine: list[tuple[float, int]],
    expect: str, shown: str,
) -> None:  # fmt: skip
    """Exact times (to the second) around a draw 10 min before the call."""
    draw = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)

    def obs(rid: str, value_set: str, value: float, offset: int) -> dict[str, Any]:
        o = observation(rid, value_set, value, "mg/dL", 0)
        o["effectiveDateTime"] = (draw + timedelta(seconds=offset)).isoformat()
        return o

    req = positive_control()
    req["prefetch"]["magnesium"] = searchset(
        *(obs(f"mg-{i}", "serum-magnesium-mass", v, t) for i, (v, t) in enumerate(mg))
    )
    renal = creatinine or [(0.9, -3 * 3600)]  # the jump cases: a creatinine of their own
    req["prefetch"]["creatinine"] = searchset(
        *(obs(f"cr-{i}", "creatinine", v, t) for i, (v, t) in enumerate(renal))
    )
    assert_reads(read(cards(client, req)), expect, shown)


def test_suspect_confirmed_by_the_repeat_over_cds_hooks(client: FlaskClient) -> None:
    """A jump to 4.9 (suspect), then 5.1 two hours later: 4.9 is confirmed, ordinary again."""
    found = cards(client, request([(2.2, 6), (4.9, 3), (5.1, 1)], [(0.9, 2)]))
    (toxic,) = [c for c in found if c["indicator"] == "critical"]
    assert toxic["summary"].startswith("Serum Mg 5.1 mg/dL: toxic range. Stop magnesium")
    assert "4.9 mg/dL" in toxic["detail"]  # the confirmed result, listed by the trend
    assert "Suspect " not in read(found) and "spurious" not in read(found)
