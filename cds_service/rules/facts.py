"""The closed fact vocabulary of rule populations, gate conditions and trigger contexts.

Each fact has a validator (used by the loader: unknown facts or bad parameters
stop start-up) and an evaluator (pure: it reads the ``EvalContext``). An
evaluator returns ``None`` when the fact does not hold, else a dict of
bindings (the ICU stay, procedure, drugs... that made it hold) which measures
and card text use.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from cds_service.clinical import model as m
from cds_service.rules.context import MAGNESIUM_SETS, EvalContext, satisfies
from cds_service.rules.durations import parse_duration
from cds_service.rules.model import Bounds, Fact

Bindings = dict[str, Any]
LAB_KINDS = (m.SERUM_MG, m.IONIZED_MG, m.CREATININE, m.ALBUMIN, m.EGFR, m.WEIGHT)
ENCOUNTER_CLASSES = ("inpatient", "emergency", "ambulatory", "other")
PROCEDURE_STATES = ("performed", "in-progress", "planned")
BOUND_KEYS = ("lt", "le", "gt", "ge")


class FactError(ValueError):
    """A fact term in a mapping file is malformed (the loader adds file and field)."""


class Checker:
    """What a validator may consult: known value sets and units."""

    def __init__(self, valuesets: set[str], units: Callable[[str, str], bool]) -> None:
        self.valuesets = valuesets
        self.unit_ok = units

    def sets(self, value: object, where: str) -> list[str]:
        """A value-set id or list of ids, each of which must exist."""
        ids = [value] if isinstance(value, str) else value
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise FactError(f"{where}: expected a value-set id or a list of ids")
        for i in ids:
            if i not in self.valuesets:
                raise FactError(f"{where}: value set {i!r} is referenced but absent")
        return ids


def parse_bounds(raw: object, where: str, quantity: str | None, checker: Checker | None) -> Bounds:
    """Parse ``{lt|le|gt|ge: number, unit: ...}``.

    :raises FactError: no bound, a non-numeric bound, or a missing/unknown unit.
    """
    if not isinstance(raw, dict):
        raise FactError(f"{where}: expected a mapping of bounds")
    if "unit" not in raw or not isinstance(raw["unit"], str):
        raise FactError(f"{where}: threshold without unit")
    found = {k: raw[k] for k in BOUND_KEYS if k in raw}
    if not found:
        raise FactError(f"{where}: no bound (lt, le, gt or ge)")
    for key, val in found.items():
        if isinstance(val, bool) or not isinstance(val, int | float):
            raise FactError(f"{where}.{key}: not a number: {val!r}")
    if quantity and checker is not None and not checker.unit_ok(quantity, raw["unit"]):
        raise FactError(f"{where}: unit {raw['unit']!r} is not a unit of {quantity}")
    return Bounds(unit=raw["unit"], **{k: float(v) for k, v in found.items()})


def parse_fact(term: object, where: str) -> Fact:
    """Turn a YAML fact term (``name`` or ``{name: params}``) into (name, params).

    :raises FactError: not one of the registered facts, or not of that form.
    """
    if isinstance(term, str):
        name, params = term, None
    elif isinstance(term, dict) and len(term) == 1:
        ((name, params),) = term.items()
    else:
        raise FactError(f"{where}: a fact is a name or a one-key mapping, got {term!r}")
    if name not in FACTS:
        raise FactError(f"{where}: unknown fact {name!r} (known: {', '.join(sorted(FACTS))})")
    return (name, params)


def check_fact(fact: Fact, where: str, checker: Checker) -> None:
    """Validate a fact's parameters.

    :raises FactError: the parameters do not fit the fact.
    """
    FACTS[fact[0]].check(fact[1], f"{where}.{fact[0]}", checker)


def evaluate_fact(fact: Fact, ctx: EvalContext, bindings: Bindings) -> Bindings | None:
    """Evaluate one fact; ``None`` when it does not hold, else new bindings."""
    return FACTS[fact[0]].evaluate(fact[1], ctx, bindings)


@dataclass(frozen=True)
class FactSpec:
    """A registered fact: parameter check and evaluator."""

    check: Callable[[Any, str, Checker], None]
    evaluate: Callable[[Any, EvalContext, Bindings], Bindings | None]
    doc: str


FACTS: dict[str, FactSpec] = {}


def _register(
    name: str, doc: str
) -> Callable[
    [tuple[Callable[[Any, str, Checker], None], Callable[[Any, EvalContext, Bindings], Any]]],
    None,
]:
    def deco(
        pair: tuple[
            Callable[[Any, str, Checker], None], Callable[[Any, EvalContext, Bindings], Any]
        ],
    ) -> None:
        FACTS[name] = FactSpec(pair[0], pair[1], doc)

    return deco


def _mapping(params: object, where: str, allowed: set[str]) -> dict[str, Any]:
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise FactError(f"{where}: expected a mapping")
    unknown = set(params) - allowed
    if unknown:
        raise FactError(f"{where}: unknown parameter(s) {sorted(unknown)}")
    return params


def _duration(value: object, where: str) -> None:
    try:
        parse_duration(value)
    except ValueError as exc:
        raise FactError(f"{where}: {exc}") from None


# --- age -------------------------------------------------------------------------------


def _add_months(d: date, months: int) -> date:
    """The same day ``months`` later, clipped to the last day of a shorter month."""
    total = d.year * 12 + d.month - 1 + months
    year, month0 = divmod(total, 12)
    day = min(d.day, calendar.monthrange(year, month0 + 1)[1])
    return date(year, month0 + 1, day)


def age_in(unit: str, birth: date, at: datetime) -> float:
    """Exact age in years (``a``) or months (``mo``) at a time, to the day.

    Completed months plus the elapsed fraction of the current month: exactly 3
    months on the 3-month anniversary, more than 3 the day after (so "> 3 months"
    holds then), 18.0 years on the 18th birthday and less the day before.
    """
    d = at.date()
    months = (d.year - birth.year) * 12 + (d.month - birth.month)
    if _add_months(birth, months) > d:
        months -= 1
    last, following = _add_months(birth, months), _add_months(birth, months + 1)
    exact = months + (d - last).days / (following - last).days
    return exact / 12 if unit == "a" else exact


def _check_age(params: Any, where: str, checker: Checker) -> None:
    _mapping(params, where, {"unit", *BOUND_KEYS})
    bounds = parse_bounds(params, where, None, None)
    if bounds.unit not in ("a", "mo"):
        raise FactError(f"{where}: age unit must be 'a' or 'mo'")


def _eval_age(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    birth = ctx.snapshot.birth_date
    if birth is None:
        return None
    bounds = parse_bounds(params, "age", None, None)
    at = b.get("sample_time") or ctx.now
    age = age_in(bounds.unit, birth, at)
    years = age_in("a", birth, at)
    return {"age": int(years)} if satisfies(None, bounds, age) else None


_register("age", "age at the measure's sample time (else now) within the bounds (unit a or mo)")(
    (_check_age, _eval_age)
)


# --- encounter, ICU ---------------------------------------------------------------------


def _check_encounter(params: Any, where: str, checker: Checker) -> None:
    if (
        not isinstance(params, list)
        or not params
        or any(p not in ENCOUNTER_CLASSES for p in params)
    ):
        raise FactError(f"{where}: expected a list of {ENCOUNTER_CLASSES}")


def _eval_encounter(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    enc = ctx.encounter
    if enc is None or enc.klass not in params:
        return None
    return {"encounter": enc}


_register("encounter", "the current encounter has one of the classes")(
    (_check_encounter, _eval_encounter)
)


def _check_icu(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"started_within", "ongoing"})
    if "started_within" in p:
        _duration(p["started_within"], f"{where}.started_within")


def current_icu_stay(ctx: EvalContext) -> m.IcuStay | None:
    """The latest ICU stay started by now that is ongoing or in the current encounter."""
    enc = ctx.encounter
    best: m.IcuStay | None = None
    for stay in ctx.snapshot.icu_stays:
        if stay.start > ctx.now:
            continue
        ongoing = stay.end is None or stay.end >= ctx.now
        in_encounter = enc is not None and (
            stay.encounter_id == enc.id
            or (
                enc.start is not None
                and enc.start <= stay.start
                and (enc.end is None or stay.start <= enc.end)
            )
        )
        if (ongoing or in_encounter) and (best is None or stay.start > best.start):
            best = stay
    return best


def _eval_icu(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    p = params or {}
    stay = current_icu_stay(ctx)
    if stay is None:
        return None
    if p.get("ongoing") and stay.end is not None and stay.end < ctx.now:
        return None
    if "started_within" in p and ctx.now - stay.start > parse_duration(p["started_within"]):
        return None
    return {"icu": stay}


_register("icu-stay", "an ICU stay (ongoing or of the current encounter) started by now")(
    (_check_icu, _eval_icu)
)


# --- conditions -------------------------------------------------------------------------


def _check_sets(params: Any, where: str, checker: Checker) -> None:
    checker.sets(params, where)


def _eval_condition(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    ids = [params] if isinstance(params, str) else params
    found = ctx.condition_matches(ids)
    return {"conditions": found} if found else None


def _eval_no_condition(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    return None if _eval_condition(params, ctx, b) else {}


_register("condition", "a counting Condition is in the value set(s)")(
    (_check_sets, _eval_condition)
)
_register("no-condition", "no counting Condition is in the value set(s)")(
    (_check_sets, _eval_no_condition)
)


def _eval_obstetric(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    found = ctx.condition_matches(["pre-eclampsia"])
    return {"conditions": found} if found else None


def _check_none(params: Any, where: str, checker: Checker) -> None:
    if params not in (None, {}, True):
        raise FactError(f"{where}: takes no parameters")


_register("obstetric", "pre-eclampsia/eclampsia coded (evidence.md §5)")(
    (_check_none, _eval_obstetric)
)


def _eval_age_unknown(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    return {} if ctx.snapshot.birth_date is None else None


_register("age-unknown", "the patient's birth date is unknown")((_check_none, _eval_age_unknown))


# --- procedures -------------------------------------------------------------------------


def _check_procedure(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"set", "states", "within"})
    checker.sets(p.get("set"), f"{where}.set")
    states = p.get("states", list(PROCEDURE_STATES))
    if not isinstance(states, list) or not states or any(s not in PROCEDURE_STATES for s in states):
        raise FactError(f"{where}.states: expected a list of {PROCEDURE_STATES}")
    if "within" in p:
        _duration(p["within"], f"{where}.within")
    elif "performed" in states:
        raise FactError(f"{where}: 'performed' needs 'within'")


def procedure_state(proc: m.Procedure, now: datetime) -> str | None:
    """performed | in-progress | planned, as the procedure stands at now."""
    if proc.planned:
        return "planned"
    start = proc.start or proc.end
    if start is not None and start > now:
        return None
    if proc.status == "in-progress" or (proc.end is not None and proc.end > now):
        return "in-progress"
    if proc.status == "completed":
        return "performed"
    return None


def _eval_procedure(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    states = params.get("states", list(PROCEDURE_STATES))
    within = parse_duration(params["within"]) if "within" in params else None
    vs = ctx.knowledge.valuesets
    ranked: list[tuple[int, datetime, m.Procedure, str]] = []
    for proc in ctx.snapshot.procedures:
        state = procedure_state(proc, ctx.now)
        if state is None or state not in states:
            continue
        if not vs.concept_match(proc.concept, [params["set"]]):
            continue
        if state == "performed":
            end = proc.end or proc.start
            if end is None or within is None or not (ctx.now - within <= end <= ctx.now):
                continue
        rank = {"in-progress": 0, "performed": 1, "planned": 2}[state]
        when = proc.end or proc.start or ctx.now
        ranked.append((rank, when, proc, state))
    if not ranked:
        return None
    ranked.sort(key=lambda t: (t[0], -t[1].timestamp()))
    _, _, proc, state = ranked[0]
    return {"procedure": proc, "procedure_state": state}


_register("procedure", "a procedure in the set performed within, in progress, or planned")(
    (_check_procedure, _eval_procedure)
)


# --- medications ------------------------------------------------------------------------


def _check_medication(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"any_of", "all_of"})
    if len(p) != 1:
        raise FactError(f"{where}: give exactly one of any_of, all_of")
    key = next(iter(p))
    checker.sets(p[key], f"{where}.{key}")


def _eval_medication(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    if "any_of" in params:
        found = ctx.medication_matches(params["any_of"])
        return {"medications": found} if found else None
    found_all: list[tuple[m.Medication, str]] = []
    for set_id in params["all_of"]:
        matches = ctx.medication_matches([set_id])
        if not matches:
            return None
        found_all.extend(matches)
    return {"medications": found_all}


_register("medication", "an active or draft medication in the sets (any_of / all_of)")(
    (_check_medication, _eval_medication)
)


def _eval_mg_active(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    found = ctx.medication_matches(MAGNESIUM_SETS)
    return {"magnesium_orders": found} if found else None


_register("magnesium-active-or-ordered", "magnesium active, or among the draft orders")(
    (_check_none, _eval_mg_active)
)


def _eval_draft_order(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    ids = [params] if isinstance(params, str) else params
    vs = ctx.knowledge.valuesets
    meds = [x for x in ctx.snapshot.medications if x.draft and vs.concept_match(x.concept, ids)]
    procs = [p for p in ctx.snapshot.procedures if p.planned and vs.concept_match(p.concept, ids)]
    return {"draft_orders": [*meds, *procs]} if meds or procs else None


_register("draft-order", "a draft order of the hook is in the set(s)")(
    (_check_sets, _eval_draft_order)
)


def _check_given_since(params: Any, where: str, checker: Checker) -> None:
    if params != "icu-start":
        raise FactError(f"{where}: the only anchor is icu-start")


def _eval_given_since(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    stay = b.get("icu") or current_icu_stay(ctx)
    if stay is None:
        return None
    vs = ctx.knowledge.valuesets
    for med in ctx.snapshot.medications:
        if not vs.concept_match(med.concept, MAGNESIUM_SETS):
            continue
        when = med.time or med.authored
        if med.status == "active" and not med.draft and (when is None or when <= ctx.now):
            return None
        if when is not None and stay.start <= when <= ctx.now:
            return None
    return {}


_register("no-magnesium-given-since", "no magnesium ordered or given since the anchor")(
    (_check_given_since, _eval_given_since)
)


# --- AKI ---------------------------------------------------------------------------------


def _check_aki(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"present", "stage_ge", "after_procedure"})
    if len(p) != 1:
        raise FactError(f"{where}: give exactly one of present, stage_ge, after_procedure")
    if "after_procedure" in p:
        ap = _mapping(p["after_procedure"], f"{where}.after_procedure", {"set", "within"})
        checker.sets(ap.get("set"), f"{where}.after_procedure.set")
        _duration(ap.get("within"), f"{where}.after_procedure.within")


def _eval_aki(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    status = ctx.aki
    if "present" in params:
        return {"aki": status} if status.present else None
    if "stage_ge" in params:
        return {"aki": status} if status.stage >= int(params["stage_ge"]) else None
    ap = params["after_procedure"]
    if not status.present or status.onset is None:
        return None
    within = parse_duration(ap["within"])
    vs = ctx.knowledge.valuesets
    for proc in ctx.snapshot.procedures:
        end = proc.end or proc.start
        if proc.planned or end is None or procedure_state(proc, ctx.now) != "performed":
            continue
        if vs.concept_match(proc.concept, [ap["set"]]) and end <= status.onset <= end + within:
            return {"aki": status, "procedure": proc, "procedure_state": "performed"}
    return None


_register("aki", "AKI present / stage >= n / onset within a window after a procedure")(
    (_check_aki, _eval_aki)
)


# --- labs ---------------------------------------------------------------------------------


def _check_latest_lab(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"kind", "within", "unit", *BOUND_KEYS})
    if p.get("kind") not in LAB_KINDS:
        raise FactError(f"{where}.kind: expected one of {LAB_KINDS}")
    _duration(p.get("within"), f"{where}.within")
    from cds_service.rules.context import SERIES_QUANTITY

    parse_bounds(
        {k: v for k, v in p.items() if k not in ("kind", "within")},
        where,
        SERIES_QUANTITY[p["kind"]],
        checker,
    )


def _eval_latest_lab(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    result = ctx.latest(params["kind"], parse_duration(params["within"]))
    if result is None:
        return None
    bounds = parse_bounds(
        {k: v for k, v in params.items() if k not in ("kind", "within")}, "", None, None
    )
    return {"lab": result} if ctx.meets(result, bounds) else None


_register("latest-lab", "the newest usable result of a kind within the window meets the bounds")(
    (_check_latest_lab, _eval_latest_lab)
)


def _check_no_lab(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"kinds", "within"})
    kinds = p.get("kinds")
    if not isinstance(kinds, list) or not kinds or any(k not in LAB_KINDS for k in kinds):
        raise FactError(f"{where}.kinds: expected a list of {LAB_KINDS}")
    _duration(p.get("within"), f"{where}.within")


def _eval_no_lab(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    within = parse_duration(params["within"])
    for kind in params["kinds"]:
        if ctx.latest(kind, within) is not None:
            return None
    return {"window": within}


_register("no-lab-within", "no usable result of those kinds within the window before now")(
    (_check_no_lab, _eval_no_lab)
)


def _check_weight(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"within", "unit", *BOUND_KEYS})
    _duration(p.get("within"), f"{where}.within")
    parse_bounds({k: v for k, v in p.items() if k != "within"}, where, "weight", checker)


def _eval_weight(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    return _eval_latest_lab({**params, "kind": m.WEIGHT}, ctx, b)


_register("weight", "the latest weight within the window meets the bounds")(
    (_check_weight, _eval_weight)
)


# --- any --------------------------------------------------------------------------------


def _check_any(params: Any, where: str, checker: Checker) -> None:
    if not isinstance(params, list) or not params:
        raise FactError(f"{where}: expected a list of facts")
    for i, term in enumerate(params):
        check_fact(parse_fact(term, f"{where}[{i}]"), f"{where}[{i}]", checker)


def _eval_any(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    for term in params:
        found = evaluate_fact(parse_fact(term, "any"), ctx, b)
        if found is not None:
            return found
    return None


_register("any", "at least one of the listed facts holds")((_check_any, _eval_any))
