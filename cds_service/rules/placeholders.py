"""The closed set of placeholders card text may name, and when a rule can name each.

A rule file declares the placeholders its text uses (``text: placeholders: [...]``); the
loader refuses a declaration the rule cannot fill (``dose`` without a medication
suggestion, ``icu_start`` without an ICU stay, ...) and a template that names an
undeclared one. What each shows is computed in ``render/values.py``; a text never
restates a number a rule file holds: it names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cds_service.rules.model import Fact, Knowledge, Rule

Needs = Callable[[Rule, Knowledge], bool]


@dataclass(frozen=True)
class Placeholder:
    """One placeholder: what it shows and which rules can fill it.

    ``computed``: its value exists only once a patient-specific dose was computed (a
    weight-based order), so templates shown without a dose (``regimen``, the ``no_dose``,
    ``withheld`` and ``gated`` variants) may not name it.
    """

    name: str
    doc: str
    needs: Needs
    computed: Callable[[Rule], bool] = lambda rule: False


def _fact_names(fact: Fact) -> set[str]:
    name, params = fact
    out = {name}
    if name == "any":
        for term in params:
            inner = term if isinstance(term, tuple) else None
            if inner is None:
                inner = (term, None) if isinstance(term, str) else next(iter(term.items()))
            out |= _fact_names(inner)
    return out


def facts_of(rule: Rule) -> set[str]:
    """The fact names a rule's population (or monitoring contexts) use, ``any`` included."""
    out: set[str] = set()
    facts = list(rule.population)
    if rule.trigger and rule.trigger[0] == "monitoring-gap":
        for context in rule.trigger[1].get("contexts") or []:
            for term in context.get("when") or []:
                facts.append((term, None) if isinstance(term, str) else next(iter(term.items())))
    for fact in facts:
        out |= _fact_names(fact)
    return out


def _anchor(rule: Rule, k: Knowledge) -> str | None:
    return k.measures[rule.measure].anchor if rule.measure else None


def _trigger(rule: Rule) -> str | None:
    return rule.trigger[0] if rule.trigger else None


def _suggestion(rule: Rule) -> dict[str, Any]:
    s = rule.suggestion or {}
    return s if s.get("kind") == "medication" else {}


def _weight_based(rule: Rule) -> bool:
    return "dose_per_kg" in _suggestion(rule)


def _has(*keys: str) -> Needs:
    return lambda rule, k: any(key in _suggestion(rule) for key in keys)


def _fact(*names: str) -> Needs:
    return lambda rule, k: bool(facts_of(rule) & set(names))


def _is(trigger: str) -> Needs:
    return lambda rule, k: _trigger(rule) == trigger


def _delta(rule: Rule, k: Knowledge) -> bool:
    """A rule that names suspect results: mg-data-quality, and those still using them."""
    return _trigger(rule) == "data-quality" or rule.id in k.delta.still_used_by


def _measured(rule: Rule, k: Knowledge) -> bool:
    """A rule whose finding carries the Mg value it used (a suspect one for data-quality)."""
    return rule.measure is not None or _trigger(rule) in ("mg-trend", "data-quality")


