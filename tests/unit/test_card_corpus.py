"""Every card of the corpus, in both locales, reads clean (issue 11, acceptance 2).

The corpus: the card gallery's scenarios (every rule and its withheld, no-dose, suspect and
spurious variants), the FHIR fixtures, the five MIMIC-IV demo patients evaluated just after
each of their serum Mg and creatinine results (what the service said at every moment of
their stay), the CDS Hooks request fixtures and examples. ``tests/cardcheck.py`` holds the
checks: no placeholder or fallback words, no dangling punctuation, units as clinicians write
them, no float noise, a summary under 140 characters that the detail does not repeat,
bounded magnesium orders whose dose the label and the text state, a withheld answer that
says so and advises no repletion anywhere, no contradictory directions, in-range values never
called hypomagnesaemia; in Chinese: Chinese punctuation, the SI unit first, and no English
word other than units, abbreviations, drug, study and author names (and the record's own
code displays).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.clinical.fhir_extract import snapshot_from_cds_request, snapshots_from_bundle
from cds_service.render import gallery
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.rules.engine import evaluate
from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge
from tests.cardcheck import knowledge_names, response_problems

ROOT = Path(__file__).resolve().parents[2]
FHIR = ROOT / "tests" / "fixtures" / "fhir"
MIMIC = sorted((FHIR / "mimic-iv-demo").glob("*.json"))
BUNDLES = sorted(p for p in FHIR.glob("*.json") if "cds-" not in p.name and "paged" not in p.name)
REQUESTS = [FHIR / "cds-order-select.json", FHIR / "cds-result-review.json",
            *sorted((ROOT / "examples").glob("*.json"))]  # fmt: skip
LOCALES = ("en", "zh-CN")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9\-]*")


@pytest.fixture(scope="module")
def k() -> Knowledge:
    return load_knowledge(ROOT / "mappings")


@pytest.fixture(scope="module")
def renderer(k: Knowledge) -> CardRenderer:
    return CardRenderer(k, OrderCodes(ROOT / "mappings" / "orders.yaml"))


def record_words(data: Any) -> frozenset[str]:
    """Every Latin word of the record's text (code displays, names): the EHR's own words."""
    return frozenset(_WORD.findall(json.dumps(data, ensure_ascii=False)))


def latest_mg(snap: m.ClinicalSnapshot, now: datetime) -> float | None:
    known = [r for r in snap.serum_mg if r.time <= now]
    return max(known, key=lambda r: r.time).value if known else None


def check(
    k: Knowledge, renderer: CardRenderer, snap: m.ClinicalSnapshot, now: datetime, words: frozenset[str]
) -> Iterator[str]:
    advice = evaluate(k, snap, now)
    names = knowledge_names(k) | words
    for locale in LOCALES:
        cards = renderer.cards(advice, snap, locale, now)
        for p in response_problems(
            cards, locale, k, directions=[a.direction for a in advice],
            latest_mg_dl=latest_mg(snap, now), latin_ok=names,
        ):  # fmt: skip
            yield f"{locale} at {now.isoformat()}: {p}"


def test_the_gallery(k: Knowledge, renderer: CardRenderer) -> None:
    now, scenarios = gallery.load_scenarios(ROOT / "examples" / "gallery.yaml")
    problems, cards = [], 0
    for s in scenarios:
        request = gallery.request_for(k, s, now)
        snap = snapshot_from_cds_request(request, k, now=now)
        cards += len(evaluate(k, snap, now))
        problems += [f"{s.id}: {p}" for p in check(k, renderer, snap, now, frozenset())]
    assert cards >= len(scenarios)  # every scenario shows at least one card
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", MIMIC, ids=lambda p: p.stem)
def test_mimic_patients_at_every_result(k: Knowledge, renderer: CardRenderer, path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    words = record_words(bundle)
    first = snapshots_from_bundle(bundle, k)[0]
    times = sorted({r.time for r in (*first.serum_mg, *first.creatinine)})
    assert len(times) >= 20
    problems, shown = [], 0
    for t in times:
        now = t + timedelta(minutes=1)
        snap = snapshots_from_bundle(bundle, k, now=now)[0]
        shown += len(evaluate(k, snap, now))
        problems += list(check(k, renderer, snap, now, words))
    assert shown > 0  # the stay is not silent: cards were read
    assert not problems, "\n".join(problems[:30])


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.stem)
def test_fhir_fixture_bundles(k: Knowledge, renderer: CardRenderer, path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for snap in snapshots_from_bundle(bundle, k):
        now = snap.newest_time or datetime.fromisoformat("2024-01-01T00:00:00+00:00")
        problems += list(check(k, renderer, snap, now + timedelta(minutes=1), record_words(bundle)))
    assert not problems, "\n".join(problems[:30])


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.stem)
def test_cds_hooks_requests(k: Knowledge, renderer: CardRenderer, path: Path) -> None:
    request = json.loads(path.read_text(encoding="utf-8"))
    first = snapshot_from_cds_request(request, k)
    now = (first.newest_time or datetime.fromisoformat("2024-01-01T00:00:00+00:00")) + timedelta(
        minutes=1
    )
    snap = snapshot_from_cds_request(request, k, now=now)
    problems = list(check(k, renderer, snap, now, record_words(request)))
    assert not problems, "\n".join(problems[:30])
