"""Card rendering (render/cards.py) from a real evaluation of the positive-control request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from cds_service.clinical.fhir_extract import snapshot_from_cds_request
from cds_service.render.cards import CardRenderer, prune
from cds_service.render.fhir import OrderCodes, lab_order
from cds_service.rules.engine import evaluate
from cds_service.rules.model import Finding, Knowledge
from tests.integration.hooks_support import MAPPINGS, check_response, positive_control


@pytest.fixture(scope="module")
def cards(knowledge: Knowledge) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    snap = snapshot_from_cds_request(positive_control(), knowledge, now=now)
    renderer = CardRenderer(knowledge, OrderCodes(MAPPINGS / "orders.yaml"))
    out = renderer.cards(evaluate(knowledge, snap, now), snap, "en", now)
    check_response({"cards": out})
    return out


def test_detail_is_markdown(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        assert "**" in card["detail"] or "### " in card["detail"]
        assert "<" not in card["detail"].replace("<1", "").replace("< ", "")  # no raw HTML


def test_source_is_the_study_not_a_drill_down(cards: list[dict[str, Any]], knowledge: Knowledge) -> None:
    for card in cards:
        rule = knowledge.rule(card["source"]["topic"]["code"])
        assert card["source"]["url"] in {c.link for c in rule.citations}
        assert card["source"]["topic"]["display"] == rule.title


def test_at_most_one_recommended_suggestion(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        recommended = [s for s in card.get("suggestions", []) if s.get("isRecommended")]
        assert len(recommended) <= 1
        if "suggestions" in card:
            assert card["selectionBehavior"] == "at-most-one"


def test_one_action_per_suggestion(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        for s in card.get("suggestions", []):
            assert len(s["actions"]) == 1 and s["actions"][0]["type"] == "create"
            assert s["actions"][0]["description"] == s["label"]


def test_absolute_links_have_no_app_context(cards: list[dict[str, Any]]) -> None:
    links = [link for card in cards for link in card["links"]]
    assert links and all(link["type"] == "absolute" and "appContext" not in link for link in links)


def test_override_reasons_only_on_warning_and_critical(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        assert ("overrideReasons" in card) is (card["indicator"] in ("warning", "critical"))


def test_prune_drops_null_and_empty_members() -> None:
    assert prune({"a": None, "b": [], "c": {}, "d": "", "e": [None, {"f": None}], "g": False, "h": 0}) == {
        "g": False, "h": 0}  # fmt: skip


def test_magnesium_extension_names_loinc_only_for_loinc_codes() -> None:
    """A result known only by a site-mapped local code (MIMIC item 50960) has no "loinc"."""
    from datetime import UTC, datetime

    from cds_service.render.report import magnesium_json
    from cds_service.rules.model import ValueUsed

    at = datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    local = ValueUsed("serum-mg", 1.4, "mg/dL", at, 1.4, "mg/dL", code="50960", loinc=None)
    assert magnesium_json(local) == {"value_mg_dl": 1.4, "effective": "2026-01-02T03:04:00+00:00"}
    coded = ValueUsed("serum-mg", 2.163, "mg/dL", at, 0.89, "mmol/L", code="2601-3", loinc="2601-3")
    assert magnesium_json(coded)["loinc"] == "2601-3"


def test_suggested_resources_are_their_own_r4b_dump(cards: list[dict[str, Any]]) -> None:
    """The JSON a card carries is exactly what the R4B model validates and writes back."""
    resources = [
        action["resource"]
        for card in cards
        for suggestion in card.get("suggestions", [])
        for action in suggestion["actions"]
        if "resource" in action
    ]
    assert {r["resourceType"] for r in resources} == {"MedicationRequest"}
    codes = OrderCodes(MAPPINGS / "orders.yaml")
    recheck = Finding("mg-data-quality", "monitor", "info")
    plus_eight = datetime(2026, 3, 1, 8, 30, tzinfo=timezone(timedelta(hours=8)))
    resources.append(lab_order(recheck, "p1", codes, plus_eight, "Recheck serum Mg"))
    resources.append(lab_order(recheck, "p1", codes, datetime.now(UTC), "Recheck serum Mg"))
    assert resources[-2]["authoredOn"] == "2026-03-01T08:30:00+08:00"
    assert resources[-1]["authoredOn"].endswith("Z")
    for resource in resources:
        model = get_fhir_model_class(resource["resourceType"])
        assert model.model_validate(resource).model_dump(mode="json", exclude_none=True) == resource
