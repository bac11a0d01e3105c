"""Trigger rules: rules that are not "one measure against thresholds".

The closed set: ``monitoring-gap``, ``mg-trend``, ``data-quality``, ``kdigo``,
``mg-order-unsafe``. Every number they use comes from the rule file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cds_service.clinical import model as m
from cds_service.rules import facts as F
from cds_service.rules.context import MAGNESIUM_SETS, EvalContext, satisfies
from cds_service.rules.durations import parse_duration
from cds_service.rules.measures import used
from cds_service.rules.model import Bounds, Finding, FindingContext, Rule

Run = Callable[[Rule, Any, EvalContext], list[Finding]]


def _as_written(p: dict[str, Any]) -> dict[str, Any]:
    return p


@dataclass(frozen=True)
class TriggerSpec:
    """A registered trigger: parameter check, evaluator, and parameter parser (run at load).

    The loader keeps the parsed parameters in ``Rule.trigger_args``; ``run`` gets them.
    """

    check: Callable[[dict[str, Any], str, F.Checker], None]
    run: Run
    prepare: Callable[[dict[str, Any]], Any] = _as_written


def _need_number(p: dict[str, Any], key: str, where: str) -> None:
    if isinstance(p.get(key), bool) or not isinstance(p.get(key), int | float):
        raise F.FactError(f"{where}.{key}: expected a number")


def _duration(value: object, where: str) -> None:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise F.FactError(f"{where}: {exc}") from None


# --- monitoring-gap -------------------------------------------------------------------------


def _check_gap(p: dict[str, Any], where: str, checker: F.Checker) -> None:
    contexts = p.get("contexts")
    if not isinstance(contexts, list) or not contexts:
        raise F.FactError(f"{where}.contexts: expected a list")
    for i, c in enumerate(contexts):
        w = f"{where}.contexts[{i}]"
        if not isinstance(c, dict) or "id" not in c or "when" not in c:
            raise F.FactError(f"{w}: needs id and when")
        for j, term in enumerate(c["when"]):
            F.check_fact(F.parse_fact(term, f"{w}.when[{j}]"), f"{w}.when[{j}]", checker)
        if "window" in c:
            _duration(c["window"], f"{w}.window")
        elif c.get("since") != "surgery-end":
            raise F.FactError(f"{w}: needs window, or since: surgery-end")


@dataclass(frozen=True, slots=True)
class _GapContext:
    id: str
    when: tuple[F.Term, ...]
    window: timedelta | None  # None: since the end of the surgery


def _prepare_gap(p: dict[str, Any]) -> tuple[_GapContext, ...]:
    return tuple(
        _GapContext(
            c["id"],
            tuple(F.compile_fact(F.parse_fact(term, "when")) for term in c["when"]),
            parse_duration(c["window"]) if "window" in c else None,
        )
        for c in p["contexts"]
    )


def _run_gap(rule: Rule, contexts: tuple[_GapContext, ...], ctx: EvalContext) -> list[Finding]:
    for c in contexts:
        bindings: F.Bindings = {}
        for term in c.when:
            found = term.evaluate(ctx, bindings)
            if found is None:
                break
            bindings.update(found)
        else:
            if c.window is not None:
                since = ctx.now - c.window
            else:
                proc: m.Procedure = bindings["procedure"]
                end = proc.end or proc.start
                assert end is not None
                since = end
            if ctx.results(m.SERUM_MG, since, ctx.now):
                # monitored in this context; another context (e.g. cardiac surgery
                # ended since the last ICU value) may still have a gap
                continue
            context = {**bindings, "monitoring_context": c.id, "since": since}
            context["window"] = c.window if c.window is not None else ctx.now - since
            return [
                Finding(
                    rule.id,
                    rule.direction,
                    rule.indicator,
                    context=FindingContext.of(context),
                    suggestion=rule.suggestion,
                )
            ]
    return []


# --- mg-trend -----------------------------------------------------------------------------


def _check_trend(p: dict[str, Any], where: str, checker: F.Checker) -> None:
    _duration(p.get("window"), f"{where}.window")
    _need_number(p, "min_count", where)
    if not checker.unit_ok("magnesium", str(p.get("unit"))):
        raise F.FactError(f"{where}: threshold without unit (or unknown unit)")
    falling, rising = p.get("falling"), p.get("rising")
    if not isinstance(falling, dict) or not isinstance(rising, dict):
        raise F.FactError(f"{where}: needs falling and rising")
    _need_number(falling, "latest_lt", f"{where}.falling")
    _need_number(falling, "drop_ge", f"{where}.falling")
    _need_number(rising, "latest_gt", f"{where}.rising")
    _need_number(rising, "rise_ge", f"{where}.rising")


@dataclass(frozen=True, slots=True)
class _Trend:
    window: timedelta
    min_count: int
    unit: str
    falling_latest: Bounds
    falling_drop: Bounds
    rising_latest: Bounds
    rising_rise: Bounds


def _prepare_trend(p: dict[str, Any]) -> _Trend:
    unit, fall, rise = p["unit"], p["falling"], p["rising"]
    return _Trend(
        parse_duration(p["window"]),
        int(p["min_count"]),
        unit,
        Bounds(unit, lt=float(fall["latest_lt"])),
        Bounds(unit, ge=float(fall["drop_ge"])),
        Bounds(unit, gt=float(rise["latest_gt"])),
        Bounds(unit, ge=float(rise["rise_ge"])),
    )


def _run_trend(rule: Rule, p: _Trend, ctx: EvalContext) -> list[Finding]:
    in_window = ctx.results(m.SERUM_MG, ctx.now - p.window, ctx.now)
    series = [r for r in in_window if r.comparator is None]
    if len(series) < p.min_count:
        return []
    vals = [ctx.convert(m.SERUM_MG, r.value, p.unit) for r in series]
    latest, earlier = vals[-1], vals[:-1]
    direction = None
    if satisfies(None, p.falling_latest, latest) and satisfies(
        None, p.falling_drop, max(earlier) - latest
    ):
        direction = "low"
    elif satisfies(None, p.rising_latest, latest) and satisfies(
        None, p.rising_rise, latest - min(earlier)
    ):
        direction = "high"
    if direction is None:
        return []
    trend = "falling" if direction == "low" else "rising"
    return [
        Finding(
            rule.id,
            direction,
            rule.indicator,
            values=tuple(used(r) for r in series),
            context=FindingContext(trend=trend, n=len(series), window=p.window),
            suggestion=rule.suggestion,
        )
    ]


# --- data-quality -------------------------------------------------------------------------


def _check_quality(p: dict[str, Any], where: str, checker: F.Checker) -> None:
    reasons = p.get("reasons")
    if not isinstance(reasons, list) or any(r not in m.DATA_QUALITY_REASONS for r in reasons):
        raise F.FactError(f"{where}.reasons: expected a list of {sorted(m.DATA_QUALITY_REASONS)}")


def _run_quality(rule: Rule, p: dict[str, Any], ctx: EvalContext) -> list[Finding]:
    out = []
    for ex in ctx.snapshot.excluded:
        if ex.kind not in (m.SERUM_MG, m.IONIZED_MG) or ex.reason_code not in p["reasons"]:
            continue
        if ex.time is not None and ex.time > ctx.now:
            continue
        context = FindingContext(excluded=ex)
        out.append(Finding(rule.id, rule.direction, rule.indicator, context=context))
    return out


# --- kdigo --------------------------------------------------------------------------------


def _check_kdigo(p: dict[str, Any], where: str, checker: F.Checker) -> None:
    if p:
        raise F.FactError(f"{where}: takes no parameters (see mappings/aki.yaml)")


def _run_kdigo(rule: Rule, p: dict[str, Any], ctx: EvalContext) -> list[Finding]:
    status = ctx.aki
    if status.stage < 1 or status.current is None:
        return []
    indicator = rule.indicator_when_stage.get(status.stage, rule.indicator)
    return [
        Finding(
            rule.id,
            rule.direction,
            indicator,
            values=(used(status.current),),
            context=FindingContext(aki=status),
        )
    ]


# --- mg-order-unsafe ----------------------------------------------------------------------


def _check_unsafe(p: dict[str, Any], where: str, checker: F.Checker) -> None:
    for key in ("critical_when", "ignore_conditions"):
        if not isinstance(p.get(key, []), list):
            raise F.FactError(f"{where}.{key}: expected a list of gate condition ids")


def _run_unsafe(rule: Rule, p: dict[str, Any], ctx: EvalContext) -> list[Finding]:
    drafts = [x for x in ctx.medications_by_set.items_in(MAGNESIUM_SETS) if x.draft]
    if not drafts:
        return []
    ignore = p.get("ignore_conditions", [])
    reasons = tuple(hit.id for hit in ctx.gate if hit.id not in ignore)
    if not reasons:
        return []
    critical = any(g in p.get("critical_when", []) for g in reasons)
    context = FindingContext(reasons=reasons, orders=tuple(drafts))
    return [
        Finding(
            rule.id, rule.direction, "critical" if critical else rule.indicator, context=context
        )
    ]


TRIGGERS: dict[str, TriggerSpec] = {
    "monitoring-gap": TriggerSpec(_check_gap, _run_gap, _prepare_gap),
    "mg-trend": TriggerSpec(_check_trend, _run_trend, _prepare_trend),
    "data-quality": TriggerSpec(_check_quality, _run_quality),
    "kdigo": TriggerSpec(_check_kdigo, _run_kdigo),
    "mg-order-unsafe": TriggerSpec(_check_unsafe, _run_unsafe),
}
