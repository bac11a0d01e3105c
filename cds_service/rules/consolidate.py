"""Card consolidation (evidence.md §6): one Advice per direction, a lead, one Mg order at most.

Within one response the cards never contradict each other: with the latest serum Mg at or
above the upper reference limit no low-direction card is given, below the lower limit no
high-direction card.
"""

from __future__ import annotations

from cds_service.clinical import model as m
from cds_service.rules.context import EvalContext
from cds_service.rules.measures import used
from cds_service.rules.model import (
    INDICATOR_ORDER,
    Advice,
    Bounds,
    Finding,
    Knowledge,
    ValueUsed,
    Withheld,
)

DIRECTION_ORDER = ("safety", "high", "low", "aki", "prevention", "monitoring")
MG_MISSING = "mg-missing"  # the gate condition whose card suggests measuring Mg (gate.yaml)


def _specific(knowledge: Knowledge, rule_id: str) -> bool:
    rule = knowledge.rule(rule_id)
    return bool(rule.population) or bool(rule.trigger and rule.trigger[1].get("contexts"))


def rank(knowledge: Knowledge, f: Finding) -> tuple[int, int, int]:
    """Sort key of a finding: highest indicator, then specific population, then table order."""
    rule = knowledge.rule(f.rule_id)
    return (-INDICATOR_ORDER[f.indicator], 0 if _specific(knowledge, f.rule_id) else 1, rule.order)


def _is_med(f: Finding) -> bool:
    return bool(f.suggestion and f.suggestion.get("kind") == "medication")


def _contradicted(findings: list[Finding], ctx: EvalContext) -> set[str]:
    """Directions the latest serum Mg contradicts (evidence.md §6).

    A suspect latest result counts here (and only here): until its repeat, no card
    advises treating a low Mg beside a possibly toxic one, or the reverse.
    """
    latest = ctx.latest(m.SERUM_MG, ctx.now - ctx.latest_mg_start)
    suspect = ctx.latest_suspect(m.SERUM_MG)
    if suspect is not None and (latest is None or suspect.result.time > latest.time):
        latest = suspect.result
    if latest is None:
        return set()
    low, high = ctx.knowledge.reference_range
    out = set()
    if ctx.meets(latest, Bounds("mg/dL", ge=high)):
        out.add("low")
    if ctx.meets(latest, Bounds("mg/dL", lt=low)):
        out.add("high")
    return out


def _magnesium(lead: Finding, group: list[Finding], latest: m.LabResult | None) -> ValueUsed | None:
    """The Mg value a card names: the lead's own (serum or ionized; its latest, for a trend),
    else a serum Mg another finding of the card used, else the latest serum Mg."""
    own = [v for v in lead.values if v.kind in (m.SERUM_MG, m.IONIZED_MG)]
    if own:
        return max(own, key=lambda v: v.time)
    for f in group:
        serum = [v for v in f.values if v.kind == m.SERUM_MG]
        if serum:
            return max(serum, key=lambda v: v.time)
    return used(latest) if latest is not None else None


def consolidate(knowledge: Knowledge, findings: list[Finding], ctx: EvalContext) -> list[Advice]:
    """Group findings by direction into Advice, choose leads, apply the safety gate."""
    held = tuple(hit.id for hit in ctx.gate)
    contradicted = _contradicted(findings, ctx)
    by_direction: dict[str, list[Finding]] = {}
    for f in findings:
        if f.direction not in contradicted:
            by_direction.setdefault(f.direction, []).append(f)
    advice: list[Advice] = []
    med_taken = False
    aki_stage = ctx.aki.stage if ctx.snapshot.creatinine or ctx.aki.coded else None
    latest = ctx.latest(m.SERUM_MG, ctx.now - ctx.latest_mg_start)
    groups = sorted(
        by_direction.items(),
        key=lambda kv: (min(rank(knowledge, f) for f in kv[1])[0], DIRECTION_ORDER.index(kv[0])),
    )
    for direction, group in groups:
        group.sort(key=lambda f: rank(knowledge, f))
        lead = group[0]
        indicator = max((f.indicator for f in group), key=INDICATOR_ORDER.__getitem__)
        meds = [f for f in group if _is_med(f)]
        withheld: tuple[Withheld, ...] = ()
        med: Finding | None = None
        if meds and held:
            withheld = tuple(Withheld(f.rule_id, held) for f in meds)
        elif meds and not med_taken:
            med = next((f for f in meds if f.dose is not None), None)
            med_taken = med is not None
        lab = next(
            (f for f in group if f.suggestion and f.suggestion.get("kind") == "lab-order"), None
        )
        if lab is None and withheld and MG_MISSING in held:
            lab = meds[0]
        advice.append(
            Advice(
                direction=direction,
                indicator=indicator,
                lead=lead.rule_id,
                rules=tuple(dict.fromkeys(f.rule_id for f in group)),
                findings=tuple(group),
                medication_suggestion=med,
                lab_suggestion=lab,
                withheld=withheld,
                gate_conditions=held if withheld else (),
                gate=ctx.gate,
                aki_stage=aki_stage,
                magnesium=_magnesium(lead, group, latest),
                missing=tuple(sorted(ctx.snapshot.missing)),
            )
        )
    return advice
