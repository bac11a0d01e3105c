"""Cards as the clinician reads them, for the suspect-result tests (engine + card renderer)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cds_service.clinical import model as m
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.rules.engine import evaluate
from cds_service.rules.model import Knowledge
from tests.integration.hooks_support import MAPPINGS, check_response
from tests.unit.builders import NOW, D, H, creatinine, egfr, mg, snapshot, weight

Card = dict[str, Any]
ICU = NOW - 2 * D


def cards(
    k: Knowledge, snap: m.ClinicalSnapshot, now: datetime = NOW, locale: str = "en"
) -> list[Card]:
    """The CDS Hooks cards of one evaluation (validated against the response schema)."""
    out = CardRenderer(k, OrderCodes(MAPPINGS / "orders.yaml")).cards(
        evaluate(k, snap, now), snap, locale, now
    )
    check_response({"cards": out})
    return out


def icu_patient(k: Knowledge, **over: Any) -> m.ClinicalSnapshot:
    """Adult ICU patient with eGFR 75 and 70 kg (the gate passes unless a test says otherwise)."""
    kw: dict[str, Any] = {"age": 60, "admitted": ICU, "icu": ICU, "egfr": [egfr(k, 75, NOW - 3 * H)],
                          "weight": [weight(k, 70, NOW - D)], **over}  # fmt: skip
    return snapshot(**kw)


def diluted(
    k: Knowledge, at: datetime = NOW - H, mg_values: tuple[float, float] = (2.4, 0.9),
    cr_values: tuple[float, float] = (2.5, 0.9), before: datetime | None = None,
) -> dict[str, list[m.LabResult]]:  # fmt: skip
    """Mg and creatinine 6 h apart (or from ``before``), the second draw at ``at``."""
    first = before or at - 6 * H
    return {
        "mg": [mg(k, mg_values[0], at=first), mg(k, mg_values[1], at=at)],
        "creatinine": [creatinine(k, cr_values[0], first), creatinine(k, cr_values[1], at)],
    }


def summaries(found: list[Card]) -> list[str]:
    """Every card's summary."""
    return [c["summary"] for c in found]


def read(found: list[Card]) -> str:
    """Everything a clinician reads on the cards: summaries, details and suggestion labels."""
    parts = []
    for c in found:
        parts += [c["summary"], c["detail"], *(s["label"] for s in c.get("suggestions", []))]
    return "\n".join(parts)


def resources(found: list[Card], resource_type: str) -> list[dict[str, Any]]:
    """Every suggested resource of a type, over all cards."""
    return [
        a["resource"]
        for c in found
        for s in c.get("suggestions", [])
        for a in s["actions"]
        if a["resource"]["resourceType"] == resource_type
    ]


def suspect_card(found: list[Card]) -> Card:
    """The one card that names a suspect result in its summary."""
    (card,) = [c for c in found if c["summary"].startswith("Suspect ")]
    return card


def no_suspect(found: list[Card]) -> bool:
    """No card names a suspect or spurious result."""
    text = read(found)
    return "Suspect " not in text and "spurious" not in text


# --- one table of parameter edges, replayed over both channels --------------------------------
# Each case: Mg and creatinine as (value, offset from the draw under test); the evaluation is
# 10 minutes after the draw (after the last result); what the clinician should read then:
# "suspect" (a "Suspect serum Mg" card), "spurious" (the exclusion note) or "none" (neither,
# and ``shown`` appears: the result is used as an ordinary one).
M = 60  # seconds
EDGES: list[tuple[str, list[tuple[float, int]], list[tuple[float, int]], str, str]] = [
    ("fall-40%", [(2.5, -6 * 3600), (1.5, 0)], [(2.0, -6 * 3600), (1.2, 0)], "suspect", ""),
    ("fall-39.9%", [(2.5, -6 * 3600), (1.5025, 0)], [(2.0, -6 * 3600), (1.2, 0)], "none", "1.5025 mg/dL"),
    ("same-draw-5min", [(2.5, -6 * 3600), (1.5, 0)], [(2.0, -6 * 3600), (1.2, 5 * M)], "suspect", ""),
    ("same-draw-5min-1s", [(2.5, -6 * 3600), (1.5, 0)], [(2.0, -6 * 3600), (1.2, 5 * M + 1)], "none", "1.5 mg/dL"),
    ("previous-48h", [(2.5, -48 * 3600), (1.5, 0)], [(2.0, -48 * 3600), (1.2, 0)], "suspect", ""),
    ("previous-48h-1min", [(2.5, -48 * 3600 - M), (1.5, 0)], [(2.0, -48 * 3600 - M), (1.2, 0)], "none", "1.5 mg/dL"),
    ("rise-2.0", [(2.0, -20 * 3600), (4.0, 0)], [], "suspect", ""),
    ("rise-1.99", [(2.0, -20 * 3600), (3.99, 0)], [], "none", "3.99 mg/dL"),
    ("jump-previous-24h", [(2.0, -24 * 3600), (4.2, 0)], [], "suspect", ""),
    ("jump-previous-24h-1min", [(2.0, -24 * 3600 - M), (4.2, 0)], [], "none", "4.2 mg/dL"),
    ("repeat-within-25%", [(2.0, -20 * 3600), (4.5, -2 * 3600), (2.5, 0)], [], "spurious", ""),
    ("repeat-25.5%-confirms", [(2.0, -20 * 3600), (4.5, -2 * 3600), (2.51, 0)], [], "none", "2.51 mg/dL"),
    ("repeat-24h-after", [(2.0, -44 * 3600), (4.5, -24 * 3600), (2.5, 0)], [], "spurious", ""),
    ("repeat-24h-1min-after", [(2.0, -44 * 3600 - M), (4.5, -24 * 3600 - M), (2.6, 0)], [], "none", "2.6 mg/dL"),
]  # fmt: skip


def assert_reads(text: str, expect: str, shown: str) -> None:
    """What the clinician reads for one edge case (``text``: every card's text)."""
    if expect == "suspect":
        assert "Suspect serum Mg" in text, text
    elif expect == "spurious":
        assert "Excluded as spurious: serum Mg 4.5 mg/dL" in text and "Suspect " not in text, text
    else:
        assert "Suspect " not in text and "spurious" not in text, text
        assert shown in text, text
