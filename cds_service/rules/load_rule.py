"""Load and validate one rule file of ``mappings/rules`` (its row of evidence.md §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cds_service.rules import facts as F
from cds_service.rules.durations import parse_duration
from cds_service.rules.mapfile import MappingError, need, read_mapping
from cds_service.rules.model import (
    INDICATOR_ORDER,
    Bounds,
    Citation,
    Effect,
    Evidence,
    Measure,
    NamedQuantity,
    Rule,
    Threshold,
)
from cds_service.rules.triggers import TRIGGERS

CATEGORIES = ("association", "supplementation", "monitoring", "data", "aki", "safety")
DIRECTIONS = ("low", "high", "prevention", "safety", "monitoring", "aki")
_THRESHOLD_KEYS = ("unit", "direction", "label", "effect", "indicator")
_EVIDENCE_KEYS = {"study", "design", "n", "population", "effects", "checked", "set_here"}


def bounds(raw: Any, where: str, quantity: str | None, checker: F.Checker) -> Bounds:
    """Bounds ``{lt|le|gt|ge, unit}``.

    :raises MappingError: as ``facts.parse_bounds`` finds them wrong.
    """
    try:
        return F.parse_bounds(raw, where, quantity, checker)
    except F.FactError as exc:
        raise MappingError(str(exc)) from None


def duration(value: Any, where: str) -> None:
    """Check a duration (``12h``, ``7d``).

    :raises MappingError: not a duration.
    """
    try:
        parse_duration(value)
    except ValueError as exc:
        raise MappingError(f"{where}: {exc}") from None


def _threshold(
    raw: Any, where: str, quantity: str, checker: F.Checker, need_dir: bool, n_effects: int = 0
) -> Threshold:
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping")
    direction = raw.get("direction")
    if need_dir and direction not in ("low", "high"):
        raise MappingError(f"{where}.direction: expected low or high")
    b = bounds(
        {k: v for k, v in raw.items() if k in (*F.BOUND_KEYS, "unit")}, where, quantity, checker
    )
    effect = raw.get("effect")
    if effect is not None and (
        isinstance(effect, bool) or not isinstance(effect, int) or not 0 <= effect < n_effects
    ):
        raise MappingError(
            f"{where}.effect: expected the index of one of the {n_effects} evidence.effects"
        )
    return Threshold(direction or "", b, raw.get("label"), None if effect is None else str(effect))


def citation(raw: Any, where: str) -> Citation:
    """One citation (review reference number, authors, year, title, DOI or URL).

    :raises MappingError: missing ref/authors, or neither DOI nor URL.
    """
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping")
    if raw.get("ref") in (None, ""):
        raise MappingError(f"{where}: missing citation field 'ref'")
    authors = raw.get("authors") or raw.get("label")
    if not authors:
        raise MappingError(f"{where}: missing citation field 'authors'")
    if not raw.get("doi") and not raw.get("url"):
        raise MappingError(f"{where}: citation has neither doi nor url")
    doi = raw.get("doi")
    if doi and not str(doi).startswith("https://doi.org/"):
        raise MappingError(f"{where}.doi: must be a https://doi.org/ link")
    return Citation(
        ref=str(raw["ref"]),
        authors=str(authors),
        year=raw.get("year"),
        title=str(raw.get("title") or raw.get("label") or ""),
        journal=raw.get("journal"),
        doi=doi,
        url=raw.get("url"),
    )


def _evidence(raw: Any, where: str) -> Evidence:
    study = need(raw, "study", where)
    design = need(raw, "design", where)
    effects = []
    for i, e in enumerate(raw.get("effects") or []):
        w = f"{where}.effects[{i}]"
        ci = e.get("ci")
        if ci is not None and (not isinstance(ci, list) or len(ci) != 2):
            raise MappingError(f"{w}.ci: expected [low, high]")
        effects.append(
            Effect(
                label=str(need(e, "label", w)),
                measure=str(e.get("measure", "")),
                value=e.get("value"),
                ci=(ci[0], ci[1]) if ci else None,
                text=e.get("text"),
            )
        )
    return Evidence(
        study=study,
        design=design,
        n=raw.get("n"),
        population=raw.get("population"),
        effects=tuple(effects),
        checked=raw.get("checked"),
        set_here=raw.get("set_here"),
        extra={k: v for k, v in raw.items() if k not in _EVIDENCE_KEYS},
    )


def facts(raw: Any, where: str, checker: F.Checker) -> tuple[F.Term, ...]:
    """Validate a list of fact terms and compile them (``Term.fact`` is the term as written).

    :raises MappingError: an unknown fact or bad parameters.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MappingError(f"{where}: expected a list of facts")
    out = []
    for i, term in enumerate(raw):
        try:
            fact = F.parse_fact(term, f"{where}[{i}]")
            F.check_fact(fact, f"{where}[{i}]", checker)
        except F.FactError as exc:
            raise MappingError(str(exc)) from None
        out.append(F.compile_fact(fact))
    return tuple(out)