_P = Placeholder
PLACEHOLDERS: dict[str, Placeholder] = {
    p.name: p
    for p in (
        _P("value", "the Mg value the rule used (a trend: the latest), in the unit shown first",
           _measured),
        _P("value_both", "the same value in both units: 1.5 mg/dL (0.62 mmol/L)", _measured),
        _P("time", "when that value was sampled",
           lambda r, k: _measured(r, k) or _trigger(r) == "data-quality"),
        _P("threshold", "the bound that fired, in the unit the value is shown in",
           lambda r, k: bool(r.thresholds)),
        _P("measure", "the measure (evidence.md §2), e.g. earliest serum Mg 12 h before to "
           "24 h after admission", lambda r, k: r.measure is not None),
        _P("n", "how many values (stay median, trend)",
           lambda r, k: (r.measure is not None and k.measures[r.measure].pick == "median")
           or _trigger(r) == "mg-trend"),
        _P("values", "the trend's values with their times", _is("mg-trend")),
        _P("moved", "how far the trend's latest value is from its earlier extreme",
           _is("mg-trend")),
        _P("extreme", "the trend's earlier highest (falling) or lowest (rising) value",
           _is("mg-trend")),
        _P("change", "the trend's drop or rise that fired; a suspect result's fall or rise",
           lambda r, k: _trigger(r) in ("mg-trend", "data-quality")),
        _P("limit", "the trend's bound on the latest value; the delta check's limit",
           lambda r, k: _trigger(r) in ("mg-trend", "data-quality")),
        _P("test", "the test of a suspect or spurious result", _is("data-quality")),
        _P("previous", "the result a suspect one was compared with", _is("data-quality")),
        _P("draw_window", "how close in time one draw's samples are", _is("data-quality")),
        _P("partner", "the other results of a diluted draw", _is("data-quality")),
        _P("items", "the spurious results and their refuting repeats", _is("data-quality")),
        _P("spurious_results", "the results excluded as spurious", _is("data-quality")),
        _P("refuted_by", "the repeat that refuted a suspect result (in parts.item)",
           _is("data-quality")),
        _P("band", "the band of the value (bands: in the rule file)", lambda r, k: bool(r.bands)),
        _P("band_effect", "the band's effect size (evidence.effects)", lambda r, k: bool(r.bands)),
        _P("admission", "admission time",
           lambda r, k: "encounter" in facts_of(r) or _anchor(r, k) in ("admission", "encounter")),
        _P("icu_start", "start of the ICU stay",
           lambda r, k: "icu-stay" in facts_of(r) or _anchor(r, k) == "icu-start"),
        _P("procedure", "the procedure's name", _fact("procedure", "aki")),
        _P("procedure_time", "the end (else start) of the procedure",
           lambda r, k: bool(facts_of(r) & {"procedure", "aki"})),
        _P("condition", "the diagnoses that made the rule apply", _fact("condition")),
        _P("drugs", "the medications that made the rule apply", _fact("medication")),
        _P("markers", "decompensation markers found (show_conditions)",
           lambda r, k: bool(r.show_conditions)),
        _P("age", "age in years", _fact("age")),
        _P("window", "the monitoring window, the trend's window, the delta check's window",
           lambda r, k: _trigger(r) in ("monitoring-gap", "mg-trend", "data-quality")),
        _P("since", "start of the monitoring window", lambda r, k: _trigger(r) == "monitoring-gap"),
        _P("monitoring_context", "why monitoring is advised",
           lambda r, k: _trigger(r) == "monitoring-gap"),
        _P("dose", "magnesium sulfate per administration", _has("dose", "dose_per_kg"),
           _weight_based),
        _P("dose_meq", "the same dose in mEq", _has("dose_meq")),
        _P("volume", "diluent volume", _has("diluent")),
        _P("fluid", "diluent", _has("diluent")),
        _P("over", "how long each dose runs", _has("rate", "dose_per_kg"), _weight_based),
        _P("days", "how many days", _has("days")),
        _P("rate_limit", "the label's maximum rate", _has("max_rate")),
        _P("dose_per_kg", "dose per kg", _has("dose_per_kg")),
        _P("min_bolus", "shortest bolus time", _has("min_bolus")),
        _P("infusion", "maintenance infusion for this weight", _has("infusion_per_kg"),
           _weight_based),
        _P("infusion_per_kg", "maintenance infusion per kg", _has("infusion_per_kg")),
        _P("weight", "the weight the dose was computed from", _has("dose_per_kg"), _weight_based),
        _P("weight_range", "the weights the dose applies to", _has("weight")),
        _P("target", "the Mg target", _has("target")),
        _P("dose_range", "the dose range the source reports", _has("dose_range")),
        _P("reason", "why no dose or order was given, why a result was not used or is suspect",
           lambda r, k: bool(_suggestion(r)) or _delta(r, k)),
        _P("result", "the result as sent", lambda r, k: _trigger(r) == "data-quality"),
        _P("specimen", "what says a magnesium result is not serum (its specimen or name, as sent)",
           lambda r, k: _trigger(r) == "data-quality"),
        _P("plausible", "the plausible range of a magnesium result (units.yaml)",
           lambda r, k: _trigger(r) == "data-quality"),
        _P("reasons", "the safety conditions that hold",
           lambda r, k: _trigger(r) == "mg-order-unsafe" or bool(_suggestion(r))
           or r.advises_repletion),
        _P("orders", "the magnesium orders among the draft orders",
           lambda r, k: _trigger(r) == "mg-order-unsafe"),
        _P("instead", "what to do instead when the safety gate holds",
           lambda r, k: bool(_suggestion(r)) or r.advises_repletion
           or _trigger(r) == "mg-order-unsafe"),
        _P("stage", "KDIGO stage", lambda r, k: _trigger(r) == "kdigo"),
        _P("creatinine", "the latest creatinine", lambda r, k: _trigger(r) == "kdigo"),
        _P("creatinine_time", "when it was sampled", lambda r, k: _trigger(r) == "kdigo"),
        _P("baseline", "the KDIGO baseline (value and time, or the median)",
           lambda r, k: _trigger(r) == "kdigo"),
        _P("criterion", "the KDIGO criterion met", lambda r, k: _trigger(r) == "kdigo"),
        _P("peak", "the highest creatinine of the episode", lambda r, k: _trigger(r) == "kdigo"),
        _P("nhs_stage", "NHS England stage", lambda r, k: _trigger(r) == "kdigo"),
        _P("exclusions", "the trial's exclusions",
           lambda r, k: bool(r.evidence.extra.get("trial_exclusions"))),
        _P("reference_range", "the reference range (and the lab's own, when sent)",
           lambda r, k: True),
    )
}  # fmt: skip

