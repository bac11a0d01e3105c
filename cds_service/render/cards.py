"""Advice → CDS Hooks cards (design.md "Cards"): text, source, suggestions, extension."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from cds_service.clinical import model as m
from cds_service.render.fhir import OrderCodes
from cds_service.render.report import magnesium_json, suggestions
from cds_service.render.text import TextRenderer
from cds_service.rules.model import Advice, Citation, Knowledge, Rule

TOPIC_SYSTEM = "urn:magnesium-aki-cds:rule"
OVERRIDE_SYSTEM = "urn:magnesium-aki-cds:override-reason"
EXTENSION = "magnesium-aki"
OVERRIDABLE = frozenset({"warning", "critical"})


def prune(value: Any) -> Any:
    """Drop null and empty members (objects and arrays) recursively."""
    if isinstance(value, dict):
        out = {k: prune(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if not _empty(v)}
    if isinstance(value, list):
        return [v for v in (prune(v) for v in value) if not _empty(v)]
    return value


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _absolute(url: str | None) -> str | None:
    return url if url and url.startswith(("https://", "http://")) else None


def _short(c: Citation) -> str:
    first = c.authors.split(",")[0].strip() if c.authors else c.ref
    year = f" {c.year}" if c.year else ""
    where = c.journal or c.title
    return f"{first}{year}: {where}" if where else f"{first}{year}"


class CardRenderer:
    """Renders a list of Advice as cards for one request (locale, patient, time)."""

    def __init__(self, knowledge: Knowledge, codes: OrderCodes) -> None:
        self.k = knowledge
        self.codes = codes

    def cards(
        self, advice: Iterable[Advice], snapshot: m.ClinicalSnapshot, locale: str, now: datetime
    ) -> list[dict[str, Any]]:
        """One card per advice, in the engine's order."""
        text = TextRenderer(self.k, locale)  # per call: the renderer keeps per-render state
        return [self.card(a, snapshot, text, now) for a in advice]

    def card(
        self, advice: Advice, snapshot: m.ClinicalSnapshot, text: TextRenderer, now: datetime
    ) -> dict[str, Any]:
        """One card, with no null or empty members."""
        rendered = text.render(advice, snapshot.conditions)
        lead = self.k.rule(advice.lead)
        card: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "summary": rendered.summary,
            "indicator": advice.indicator,
            "detail": rendered.detail,
            "source": self.source(lead, text),
        }
        found = suggestions(advice, rendered, snapshot.patient_id, self.codes, now)
        if found:
            card["suggestions"] = [
                {
                    "uuid": str(uuid.uuid4()),
                    "label": s["label"],
                    "isRecommended": s["isRecommended"],
                    "actions": [
                        {"type": "create", "description": s["label"], "resource": s["resource"]}
                    ],
                }
                for s in found
            ]
            card["selectionBehavior"] = "at-most-one"
        if advice.indicator in OVERRIDABLE:
            card["overrideReasons"] = self.override_reasons(text.locale)
        card["links"] = self.links(advice)
        card["extension"] = {EXTENSION: self.extension(advice)}
        pruned: dict[str, Any] = prune(card)
        return pruned

    def source(self, rule: Rule, text: TextRenderer | None = None) -> dict[str, Any]:
        """The lead rule's study: label (design in the card's locale), DOI link, ``topic``."""
        ev = rule.evidence
        design = text.design(rule) if text is not None else ev.design
        study = text.study(rule) if text is not None else ev.study
        url = next((_absolute(c.link) for c in rule.citations if _absolute(c.link)), None)
        return {
            "label": f"{study} ({design})" if design else study,
            "url": url,
            "topic": {"system": TOPIC_SYSTEM, "code": rule.id, "display": rule.title},
        }

    def links(self, advice: Advice) -> list[dict[str, Any]]:
        """The evidence of every rule behind the card: absolute DOI links, once each."""
        out: dict[str, dict[str, Any]] = {}
        for rule_id in advice.rules:
            for c in self.k.rule(rule_id).citations:
                url = _absolute(c.link)
                if url and url not in out:
                    out[url] = {"label": _short(c), "url": url, "type": "absolute"}
        return list(out.values())

    def override_reasons(self, locale: str) -> list[dict[str, str]]:
        """The override reasons of ``text/<locale>.yaml`` as codings with a display."""
        reasons = self.k.texts[locale]["common"]["override_reasons"]
        return [{"system": OVERRIDE_SYSTEM, "code": k, "display": v} for k, v in reasons.items()]

    def extension(self, advice: Advice) -> dict[str, Any]:
        """``card.extension["magnesium-aki"]``: rules, versions, magnesium value, AKI stage."""
        ext: dict[str, Any] = {
            "rules": list(advice.rules),
            "rule_versions": {r: self.k.rule(r).version for r in advice.rules},
            "mappings_version": self.k.version,
        }
        if advice.magnesium is not None:
            ext["magnesium"] = magnesium_json(advice.magnesium)
        if advice.aki_stage is not None:
            ext["aki_stage"] = advice.aki_stage
        if advice.withheld:
            ext["withheld"] = list(advice.gate_conditions)
        return ext