def fact(raw: Any, where: str, checker: F.Checker) -> F.Term:
    """One fact term, validated and compiled.

    :raises MappingError: an unknown fact or bad parameters.
    """
    try:
        parsed = F.parse_fact(raw, where)
        F.check_fact(parsed, where, checker)
    except F.FactError as exc:
        raise MappingError(str(exc)) from None
    return F.compile_fact(parsed)


def named_quantity(raw: Any, where: str) -> NamedQuantity:
    """``{value: 12, unit: mg/dL, about: true}`` or ``{low: 48, high: 72, unit: h}``.

    :raises MappingError: neither a value nor a low-high range, or no unit.
    """
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping")
    unit = need(raw, "unit", where)

    def num(key: str) -> float | None:
        val = raw.get(key)
        if val is None:
            return None
        if isinstance(val, bool) or not isinstance(val, int | float):
            raise MappingError(f"{where}.{key}: not a number: {val!r}")
        return val

    value, low, high = num("value"), num("low"), num("high")
    if (value is None) == (low is None or high is None) or (low is None) != (high is None):
        raise MappingError(f"{where}: give a value, or a low and a high")
    about = raw.get("about", False)
    if not isinstance(about, bool):
        raise MappingError(f"{where}.about: expected true or false")
    return NamedQuantity(unit, value, low, high, about)


def _trigger(data: dict[str, Any], where: str, checker: F.Checker) -> tuple[Any, Any]:
    raw_trig = data["trigger"]
    if not isinstance(raw_trig, dict) or len(raw_trig) != 1:
        raise MappingError(f"{where}: trigger: expected one {{name: params}}")
    ((name, params),) = raw_trig.items()
    if name not in TRIGGERS:
        raise MappingError(
            f"{where}: trigger: unknown trigger {name!r} (known: {sorted(TRIGGERS)})"
        )
    try:
        TRIGGERS[name].check(params or {}, f"{where}: trigger.{name}", checker)
    except F.FactError as exc:
        raise MappingError(str(exc)) from None
    trigger = (name, params or {})
    return trigger, TRIGGERS[name].prepare(trigger[1])


def load_rule(path: Path, order: int, measures: dict[str, Measure], checker: F.Checker) -> Rule:
    """Load and validate one rule file.

    :raises MappingError: any invalid field, named with the file.
    """
    data = read_mapping(path, "rule")
    where = str(path)
    if not isinstance(data, dict):
        raise MappingError(f"{where}: expected a mapping")
    rule_id = need(data, "id", where)
    if rule_id != path.stem:
        raise MappingError(f"{where}: id {rule_id!r} differs from the file name")
    version = str(need(data, "version", where, (str, int, float)))
    category = need(data, "category", where)
    if category not in CATEGORIES:
        raise MappingError(f"{where}: category: unknown {category!r}")
    direction = need(data, "direction", where)
    if direction not in (*DIRECTIONS, "by-threshold"):
        raise MappingError(f"{where}: direction: unknown {direction!r}")
    indicator = need(data, "indicator", where)
    if indicator not in INDICATOR_ORDER:
        raise MappingError(f"{where}: indicator: unknown {indicator!r}")
    terms = facts(data.get("population"), f"{where}: population", checker)
    evidence = _evidence(need(data, "evidence", where, dict), f"{where}: evidence")
    n_effects = len(evidence.effects)
    measure_id = data.get("measure")
    trigger, trigger_args = None, None
    thresholds: tuple[Threshold, ...] = ()
    quantity = "magnesium"
    by_threshold = direction == "by-threshold"
    if measure_id is not None:
        if measure_id not in measures:
            raise MappingError(f"{where}: measure: unknown measure {measure_id!r}")
        raw_t = data.get("thresholds")
        if not isinstance(raw_t, list) or not raw_t:
            raise MappingError(f"{where}: a measure rule needs thresholds")
        thresholds = tuple(
            _threshold(t, f"{where}: thresholds[{i}]", quantity, checker, by_threshold)
            for i, t in enumerate(raw_t)
        )
    if "trigger" in data:
        trigger, trigger_args = _trigger(data, where, checker)
    if measure_id is not None and trigger is not None:
        raise MappingError(f"{where}: a rule has a measure or a trigger, not both")
    bands = tuple(
        _threshold(t, f"{where}: bands[{i}]", quantity, checker, False, n_effects)
        for i, t in enumerate(data.get("bands") or [])
    )
    ind_when = []
    for i, t in enumerate(data.get("indicator_when") or []):
        ind = t.get("indicator") if isinstance(t, dict) else None
        if ind not in INDICATOR_ORDER:
            raise MappingError(f"{where}: indicator_when[{i}].indicator: unknown {ind!r}")
        ind_when.append(
            (ind, _threshold(t, f"{where}: indicator_when[{i}]", quantity, checker, False).bounds)
        )
    stage_map = {int(k): v for k, v in (data.get("indicator_when_stage") or {}).items()}
    for stage, ind in stage_map.items():
        if ind not in INDICATOR_ORDER:
            raise MappingError(f"{where}: indicator_when_stage.{stage}: unknown indicator {ind!r}")
    obstetric = data.get("obstetric") or {}
    obst_thresholds = tuple(
        _threshold(t, f"{where}: obstetric.thresholds[{i}]", quantity, checker, by_threshold)
        for i, t in enumerate(obstetric.get("thresholds") or [])
    )
    raw_cites = data.get("citations")
    if not isinstance(raw_cites, list) or not raw_cites:
        raise MappingError(f"{where}: missing citation")
    citations = tuple(citation(c, f"{where}: citations[{i}]") for i, c in enumerate(raw_cites))
    suggestion = data.get("suggestion")
    if suggestion is not None:
        check_suggestion(suggestion, f"{where}: suggestion", checker)
    show = tuple(data.get("show_conditions") or [])
    for s in show:
        if s not in checker.valuesets:
            raise MappingError(
                f"{where}: show_conditions: value set {s!r} is referenced but absent"
            )
    text = need(data, "text", where, dict)
    declared = need(text, "placeholders", f"{where}: text", list)
    quantities = {
        str(name): named_quantity(q, f"{where}: quantities.{name}")
        for name, q in (data.get("quantities") or {}).items()
    }
    return Rule(
        id=rule_id,
        version=version,
        title=need(data, "title", where),
        category=category,
        direction=direction,
        indicator=indicator,
        population=tuple(t.fact for t in terms),
        evidence=evidence,
        citations=citations,
        order=order,
        measure=measure_id,
        thresholds=thresholds,
        bands=bands,
        indicator_when=tuple(ind_when),
        indicator_when_stage=stage_map,
        trigger=trigger,
        suggestion=suggestion,
        fallback=bool(data.get("fallback", False)),
        obstetric_suppress=bool(obstetric.get("suppress", False)),
        obstetric_thresholds=obst_thresholds,
        show_conditions=show,
        source_file=where,
        placeholders=frozenset(str(p) for p in declared),
        advises_repletion=bool(text.get("advises_repletion", False)),
        quantities=quantities,
        terms=terms,
        trigger_args=trigger_args,
    )


