"""What the rules do with suspect and spurious results (evidence.md §1, delta checks).

The engine removes suspect and spurious results from the snapshot the rules read
(``clinical/delta_checks.py``); this module holds the few places where a rule must still
know about them:

- a latest-value measure has no value while the newest result is suspect, except for the
  rules of ``still_used_by`` (``hypermagnesemia-toxic``), which use the suspect value;
- ``mg-data-quality`` names each suspect newest result (with a repeat-order suggestion)
  and, at the time of the refuting result, the results excluded as spurious;
- a suspect sample still counts as a sample drawn for ``monitoring-gap``.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from cds_service.clinical import model as m
from cds_service.clinical.delta_checks import Resolution
from cds_service.rules.context import EvalContext
from cds_service.rules.facts import Bindings
from cds_service.rules.measures import MeasureResult, used
from cds_service.rules.model import Finding, FindingContext, Measure, Rule

SUSPECT = "suspect"  # data-quality reasons (mg-data-quality.yaml trigger.data-quality.reasons)
SPURIOUS = "spurious"
REASONS = (SUSPECT, SPURIOUS)


def latest_value(
    rule: Rule, measure: Measure, result: MeasureResult | None, ctx: EvalContext
) -> tuple[MeasureResult | None, Bindings]:
    """A latest-value measure's value for a rule, given that the newest result may be suspect.

    While the newest result of the measure's series is suspect, the latest value is unknown:
    no value, except for the rules that still use it (``still_used_by``), which get the
    suspect value and the binding ``suspect_value`` (the ``Suspect``).
    """
    if measure.anchor != "now" or measure.pick != "latest":
        return result, {}
    suspect = ctx.latest_suspect(measure.series)
    if suspect is None:
        return result, {}
    if rule.id not in ctx.knowledge.delta.still_used_by:
        return None, {}
    start = result.window[0] if result is not None else ctx.latest_mg_start
    found = MeasureResult(used(suspect.result), 1, ctx.now, (start, ctx.now))
    return found, {"suspect_value": suspect}


def sampled(ctx: EvalContext, kind: str, since: datetime) -> bool:
    """Whether a suspect result of the kind was drawn in [since, now]."""
    return any(
        s.result.kind == kind and since <= s.result.time <= ctx.now for s in ctx.review.suspect
    )


def findings(rule: Rule, reasons: Collection[str], ctx: EvalContext) -> list[Finding]:
    """``mg-data-quality`` findings about suspect and spurious results (suspect first)."""
    out: list[Finding] = []
    if SUSPECT in reasons:
        orders = ctx.knowledge.delta.repeat_order
        for kind in ctx.knowledge.delta.tests:
            suspect = ctx.latest_suspect(kind)
            if suspect is None:
                continue
            context = FindingContext(suspect=suspect.result, delta=suspect)
            suggestion = {"kind": "lab-order", "code": dict(orders[kind])}
            out.append(
                Finding(
                    rule.id,
                    rule.direction,
                    rule.indicator,
                    values=(used(suspect.result),),
                    context=context,
                    suggestion=suggestion,
                )
            )
    if SPURIOUS in reasons:
        notes = refuted_now(ctx)
        if notes:
            refuting = sorted({id(r.by): r.by for r in notes}.values(), key=_mg_first)
            out.append(
                Finding(
                    rule.id,
                    rule.direction,
                    rule.indicator,
                    values=tuple(used(r) for r in refuting),
                    context=FindingContext(spurious=notes),
                )
            )
    return out


def _mg_first(result: m.LabResult) -> tuple[bool, datetime]:
    return (result.kind != m.SERUM_MG, result.time)


def refuted_now(ctx: EvalContext) -> tuple[Resolution, ...]:
    """Spurious results whose refuting result is still the newest of its test (said once).

    The note belongs to the time of the refuting result: once a newer result of that test
    arrives, it is no longer repeated.
    """
    latest = ctx.review.latest
    return tuple(
        r
        for r in ctx.review.spurious
        if latest.get(r.by.kind) is r.by and r.by.time >= ctx.latest_mg_start
    )
