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