# Placeholders of the safety gate's condition texts, by the fact of the condition.
GATE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "latest-lab": frozenset({"value", "threshold"}),
    "latest-suspect": frozenset({"value"}),
    "egfr": frozenset({"egfr", "threshold"}),
    "weight": frozenset({"value", "threshold"}),
    "age": frozenset({"age", "threshold"}),
    "no-lab-within": frozenset({"window"}),
    "aki": frozenset({"stage", "threshold"}),
    "condition": frozenset({"condition"}),
    "any": frozenset({"condition"}),
    "magnesium-active-or-ordered": frozenset({"drugs"}),
}

# Template fields of a rule's text and the variants each may have (the renderer picks the
# first that applies, in this order).
FIELDS = ("summary", "context", "action", "regimen", "label", "evidence_line")
VARIANTS = (
    "withheld",
    "gated",
    "no_dose",
    "obstetric",
    "spurious",
    "dilution",
    "jump",
    "suspect",
    "planned",
    "no_markers",
    "peak",
    "in_range_low",
    "critical",
    "warning",
    "low",
    "high",
    "default",
)
# Templates shown without a patient-specific dose: no ``computed`` placeholder in them.
WITHOUT_DOSE = frozenset({"regimen", "no_dose", "withheld", "gated"})


def unavailable(name: str, rule: Rule, knowledge: Knowledge) -> str | None:
    """Why a rule cannot declare this placeholder, or None when it can."""
    if name in rule.quantities:
        return None
    spec = PLACEHOLDERS.get(name)
    if spec is None:
        known = sorted([*PLACEHOLDERS, *rule.quantities])
        return f"unknown placeholder {{{name}}} (known: {', '.join(known)})"
    if not spec.needs(rule, knowledge):
        return f"{{{name}}} ({spec.doc}) is not something this rule computes"
    return None
