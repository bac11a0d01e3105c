"""docs/cards.md, the card gallery (`make cards-doc`): current, and covering every rule.

A clinician reviews what the product says without running it, so the gallery must show a card
of every rule, the withheld, no-dose, gated, suspect and spurious variants, in both languages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cds_service.cli import main
from cds_service.clinical.fhir_extract import snapshot_from_cds_request
from cds_service.render import gallery
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.rules.engine import evaluate
from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "cards.md"
SCENARIOS = ROOT / "examples" / "gallery.yaml"


@pytest.fixture(scope="module")
def k() -> Knowledge:
    return load_knowledge(ROOT / "mappings")  # as `make cards-doc` runs: no site file


@pytest.fixture(scope="module")
def doc(k: Knowledge) -> str:
    return gallery.gallery_markdown(k, CardRenderer(k, OrderCodes(ROOT / "mappings/orders.yaml")), SCENARIOS)


def test_docs_cards_md_is_current(doc: str) -> None:
    assert DOC.exists(), "docs/cards.md is missing: run `make cards-doc`"
    assert DOC.read_text(encoding="utf-8") == doc, (
        "docs/cards.md differs from what the rules and texts say now: run `make cards-doc`"
    )


def test_the_command_prints_the_gallery(
    doc: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CDS_MAPPINGS", raising=False)
    monkeypatch.delenv("CDS_SITE_MAPPINGS", raising=False)
    assert main(["cards"]) == 0
    assert capsys.readouterr().out == doc


def test_every_rule_has_a_card_in_both_languages(k: Knowledge, doc: str) -> None:
    shown = set(re.findall(r"^- rules: ([^;\n]+)", doc, flags=re.M))
    rules = {r.strip() for line in shown for r in line.split(",")}
    assert rules == {r.id for r in k.rules}
    sections = doc.split('<a id="')[1:]
    for section in sections:
        assert "### en" in section and "### zh-CN" in section
        en, zh = section.split("### zh-CN")
        assert en.count("\n#### [") == zh.count("\n#### [")  # the same cards in both


def test_the_variants_a_reviewer_needs_are_shown(k: Knowledge) -> None:
    now, scenarios = gallery.load_scenarios(SCENARIOS)
    renderer = CardRenderer(k, OrderCodes(ROOT / "mappings/orders.yaml"))
    seen: dict[str, str] = {}
    for s in scenarios:
        snap = snapshot_from_cds_request(gallery.request_for(k, s, now), k, now=now)
        for card in renderer.cards(evaluate(k, snap, now), snap, "en", now):
            ext = card["extension"]["magnesium-aki"]
            text = card["summary"] + "\n" + card["detail"]
            if ext.get("withheld"):
                seen.setdefault("withheld", s.id)
            if "No dose computed" in text:
                seen.setdefault("no dose", s.id)
            if "withheld by the safety gate (" in text or "The safety gate holds" in text:
                seen.setdefault("gated", s.id)
            if card["summary"].startswith("Suspect serum Mg"):
                seen.setdefault("suspect", s.id)
            if "Excluded as spurious" in text:
                seen.setdefault("spurious", s.id)
            if "lower part of the reference range" in card["summary"]:
                seen.setdefault("in range", s.id)
            if any(sg["actions"][0]["resource"]["resourceType"] == "MedicationRequest"
                   for sg in card.get("suggestions", [])):  # fmt: skip
                seen.setdefault("order", s.id)
    assert set(seen) == {"withheld", "no dose", "gated", "suspect", "spurious", "in range", "order"}
