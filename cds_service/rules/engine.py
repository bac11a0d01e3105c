"""The rule engine: ``evaluate(knowledge, snapshot, now) -> list[Advice]``; pure, deterministic."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from cds_service.clinical import model as m
from cds_service.rules import facts as F
from cds_service.rules.consolidate import consolidate
from cds_service.rules.context import EvalContext, satisfies
from cds_service.rules.dose import NoDose, compute_dose
from cds_service.rules.measures import compute, index_event
from cds_service.rules.model import (
    INDICATOR_ORDER,
    Advice,
    Bounds,
    Finding,
    FindingContext,
    GateHit,
    Knowledge,
    Rule,
    Threshold,
)
from cds_service.rules.triggers import TRIGGERS

_OBSTETRIC = F.compile_fact(("obstetric", None))
LOW_HIGH = ("low", "high")
# Why a medication suggestion gave no order (beside rules/dose.py's weight reasons).
NO_RECENT_MG = "no-recent-mg"
AT_TARGET = "at-target"


def evaluate(knowledge: Knowledge, snapshot: m.ClinicalSnapshot, now: datetime) -> list[Advice]:
    """Every piece of advice the rules give for this snapshot at ``now`` (one per direction)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    ctx = EvalContext(snapshot, now, knowledge)
    ctx.gate = gate(ctx)
    obstetric = _OBSTETRIC.evaluate(ctx, {}) is not None
    findings: list[Finding] = []
    for rule in knowledge.rules:
        if rule.id in knowledge.site.disabled_rules or rule.fallback:
            continue
        if obstetric and rule.obstetric_suppress:
            continue
        findings.extend(_apply(rule, ctx, obstetric))
    # evidence.md §4: reference-range only when no rule of the low or high direction fires
    if not any(f.direction in LOW_HIGH for f in findings):
        for rule in knowledge.rules:
            if rule.fallback and rule.id not in knowledge.site.disabled_rules:
                if not (obstetric and rule.obstetric_suppress):
                    findings.extend(_apply(rule, ctx, obstetric))
    findings = [_with_suggestion(f, ctx) for f in findings]
    overrides = knowledge.site.indicator_overrides
    findings = [
        replace(f, indicator=overrides[f.rule_id]) if f.rule_id in overrides else f
        for f in findings
    ]
    return consolidate(knowledge, findings, ctx)


def gate(ctx: EvalContext) -> tuple[GateHit, ...]:
    """The safety-gate conditions that hold, with what made them hold (gate.yaml order)."""
    held = []
    for cond in ctx.knowledge.gate:
        found = cond.term.evaluate(ctx, {})
        if found is not None:
            held.append(GateHit(cond.id, FindingContext.of(found)))
    return tuple(held)


def _past_index_event(rule: Rule, ctx: EvalContext, when: datetime, direction: str) -> bool:
    """Whether an association finding outlived its index event (evidence.md §2).

    It fires only until ``index_event_limit`` after the event, and not once the latest
    serum Mg lies on the other side of the reference range (a low rule is silent once it
    is at or above the upper limit, a high rule once it is below the lower limit).
    """
    limit = ctx.knowledge.index_event_limit
    if limit is not None and ctx.now - when > limit:
        return True
    latest = ctx.latest(m.SERUM_MG, ctx.now - ctx.latest_mg_start)
    if latest is None:
        return False
    low, high = ctx.knowledge.reference_range
    if direction == "low":
        return ctx.meets(latest, Bounds("mg/dL", ge=high))
    if direction == "high":
        return ctx.meets(latest, Bounds("mg/dL", lt=low))
    return False


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
        result = compute(measure, ctx, bindings)
        if result is None:
            return []
        event = index_event(measure, ctx, bindings)
        aki = bindings.get("aki")
        if event is not None and aki is not None and aki.onset is not None and aki.onset > event[1]:
            # a rule about an AKI that followed the event (persistent AKI after surgery):
            # the AKI diagnosis is its latest index event
            event = (f"aki-onset:{aki.onset.isoformat()}", aki.onset)
        # the index event the text names: the admission's encounter, the ICU stay
        if measure.anchor in ("admission", "encounter"):
            bindings.setdefault("encounter", ctx.encounter)
        elif measure.anchor == "icu-start":
            bindings.setdefault("icu", ctx.icu_stay)
        bindings["sample_time"] = result.value.time
        bindings["n"] = result.n
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
                context=FindingContext.of(bindings),
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
        side = t.direction or direction
        if (
            rule.category == "association"
            and event is not None
            and _past_index_event(rule, ctx, event[1], side)
        ):
            return []
        indicator = rule.indicator
        for ind, bounds in rule.indicator_when:
            in_b = ctx.convert(series, value.value, bounds.unit)
            if (
                satisfies(value.comparator, bounds, in_b)
                and INDICATOR_ORDER[ind] > INDICATOR_ORDER[indicator]
            ):
                indicator = ind
        for b in rule.bands:
            if satisfies(
                value.comparator, b.bounds, ctx.convert(series, value.value, b.bounds.unit)
            ):
                bindings["band"] = b
                break
        return [
            Finding(
                rule.id,
                direction,
                indicator,
                values=(value,),
                context=FindingContext.of(bindings),
                threshold=t.bounds,
                band=bindings["band"].bounds.describe() if "band" in bindings else None,
                suggestion=rule.suggestion,
                index_event=event[0] if event else None,
                index_time=event[1] if event else None,
            )
        ]
    return []


def _with_suggestion(f: Finding, ctx: EvalContext) -> Finding:
    s = f.suggestion
    if not s or s.get("kind") != "medication":
        return f
    if "when_latest_mg" in s:
        latest = ctx.latest(m.SERUM_MG, ctx.now - ctx.latest_mg_start)
        bounds = F.parse_bounds(s["when_latest_mg"], "", None, None)
        if latest is None or not ctx.meets(latest, bounds):
            reason = NO_RECENT_MG if latest is None else AT_TARGET
            context = replace(f.context, no_dose_reason=reason, lab=latest)
            return replace(f, suggestion=None, no_dose_reason=reason, context=context)
    got = compute_dose(s, ctx)
    if isinstance(got, NoDose):
        context = replace(
            f.context, no_dose_reason=got.reason, weight=got.weight, window=got.window
        )
        return replace(f, no_dose_reason=got.reason, context=context)
    return replace(f, dose=got)
