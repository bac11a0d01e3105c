"""Card consolidation (evidence.md §6): one Advice per direction, a lead, one Mg order at most."""

from __future__ import annotations

from cds_service.clinical import model as m
from cds_service.rules.context import EvalContext
from cds_service.rules.measures import used
from cds_service.rules.model import INDICATOR_ORDER, Advice, Finding, Knowledge, Withheld

DIRECTION_ORDER = ("safety", "high", "low", "aki", "prevention", "monitoring")


def _specific(knowledge: Knowledge, rule_id: str) -> bool:
    rule = knowledge.rule(rule_id)
    return bool(rule.population) or bool(rule.trigger and rule.trigger[1].get("contexts"))


def rank(knowledge: Knowledge, f: Finding) -> tuple[int, int, int]:
    """Sort key of a finding: highest indicator, then specific population, then table order."""
    rule = knowledge.rule(f.rule_id)
    return (-INDICATOR_ORDER[f.indicator], 0 if _specific(knowledge, f.rule_id) else 1, rule.order)


def _is_med(f: Finding) -> bool:
    return bool(f.suggestion and f.suggestion.get("kind") == "medication")


def consolidate(knowledge: Knowledge, findings: list[Finding], ctx: EvalContext) -> list[Advice]:
    """Group findings by direction into Advice, choose leads, apply the safety gate."""
    held = ctx._cache["gate"]
    by_direction: dict[str, list[Finding]] = {}
    for f in findings:
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
            withheld = tuple(Withheld(f.rule_id, tuple(held)) for f in meds)
        elif meds and not med_taken:
            med = next((f for f in meds if f.dose is not None), None)
            med_taken = med is not None
        lab = next(
            (f for f in group if f.suggestion and f.suggestion.get("kind") == "lab-order"), None
        )
        if lab is None and withheld and "mg-missing" in held:
            lab = next((f for f in group if _is_med(f)), None)
        magnesium = next(
            (v for f in [lead, *group] for v in f.values if v.kind == m.SERUM_MG), None
        )
        if magnesium is None and latest is not None:
            magnesium = used(latest)
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
                gate_conditions=tuple(held) if meds else (),
                aki_stage=aki_stage,
                magnesium=magnesium,
                missing=tuple(sorted(ctx.snapshot.missing)),
            )
        )
    return advice
