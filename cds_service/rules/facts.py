"""The closed fact vocabulary of rule populations, gate conditions and trigger contexts.

Each fact has a validator (used by the loader: unknown facts or bad parameters
stop start-up), a parser (run once by the loader after the validator: durations,
bounds and set ids parsed for evaluation, see ``compile_fact``) and an evaluator
(pure: it reads the ``EvalContext``). An evaluator returns ``None`` when the fact
does not hold, else a dict of bindings (the ICU stay, procedure, drugs... that
made it hold) which measures and card text use.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
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
PRE_ECLAMPSIA_SET = "pre-eclampsia"  # the obstetric fact (a value set id the loader requires)


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
    # a float keeps its reported decimals (clinical/numbers.py): 40 kg, 1.70
    return Bounds(unit=raw["unit"], **found)


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


def compile_fact(fact: Fact) -> Term:
    """A validated fact (``check_fact``) ready to evaluate: its parameters parsed once."""
    spec = FACTS[fact[0]]
    return Term(fact, spec.prepare(fact[1]), spec.evaluate)


Evaluator = Callable[[Any, EvalContext, Bindings], Bindings | None]


@dataclass(frozen=True, slots=True)
class Term:
    """A fact as the engine runs it: the term as written, its parsed parameters, its evaluator."""

    fact: Fact
    params: Any
    run: Evaluator = field(repr=False)

    def evaluate(self, ctx: EvalContext, bindings: Bindings) -> Bindings | None:
        """``None`` when the fact does not hold, else new bindings."""
        return self.run(self.params, ctx, bindings)


def _as_written(params: Any) -> Any:
    return params


@dataclass(frozen=True)
class FactSpec:
    """A registered fact: parameter check, evaluator, and parameter parser (run at load)."""

    check: Callable[[Any, str, Checker], None]
    evaluate: Evaluator
    doc: str
    prepare: Callable[[Any], Any] = _as_written


FACTS: dict[str, FactSpec] = {}


def _register(
    name: str, doc: str, prepare: Callable[[Any], Any] = _as_written
) -> Callable[[tuple[Callable[[Any, str, Checker], None], Evaluator]], None]:
    def deco(pair: tuple[Callable[[Any, str, Checker], None], Evaluator]) -> None:
        FACTS[name] = FactSpec(pair[0], pair[1], doc, prepare)

    return deco


def _set_ids(value: str | list[str]) -> tuple[str, ...]:
    """A validated value-set id or list of ids (``Checker.sets``) as a tuple."""
    return (value,) if isinstance(value, str) else tuple(value)


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
    months = _age_in_months(birth, at)
    return months / 12 if unit == "a" else months


def _age_in_months(birth: date, at: datetime) -> float:
    d = at.date()
    months = (d.year - birth.year) * 12 + (d.month - birth.month)
    if _add_months(birth, months) > d:
        months -= 1
    last, following = _add_months(birth, months), _add_months(birth, months + 1)
    return months + (d - last).days / (following - last).days


def _check_age(params: Any, where: str, checker: Checker) -> None:
    _mapping(params, where, {"unit", *BOUND_KEYS})
    bounds = parse_bounds(params, where, None, None)
    if bounds.unit not in ("a", "mo"):
        raise FactError(f"{where}: age unit must be 'a' or 'mo'")


def _prepare_age(params: Any) -> Bounds:
    return parse_bounds(params, "age", None, None)


def _eval_age(bounds: Bounds, ctx: EvalContext, b: Bindings) -> Bindings | None:
    birth = ctx.snapshot.birth_date
    if birth is None:
        return None
    at = b.get("sample_time") or ctx.now
    months = ctx.ages.get(at)
    if months is None:  # rules sharing a measure ask for the age at the same time
        months = ctx.ages[at] = _age_in_months(birth, at)
    years = months / 12  # as age_in("a", ...)
    age = years if bounds.unit == "a" else months
    return {"age": int(years)} if satisfies(None, bounds, age) else None


_register(
    "age",
    "age at the measure's sample time (else now) within the bounds (unit a or mo)",
    _prepare_age,
)((_check_age, _eval_age))


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


@dataclass(frozen=True, slots=True)
class _IcuParams:
    ongoing: bool
    started_within: timedelta | None


def _prepare_icu(params: Any) -> _IcuParams:
    p = params or {}
    within = parse_duration(p["started_within"]) if "started_within" in p else None
    return _IcuParams(bool(p.get("ongoing")), within)


def _eval_icu(p: _IcuParams, ctx: EvalContext, b: Bindings) -> Bindings | None:
    stay = ctx.icu_stay
    if stay is None:
        return None
    if p.ongoing and stay.end is not None and stay.end < ctx.now:
        return None
    if p.started_within is not None and ctx.now - stay.start > p.started_within:
        return None
    return {"icu": stay}


_register(
    "icu-stay", "an ICU stay (ongoing or of the current encounter) started by now", _prepare_icu
)((_check_icu, _eval_icu))


# --- conditions -------------------------------------------------------------------------


def _check_sets(params: Any, where: str, checker: Checker) -> None:
    checker.sets(params, where)


def _eval_condition(ids: tuple[str, ...], ctx: EvalContext, b: Bindings) -> Bindings | None:
    found = ctx.condition_matches(ids)
    return {"conditions": found} if found else None


def _eval_no_condition(ids: tuple[str, ...], ctx: EvalContext, b: Bindings) -> Bindings | None:
    return None if _eval_condition(ids, ctx, b) else {}


_register("condition", "a counting Condition is in the value set(s)", _set_ids)(
    (_check_sets, _eval_condition)
)
_register("no-condition", "no counting Condition is in the value set(s)", _set_ids)(
    (_check_sets, _eval_no_condition)
)


def _eval_obstetric(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    found = ctx.condition_matches((PRE_ECLAMPSIA_SET,))
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


@dataclass(frozen=True, slots=True)
class _ProcedureParams:
    set_ids: tuple[str, ...]
    states: tuple[str, ...]
    within: timedelta | None


def _prepare_procedure(params: Any) -> _ProcedureParams:
    return _ProcedureParams(
        (params["set"],),
        tuple(params.get("states", PROCEDURE_STATES)),
        parse_duration(params["within"]) if "within" in params else None,
    )


def _eval_procedure(p: _ProcedureParams, ctx: EvalContext, b: Bindings) -> Bindings | None:
    within = p.within
    ranked: list[tuple[int, datetime, m.Procedure, str]] = []
    for proc in ctx.procedures_by_set.items_in(p.set_ids):
        state = procedure_state(proc, ctx.now)
        if state is None or state not in p.states:
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


_register(
    "procedure",
    "a procedure in the set performed within, in progress, or planned",
    _prepare_procedure,
)((_check_procedure, _eval_procedure))


# --- medications ------------------------------------------------------------------------


def _check_medication(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"any_of", "all_of"})
    if len(p) != 1:
        raise FactError(f"{where}: give exactly one of any_of, all_of")
    key = next(iter(p))
    checker.sets(p[key], f"{where}.{key}")


@dataclass(frozen=True, slots=True)
class _MedicationParams:
    all_of: bool
    set_ids: tuple[str, ...]


def _prepare_medication(params: Any) -> _MedicationParams:
    if "any_of" in params:
        return _MedicationParams(False, _set_ids(params["any_of"]))
    return _MedicationParams(True, _set_ids(params["all_of"]))


def _eval_medication(p: _MedicationParams, ctx: EvalContext, b: Bindings) -> Bindings | None:
    if not p.all_of:
        found = ctx.medication_matches(p.set_ids)
        return {"medications": found} if found else None
    found_all: list[tuple[m.Medication, str]] = []
    for set_id in p.set_ids:
        matches = ctx.medication_matches((set_id,))
        if not matches:
            return None
        found_all.extend(matches)
    return {"medications": found_all}


_register(
    "medication",
    "an active or draft medication in the sets (any_of / all_of)",
    _prepare_medication,
)((_check_medication, _eval_medication))


def _eval_mg_active(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    found = ctx.medication_matches(MAGNESIUM_SETS)
    return {"medications": found} if found else None


_register("magnesium-active-or-ordered", "magnesium active, or among the draft orders")(
    (_check_none, _eval_mg_active)
)


def _eval_draft_order(ids: tuple[str, ...], ctx: EvalContext, b: Bindings) -> Bindings | None:
    meds = [x for x in ctx.medications_by_set.items_in(ids) if x.draft]
    procs = [p for p in ctx.procedures_by_set.items_in(ids) if p.planned]
    return {"draft_orders": [*meds, *procs]} if meds or procs else None


_register("draft-order", "a draft order of the hook is in the set(s)", _set_ids)(
    (_check_sets, _eval_draft_order)
)


def _check_given_since(params: Any, where: str, checker: Checker) -> None:
    if params != "icu-start":
        raise FactError(f"{where}: the only anchor is icu-start")


def _eval_given_since(params: Any, ctx: EvalContext, b: Bindings) -> Bindings | None:
    stay = b.get("icu") or ctx.icu_stay
    if stay is None:
        return None
    for med in ctx.medications_by_set.items_in(MAGNESIUM_SETS):
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
    if "stage_ge" in p:
        try:
            int(p["stage_ge"])
        except (TypeError, ValueError):
            raise FactError(f"{where}.stage_ge: expected a stage number") from None
    if "after_procedure" in p:
        ap = _mapping(p["after_procedure"], f"{where}.after_procedure", {"set", "within"})
        checker.sets(ap.get("set"), f"{where}.after_procedure.set")
        _duration(ap.get("within"), f"{where}.after_procedure.within")


@dataclass(frozen=True, slots=True)
class _AkiParams:
    """One of: ``present``, ``stage_ge``, or ``after_procedure`` (its set and window)."""

    present: bool = False
    stage_ge: int | None = None
    procedure_sets: tuple[str, ...] = ()
    within: timedelta = timedelta(0)


def _prepare_aki(params: Any) -> _AkiParams:
    if "present" in params:
        return _AkiParams(present=True)
    if "stage_ge" in params:
        return _AkiParams(stage_ge=int(params["stage_ge"]))
    ap = params["after_procedure"]
    return _AkiParams(procedure_sets=(ap["set"],), within=parse_duration(ap["within"]))


def _eval_aki(p: _AkiParams, ctx: EvalContext, b: Bindings) -> Bindings | None:
    status = ctx.aki
    if p.present:
        return {"aki": status} if status.present else None
    if p.stage_ge is not None:
        return {"aki": status} if status.stage >= p.stage_ge else None
    if not status.present or status.onset is None:
        return None
    for proc in ctx.procedures_by_set.items_in(p.procedure_sets):
        end = proc.end or proc.start
        if proc.planned or end is None or procedure_state(proc, ctx.now) != "performed":
            continue
        if end <= status.onset <= end + p.within:
            return {"aki": status, "procedure": proc, "procedure_state": "performed"}
    return None


_register(
    "aki", "AKI present / stage >= n / onset within a window after a procedure", _prepare_aki
)((_check_aki, _eval_aki))


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


@dataclass(frozen=True, slots=True)
class _LabParams:
    kind: str
    within: timedelta
    bounds: Bounds


def _prepare_latest_lab(params: Any) -> _LabParams:
    bounds = {k: v for k, v in params.items() if k not in ("kind", "within")}
    return _LabParams(
        params["kind"], parse_duration(params["within"]), parse_bounds(bounds, "", None, None)
    )


def _eval_latest_lab(p: _LabParams, ctx: EvalContext, b: Bindings) -> Bindings | None:
    result = ctx.latest(p.kind, p.within)
    if result is None:
        return None
    return {"lab": result} if ctx.meets(result, p.bounds) else None


_register(
    "latest-lab",
    "the newest usable result of a kind within the window meets the bounds",
    _prepare_latest_lab,
)((_check_latest_lab, _eval_latest_lab))


def _check_egfr(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"within", "unit", *BOUND_KEYS})
    _duration(p.get("within"), f"{where}.within")
    parse_bounds({k: v for k, v in p.items() if k != "within"}, where, "egfr", checker)


def _prepare_egfr(params: Any) -> _LabParams:
    return _prepare_latest_lab({**params, "kind": m.EGFR})


def _eval_egfr(p: _LabParams, ctx: EvalContext, b: Bindings) -> Bindings | None:
    found = ctx.egfr(p.within)
    if found is None:
        return None
    in_unit = ctx.convert(m.EGFR, found.value, p.bounds.unit)
    return {"egfr": found} if satisfies(None, p.bounds, in_unit) else None


_register(
    "egfr",
    "the lower of the latest reported eGFR and the eGFR computed from the latest creatinine "
    "(CKD-EPI 2021, adults) within the window meets the bounds",
    _prepare_egfr,
)((_check_egfr, _eval_egfr))


def _check_no_lab(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"kinds", "within"})
    kinds = p.get("kinds")
    if not isinstance(kinds, list) or not kinds or any(k not in LAB_KINDS for k in kinds):
        raise FactError(f"{where}.kinds: expected a list of {LAB_KINDS}")
    _duration(p.get("within"), f"{where}.within")


@dataclass(frozen=True, slots=True)
class _NoLabParams:
    kinds: tuple[str, ...]
    within: timedelta


def _prepare_no_lab(params: Any) -> _NoLabParams:
    return _NoLabParams(tuple(params["kinds"]), parse_duration(params["within"]))


def _eval_no_lab(p: _NoLabParams, ctx: EvalContext, b: Bindings) -> Bindings | None:
    for kind in p.kinds:
        if ctx.latest(kind, p.within) is not None:
            return None
    return {"window": p.within}


_register(
    "no-lab-within",
    "no usable result of those kinds within the window before now",
    _prepare_no_lab,
)((_check_no_lab, _eval_no_lab))


def _check_latest_suspect(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"kind"})
    if p.get("kind") not in LAB_KINDS:
        raise FactError(f"{where}.kind: expected one of {LAB_KINDS}")


def _eval_latest_suspect(kind: str, ctx: EvalContext, b: Bindings) -> Bindings | None:
    found = ctx.latest_suspect(kind)
    return {"lab": found.result, "delta": found} if found is not None else None


_register(
    "latest-suspect",
    "the newest result of that kind (in the latest-serum-Mg window) is suspect (delta checks)",
    lambda params: params["kind"],
)((_check_latest_suspect, _eval_latest_suspect))


def _check_weight(params: Any, where: str, checker: Checker) -> None:
    p = _mapping(params, where, {"within", "unit", *BOUND_KEYS})
    _duration(p.get("within"), f"{where}.within")
    parse_bounds({k: v for k, v in p.items() if k != "within"}, where, "weight", checker)


def _prepare_weight(params: Any) -> _LabParams:
    return _prepare_latest_lab({**params, "kind": m.WEIGHT})


_register("weight", "the latest weight within the window meets the bounds", _prepare_weight)(
    (_check_weight, _eval_latest_lab)
)


# --- any --------------------------------------------------------------------------------


def _check_any(params: Any, where: str, checker: Checker) -> None:
    if not isinstance(params, list) or not params:
        raise FactError(f"{where}: expected a list of facts")
    for i, term in enumerate(params):
        check_fact(parse_fact(term, f"{where}[{i}]"), f"{where}[{i}]", checker)


def _prepare_any(params: Any) -> tuple[Term, ...]:
    return tuple(compile_fact(parse_fact(term, "any")) for term in params)


def _eval_any(terms: tuple[Term, ...], ctx: EvalContext, b: Bindings) -> Bindings | None:
    for term in terms:
        found = term.evaluate(ctx, b)
        if found is not None:
            return found
    return None


_register("any", "at least one of the listed facts holds", _prepare_any)((_check_any, _eval_any))
