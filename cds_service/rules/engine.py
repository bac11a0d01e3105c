"""The rule engine: ``evaluate(knowledge, snapshot, now) -> list[Advice]``; pure, deterministic."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.delta_checks import review_results
from cds_service.rules import facts as F
from cds_service.rules import suspect
from cds_service.rules.consolidate import consolidate
from cds_service.rules.context import EvalContext, satisfies
from cds_service.rules.dose import compute_dose
from cds_service.rules.measures import compute, index_event
from cds_service.rules.model import INDICATOR_ORDER, Advice, Finding, Knowledge, Rule, Threshold
from cds_service.rules.triggers import TRIGGERS

_OBSTETRIC = F.compile_fact(("obstetric", None))


def evaluate(knowledge: Knowledge, snapshot: m.ClinicalSnapshot, now: datetime) -> list[Advice]:
    """Every piece of advice the rules give for this snapshot at ``now`` (one per direction).

    The serum Mg and creatinine known at ``now`` are reviewed first (delta checks); the rules
    read the snapshot without suspect and spurious results (``rules/suspect.py``).
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    review = review_results(snapshot, now, knowledge.delta, knowledge.valuesets)
    ctx = EvalContext(review.clean(snapshot), now, knowledge, review=review)
    ctx._cache["gate"] = gate(ctx)
    obstetric = _OBSTETRIC.evaluate(ctx, {}) is not None
    findings: list[Finding] = []
    for rule in knowledge.rules:
        if rule.id in knowledge.site.disabled_rules or rule.fallback:
            continue
        if obstetric and rule.obstetric_suppress:
            continue
        findings.extend(_apply(rule, ctx, obstetric))
    if not any(knowledge.rule(f.rule_id).category == "association" for f in findings):
        for rule in knowledge.rules:
            if rule.fallback and rule.id not in knowledge.site.disabled_rules:
                if not (obstetric and rule.obstetric_suppress):
                    findings.extend(_apply(rule, ctx, obstetric))
    findings = [_with_suggestion(knowledge.rule(f.rule_id), f, ctx) for f in findings]
    overrides = knowledge.site.indicator_overrides
    findings = [
        replace(f, indicator=overrides[f.rule_id]) if f.rule_id in overrides else f
        for f in findings
    ]
    return consolidate(knowledge, findings, ctx)


def gate(ctx: EvalContext) -> dict[str, F.Bindings]:
    """The safety-gate conditions that hold, with what made them hold (gate.yaml order)."""
    held: dict[str, F.Bindings] = {}
    for cond in ctx.knowledge.gate:
        found = cond.term.evaluate(ctx, {})
        if found is not None:
            held[cond.id] = found
    return held


def _apply(rule: Rule, ctx: EvalContext, obstetric: bool) -> list[Finding]:
    if rule.trigger is not None:
        return TRIGGERS[rule.trigger[0]].run(rule, rule.trigger_args, ctx)
    bindings: F.Bindings = {}
    ages = []
    for term in rule.terms:
        if term.fact[0] == "age":
            ages.append(term)
            continue
        found = term.evaluate(ctx, bindings)
        if found is None:
            return []
        bindings.update(found)
    result = None
    event: tuple[str, datetime] | None = None
    if rule.measure is not None:
        measure = ctx.knowledge.measures[rule.measure]
        result, on_suspect = suspect.latest_value(
            rule, measure, compute(measure, ctx, bindings), ctx
        )
        if result is None:
            return []
        bindings.update(on_suspect)
        event = index_event(measure, ctx, bindings)
        bindings["sample_time"] = result.value.time
        bindings["measure_n"] = result.n
    for term in ages:
        found = term.evaluate(ctx, bindings)
        if found is None:
            return []
        bindings.update(found)
    if result is None:
        return [
            Finding(
                rule.id,
                rule.direction,
                rule.indicator,
                context=bindings,
                suggestion=rule.suggestion,
            )
        ]
    thresholds: tuple[Threshold, ...] = rule.thresholds
    if obstetric and rule.obstetric_thresholds:
        thresholds = rule.obstetric_thresholds
        bindings["obstetric"] = True
    value = result.value
    series = ctx.knowledge.measures[rule.measure].series  # type: ignore[index]
    for t in thresholds:
        in_unit = ctx.convert(series, value.value, t.bounds.unit)
        if not satisfies(value.comparator, t.bounds, in_unit):
            continue
        direction = t.direction if rule.direction == "by-threshold" else rule.direction
        indicator = rule.indicator
        for ind, bounds in rule.indicator_when:
            in_b = ctx.convert(series, value.value, bounds.unit)
            if (
                satisfies(value.comparator, bounds, in_b)
                and INDICATOR_ORDER[ind] > INDICATOR_ORDER[indicator]
            ):
                indicator = ind
        band = None
        for b in rule.bands:
            if satisfies(
                value.comparator, b.bounds, ctx.convert(series, value.value, b.bounds.unit)
            ):
                band = b.label
                bindings["band_effect"] = b.effect
                break
        return [
            Finding(
                rule.id,
                direction,
                indicator,
                values=(value,),
                context=bindings,
                threshold=t.bounds,
                band=band,
                suggestion=rule.suggestion,
                index_event=event[0] if event else None,
                index_time=event[1] if event else None,
            )
        ]
    return []


def _with_suggestion(rule: Rule, f: Finding, ctx: EvalContext) -> Finding:
    s = f.suggestion
    if not s or s.get("kind") != "medication":
        return f
    if "when_latest_mg" in s:
        latest = ctx.latest(m.SERUM_MG, ctx.now - ctx.latest_mg_start)
        bounds = F.parse_bounds(s["when_latest_mg"], "", None, None)
        if latest is None or not ctx.meets(latest, bounds):
            return replace(f, suggestion=None)
    dose, reason, info = compute_dose(s, ctx)
    context: dict[str, Any] = {**f.context, **{f"dose_{k}": v for k, v in info.items()}}
    return replace(f, dose=dose, no_dose_reason=reason, context=context)
