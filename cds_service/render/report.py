"""Advice → plain JSON-ready dicts (CLI output; the card renderer builds on the same pieces)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cds_service.clinical import model as m
from cds_service.render.fhir import OrderCodes, lab_order, medication_order
from cds_service.render.text import Rendered, TextRenderer
from cds_service.rules.model import Advice, ValueUsed


def suggestions(
    advice: Advice, rendered: Rendered, patient_id: str, codes: OrderCodes, now: datetime
) -> list[dict[str, Any]]:
    """The suggestions of one advice: label, whether recommended, FHIR resource."""
    out = []
    if advice.medication_suggestion is not None and rendered.medication_label:
        res = medication_order(
            advice.medication_suggestion, patient_id, codes, now, rendered.medication_label
        )
        out.append(
            {
                "label": rendered.medication_label,
                "isRecommended": True,
                "resource": res,
                "rule": advice.medication_suggestion.rule_id,
            }
        )
    if advice.lab_suggestion is not None and rendered.lab_label:
        lab = advice.lab_suggestion
        res = lab_order(lab, patient_id, codes, now, rendered.lab_label)
        out.append(
            {
                "label": rendered.lab_label,
                "isRecommended": advice.medication_suggestion is None,
                "resource": res,
                "rule": lab.rule_id,
            }
        )
    return out


def advice_dict(
    advice: Advice,
    snapshot: m.ClinicalSnapshot,
    renderer: TextRenderer,
    codes: OrderCodes,
    now: datetime,
) -> dict[str, Any]:
    """One advice as the CLI's JSON object."""
    rendered = renderer.render(advice, snapshot.conditions)
    out: dict[str, Any] = {
        "rules": list(advice.rules),
        "lead": advice.lead,
        "direction": advice.direction,
        "indicator": advice.indicator,
        "summary": rendered.summary,
        "detail": rendered.detail,
        "suggestions": suggestions(advice, rendered, snapshot.patient_id, codes, now),
        "withheld": [
            {"rule": w.rule_id, "conditions": list(w.conditions)} for w in advice.withheld
        ],
    }
    if advice.aki_stage is not None:
        out["aki_stage"] = advice.aki_stage
    if advice.magnesium is not None:
        out["magnesium"] = magnesium_json(advice.magnesium)
    return out


def magnesium_json(mg: ValueUsed) -> dict[str, Any]:
    """The Mg value as cards, the CLI and stored advice carry it (no null members)."""
    out: dict[str, Any] = {"value_mg_dl": round(mg.value, 3), "effective": mg.time.isoformat()}
    if mg.loinc:
        out["loinc"] = mg.loinc
    return out