def check_suggestion(raw: Any, where: str, checker: F.Checker) -> None:
    """A suggestion block: a lab order, or a magnesium order bounded in time.

    :raises MappingError: a missing or malformed field.
    """
    kind = need(raw, "kind", where)
    if kind == "lab-order":
        code = need(raw, "code", where, dict)
        need(code, "system", f"{where}.code")
        need(code, "code", f"{where}.code")
        return
    if kind != "medication":
        raise MappingError(f"{where}.kind: expected medication or lab-order")
    med = need(raw, "medication", where)
    if med not in checker.valuesets:
        raise MappingError(f"{where}.medication: value set {med!r} is referenced but absent")
    if "count" not in raw and "days" not in raw:
        raise MappingError(
            f"{where}: a magnesium order must be bounded in time: give count or days"
        )
    for key in ("count", "days"):
        if key in raw and (
            not isinstance(raw[key], int) or isinstance(raw[key], bool) or raw[key] < 1
        ):
            raise MappingError(f"{where}.{key}: expected a whole number of at least 1")
    if "dose" in raw:
        dose = need(raw, "dose", where, dict)
        if dose.get("unit") != "g" or not isinstance(dose.get("amount"), int | float):
            raise MappingError(f"{where}.dose: expected {{amount: number, unit: g}}")
    elif "dose_per_kg" in raw:
        for key in ("dose_per_kg", "max_rate", "weight"):
            need(raw, key, where, dict)
        if raw["dose_per_kg"].get("unit") != "mg/kg":
            raise MappingError(f"{where}.dose_per_kg.unit: expected mg/kg")
        if raw["max_rate"].get("unit") != "mg/min":
            raise MappingError(f"{where}.max_rate.unit: expected mg/min")
        if "infusion_per_kg" in raw and raw["infusion_per_kg"].get("unit") != "mg/kg/h":
            raise MappingError(f"{where}.infusion_per_kg.unit: expected mg/kg/h")
        w = raw["weight"]
        bounds({k: v for k, v in w.items() if k != "within"}, f"{where}.weight", "weight", checker)
        duration(w.get("within"), f"{where}.weight.within")
        duration(raw.get("min_bolus", "0m"), f"{where}.min_bolus")
    else:
        raise MappingError(f"{where}: a medication suggestion needs dose or dose_per_kg")
    if "when_latest_mg" in raw:
        bounds(raw["when_latest_mg"], f"{where}.when_latest_mg", "magnesium", checker)
    if "target" in raw:
        bounds(raw["target"], f"{where}.target", "magnesium", checker)
    if "rate" in raw:
        duration(need(raw["rate"], "over", f"{where}.rate"), f"{where}.rate.over")
    if "dose_range" in raw:
        named_quantity(raw["dose_range"], f"{where}.dose_range")
