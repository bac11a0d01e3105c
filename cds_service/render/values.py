"""What each placeholder of a finding's text shows (rules/placeholders.py names them).

Every number comes from the finding (the values the rule used, its computed dose) or
from the rule file that holds it, formatted by ``render/format.py``; nothing is restated.
A placeholder that cannot be filled raises ``MissingValue`` (the loader's checks make
that a bug: the renderer then says the value is not recorded instead of guessing).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cds_service.clinical import model as m
from cds_service.clinical.delta_checks import DILUTION, fall_pct
from cds_service.render.format import QUANTITY_OF_KIND, trimmed
from cds_service.rules.durations import parse_duration
from cds_service.rules.facts import parse_bounds
from cds_service.rules.model import Advice, Bounds, Finding, NamedQuantity, Rule, ValueUsed

if TYPE_CHECKING:
    from cds_service.render.text import TextRenderer


class MissingValue(LookupError):
    """A placeholder has no value for this finding."""


def _name_in_script(text: str, locale: str) -> bool:
    """Whether a name from the data is written in the locale's script (CJK for zh)."""
    if locale.startswith("zh"):
        return any("\u4e00" <= ch <= "\u9fff" for ch in text)
    return True


# SNOMED CT fully specified names end in a semantic tag a clinician does not say aloud:
# "Coronary artery bypass grafting (procedure)".
_SEMANTIC_TAG = re.compile(
    r"\s+\((?:procedure|disorder|finding|substance|product|situation|observable entity|"
    r"regime/therapy|morphologic abnormality|clinical drug|medicinal product|event)\)$"
)


def concept_name(concept: m.Concept, r: TextRenderer) -> str:
    """A procedure, drug or diagnosis by name: as sent when readable in the locale, else the
    locale's name of its value set (``text/<locale>.yaml`` ``concepts:``), else its code."""
    sent = [concept.text, *(c.display for c in concept.codings)]
    for name in sent:
        if name and _name_in_script(name, r.locale):
            return _SEMANTIC_TAG.sub("", name)
    vs = r.k.valuesets
    names: dict[str, str] = r.t.get("concepts") or {}
    member = vs.membership(concept)
    for set_id, name in names.items():
        if set_id in member.code or set_id in member.text:
            return name
    for c in concept.codings:
        for value_set in vs.sets.values():
            display = value_set.displays.get((c.system, c.code))
            if display and _name_in_script(display, r.locale):
                return _SEMANTIC_TAG.sub("", display)
    return concept.codings[0].code if concept.codings else r.t["common"]["unnamed"]


class FindingValues(Mapping[str, str]):
    """The placeholder values of one finding, computed on first use."""

    def __init__(
        self,
        r: TextRenderer,
        advice: Advice,
        finding: Finding,
        conditions: tuple[m.Condition, ...],
    ) -> None:
        self.r, self.advice, self.f = r, advice, finding
        self.rule: Rule = r.k.rule(finding.rule_id)
        self.c = finding.context
        self.conditions = conditions
        self.fmt = r.fmt
        self._cache: dict[str, str] = {}

    # Mapping protocol: str.format_map asks for each name it meets.
    def __getitem__(self, name: str) -> str:
        if name not in self._cache:
            self._cache[name] = self._compute(name)
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cache)

    def __len__(self) -> int:
        return len(self._cache)

    def _compute(self, name: str) -> str:
        if name in self.rule.quantities:
            return self.fmt.named(self._quantity_of(name), self.rule.quantities[name])
        fn: Callable[[], str | None] | None = getattr(self, f"p_{name}", None)
        value = fn() if fn is not None else None
        if value is None:
            raise MissingValue(name)
        return value

    def _quantity_of(self, name: str) -> str | None:
        unit = self.rule.quantities[name].unit
        for qname, q in self.r.k.units.quantities.items():
            if unit in q.preferred:
                return qname
        return None

    @property
    def _value(self) -> ValueUsed | None:
        if not self.f.values:
            return None
        return max(self.f.values, key=lambda v: v.time)

    @property
    def _suggestion(self) -> dict[str, Any]:
        return self.rule.suggestion or {}

    # --- the value the rule used -----------------------------------------------------

    def p_value(self) -> str | None:
        v = self._value
        return None if v is None else self.fmt.lab(v, both=False)

    def p_value_both(self) -> str | None:
        v = self._value
        return None if v is None else self.fmt.lab(v)

    def p_time(self) -> str | None:
        if self.c.excluded is not None:
            t = self.c.excluded.time
            return self.fmt.time(t) if t else self.r.t["common"]["no_time"]
        v = self._value
        return None if v is None else self.fmt.time(v.time)

    def _value_unit(self) -> str:
        v = self._value
        quantity = "magnesium"
        return self.fmt.shown_unit(quantity, v.original_unit if v else None)

    def p_threshold(self) -> str | None:
        b = self.f.threshold
        return None if b is None else self.fmt.bounds("magnesium", b, self._value_unit())

    def p_measure(self) -> str | None:
        if self.rule.measure is None:
            return None
        measure = self.r.k.measures[self.rule.measure]
        template = self.r.t["measures"][measure.id]
        vals: dict[str, str] = {}
        if measure.window is not None:
            vals["before"] = self.fmt.duration(-measure.window.start)
            vals["after"] = self.fmt.duration(measure.window.end)
        return self.r.fill(template, vals)

    def p_n(self) -> str | None:
        return None if self.c.n is None else str(self.c.n)

    def p_values(self) -> str | None:
        if not self.f.values:
            return None
        return self.fmt.join(
            self.fmt.after(self.fmt.lab(v, both=False), self.fmt.time(v.time))
            for v in self.f.values
        )

    def _extreme(self) -> ValueUsed | None:
        """The earlier value a trend moved from: the highest (falling) or lowest (rising)."""
        earlier = sorted(self.f.values, key=lambda v: v.time)[:-1]
        if not earlier or self.c.trend not in ("falling", "rising"):
            return None
        pick = max if self.c.trend == "falling" else min
        return pick(earlier, key=lambda v: v.value)

    def p_extreme(self) -> str | None:
        extreme = self._extreme()
        return None if extreme is None else self.fmt.lab(extreme, both=False)

    def p_moved(self) -> str | None:
        extreme = self._extreme()
        if extreme is None:
            return None
        latest = max(self.f.values, key=lambda v: v.time)
        return self.fmt.canonical_value("magnesium", abs(latest.value - extreme.value), both=False)

    def _trend(self) -> tuple[Bounds, Bounds] | None:
        args = self.rule.trigger_args
        if self.c.trend == "falling":
            return args.falling_latest, args.falling_drop
        if self.c.trend == "rising":
            return args.rising_latest, args.rising_rise
        return None

    # --- suspect results (delta checks) ------------------------------------------------------

    def _result(self, r: m.LabResult) -> dict[str, str]:
        """``{test} {value} ({time})`` of one result of a delta check."""
        tests: dict[str, str] = self.r.t["common"]["tests"]
        return {
            "test": tests.get(r.kind, r.kind),
            "value": self.fmt.lab(r, both=False),
            "time": self.fmt.time(r.time),
        }

    def _stated(self, r: m.LabResult) -> str:
        vals = self._result(r)
        return self.fmt.after(vals["value"], vals["time"])

    def p_test(self) -> str | None:
        r = self.c.suspect or (self.c.spurious[0].suspect.result if self.c.spurious else None)
        return None if r is None else self._result(r)["test"]

    def p_previous(self) -> str | None:
        d = self.c.delta
        return None if d is None else self._stated(d.previous)

    def p_draw_window(self) -> str | None:
        return self.fmt.duration(self.r.k.delta.same_draw) if self.c.delta else None

    def p_partner(self) -> str | None:
        d = self.c.delta
        if d is None or not d.draw:
            return None
        template = self.r.rule_text(self.rule)["parts"]["partner"]
        parts = []
        for r, before in d.draw:
            vals = {**self._result(r), "change": self._percent(fall_pct(r, before))}
            vals["previous"] = self._stated(before)
            parts.append(self.r.fill(template, vals))
        return self.fmt.join(parts, "clause")

    def p_items(self) -> str | None:
        if not self.c.spurious:
            return None
        template = self.r.rule_text(self.rule)["parts"]["item"]
        limit = self._percent(self.r.k.delta.refute_pct)
        return self.fmt.join(
            (
                self.r.fill(
                    template,
                    {
                        **self._result(n.suspect.result),
                        "refuted_by": self._stated(n.by),
                        "previous": self._stated(n.suspect.previous),
                        "limit": limit,
                    },
                )
                for n in self.c.spurious
            ),
            "clause",
        )

    def p_spurious_results(self) -> str | None:
        if not self.c.spurious:
            return None
        return self.fmt.join(
            (
                f"{self._result(n.suspect.result)['test']} {self._stated(n.suspect.result)}"
                for n in self.c.spurious
            ),
            "clause",
        )

    def _percent(self, x: float) -> str:
        return f"{trimmed(x, 0)}{self.r.t['format']['percent']}"

    def p_change(self) -> str | None:
        d = self.c.delta
        if d is not None:
            if d.reason == DILUTION:
                return self._percent(fall_pct(d.result, d.previous))
            rise = d.result.value - d.previous.value
            return self.fmt.canonical_value("magnesium", rise, both=False)
        found = self._trend()
        if found is None:
            return None
        b = found[1]
        value = b.ge if b.ge is not None else b.gt
        assert value is not None
        return self.fmt.named("magnesium", NamedQuantity(b.unit, value=value))

    def p_limit(self) -> str | None:
        d = self.c.delta
        if d is not None:
            params = self.r.k.delta
            if d.reason == DILUTION:
                return self._percent(params.fall_pct)
            return self.fmt.canonical_value("magnesium", params.rise, both=False)
        found = self._trend()
        return None if found is None else self.fmt.bounds("magnesium", found[0])

    def p_band(self) -> str | None:
        b = self.c.band
        return None if b is None else self.fmt.bounds("magnesium", b.bounds, self._value_unit())

    def p_band_effect(self) -> str | None:
        b = self.c.band
        if b is None or b.effect is None:
            return None
        return self.r.effect_text(self.rule, int(b.effect))

    # --- context -----------------------------------------------------------------------

    def p_admission(self) -> str | None:
        enc = self.c.encounter
        return None if enc is None or enc.start is None else self.fmt.time(enc.start)

    def p_icu_start(self) -> str | None:
        return None if self.c.icu is None else self.fmt.time(self.c.icu.start)

    def p_procedure(self) -> str | None:
        p = self.c.procedure
        return None if p is None else concept_name(p.concept, self.r)

    def p_procedure_time(self) -> str | None:
        p = self.c.procedure
        if p is None:
            return None
        when = p.end or p.start
        return self.fmt.time(when) if when else self.r.t["common"]["planned"]

    def p_condition(self) -> str | None:
        if not self.c.conditions:
            return None
        return self.fmt.join(sorted({concept_name(x.concept, self.r) for x in self.c.conditions}))

    def p_drugs(self) -> str | None:
        if not self.c.medications:
            return None
        return self.fmt.join(
            sorted({concept_name(x.concept, self.r) for x, _ in self.c.medications})
        )

    def p_markers(self) -> str | None:
        vs = self.r.k.valuesets
        found = {
            concept_name(cond.concept, self.r)
            for cond in self.conditions
            if vs.concept_match(cond.concept, self.rule.show_conditions)
        }
        return self.fmt.join(sorted(found)) if found else None

    def p_age(self) -> str | None:
        return None if self.c.age is None else str(self.c.age)

    def p_window(self) -> str | None:
        d = self.c.delta
        if d is not None:
            params = self.r.k.delta
            return self.fmt.duration(
                params.fall_within if d.reason == DILUTION else params.jump_within
            )
        return None if self.c.window is None else self.fmt.duration(self.c.window)

    def p_since(self) -> str | None:
        return None if self.c.since is None else self.fmt.time(self.c.since)

    def p_monitoring_context(self) -> str | None:
        key = self.c.monitoring_context
        if key is None:
            return None
        template = self.r.rule_text(self.rule)["contexts"][key]
        return self.r.fill(template, self)

    # --- the order -----------------------------------------------------------------------

    def p_dose(self) -> str | None:
        if self.f.dose is not None:
            return self.fmt.amount(self.f.dose.grams, "g")
        dose = self._suggestion.get("dose")
        return None if dose is None else self.fmt.amount(dose["amount"], dose["unit"])

    def p_dose_meq(self) -> str | None:
        meq = self._suggestion.get("dose_meq")
        return None if meq is None else self.fmt.amount(meq, "mEq")

    def p_volume(self) -> str | None:
        d = self._suggestion.get("diluent")
        return None if d is None else self.fmt.amount(d["volume_ml"], "mL")

    def p_fluid(self) -> str | None:
        d = self._suggestion.get("diluent")
        if d is None:
            return None
        fluids: dict[str, str] = self.r.t.get("fluids") or {}
        return fluids.get(str(d["fluid"]), str(d["fluid"]))

    def p_over(self) -> str | None:
        if self.f.dose is not None and self.f.dose.over is not None:
            return self.fmt.duration(self.f.dose.over)
        rate = self._suggestion.get("rate")
        return None if rate is None else self.fmt.duration(parse_duration(rate["over"]))

    def p_days(self) -> str | None:
        days = self._suggestion.get("days")
        return None if days is None else self.fmt.days(int(days))

    def p_rate_limit(self) -> str | None:
        r = self._suggestion.get("max_rate")
        return None if r is None else self.fmt.amount(r["amount"], r["unit"])

    def p_dose_per_kg(self) -> str | None:
        d = self._suggestion.get("dose_per_kg")
        return None if d is None else self.fmt.amount(d["amount"], d["unit"])

    def p_min_bolus(self) -> str | None:
        d = self._suggestion.get("min_bolus")
        return None if d is None else self.fmt.duration(parse_duration(d))

    def p_infusion(self) -> str | None:
        dose = self.f.dose
        if dose is None or dose.infusion_g_per_h is None:
            return None
        return self.fmt.amount(dose.infusion_g_per_h, "g/h")

    def p_infusion_per_kg(self) -> str | None:
        d = self._suggestion.get("infusion_per_kg")
        return None if d is None else self.fmt.amount(d["amount"], d["unit"])

    def p_weight(self) -> str | None:
        if self.f.dose is not None and self.f.dose.weight_kg is not None:
            return f"{trimmed(self.f.dose.weight_kg, 1)} kg"
        w = self.c.weight
        return None if w is None else self.fmt.lab(w, both=False)

    def p_weight_range(self) -> str | None:
        w = self._suggestion.get("weight")
        if w is None:
            return None
        b = parse_bounds({k: v for k, v in w.items() if k != "within"}, "", None, None)
        low, high = b.ge if b.ge is not None else b.gt, b.le if b.le is not None else b.lt
        if low is None or high is None:
            return self.fmt.bounds("weight", b, b.unit)
        return self.fmt.named("weight", NamedQuantity(b.unit, low=low, high=high))

    def p_target(self) -> str | None:
        t = self._suggestion.get("target")
        if t is None:
            return None
        b = parse_bounds(t, "", None, None)
        return self.fmt.bounds("magnesium", b)

    def p_dose_range(self) -> str | None:
        d = self._suggestion.get("dose_range")
        if d is None:
            return None
        return self.fmt.named(None, NamedQuantity(d["unit"], low=d["low"], high=d["high"]))

    def p_reason(self) -> str | None:
        if self.c.delta is not None:
            return str(self.r.t["common"]["suspect"][self.c.delta.reason])
        ex = self.c.excluded
        if ex is not None:
            reasons = self.r.rule_text(self.rule).get("reasons") or {}
            template = reasons.get(ex.reason_code)
            return self.r.fill(template, self) if template else ex.reason
        code = self.f.no_dose_reason
        if code is None:
            return None
        return self.r.fill(self.r.t["common"]["no_dose_reasons"][code], self)

    def p_specimen(self) -> str | None:
        ex = self.c.excluded
        return ex.specimen if ex is not None else None

    def p_result(self) -> str | None:
        ex = self.c.excluded
        if ex is None:
            return None
        sent = " ".join(x for x in (ex.value_text, ex.unit) if x)
        return sent or self.r.t["common"]["no_value"]

    def p_reasons(self) -> str | None:
        hits = [h for h in self.advice.gate if not self.c.reasons or h.id in self.c.reasons]
        return self.r.gate_reasons(hits) if hits else None

    def p_plausible(self) -> str | None:
        b = self.r.k.plausible
        low, high = b.ge if b.ge is not None else b.gt, b.le if b.le is not None else b.lt
        if low is None or high is None:
            return self.fmt.bounds("magnesium", b)
        return self.fmt.named("magnesium", NamedQuantity(b.unit, low=low, high=high))

    def p_orders(self) -> str | None:
        if not self.c.orders:
            return None
        return self.fmt.join(sorted({concept_name(o.concept, self.r) for o in self.c.orders}))

    def p_instead(self) -> str | None:
        return self.r.instead()

    # --- AKI -------------------------------------------------------------------------------

    def p_stage(self) -> str | None:
        aki = self.c.aki
        return None if aki is None else str(aki.stage)

    def p_nhs_stage(self) -> str | None:
        aki = self.c.aki
        return None if aki is None else str(aki.nhs_stage)

    def p_creatinine(self) -> str | None:
        aki = self.c.aki
        return None if aki is None or aki.current is None else self.fmt.lab(aki.current)

    def p_creatinine_time(self) -> str | None:
        aki = self.c.aki
        return None if aki is None or aki.current is None else self.fmt.time(aki.current.time)

    def p_baseline(self) -> str | None:
        aki = self.c.aki
        if aki is None:
            return None
        texts = self.r.t["aki"]
        if aki.baseline is None:
            return str(texts["baseline_none"])
        crit = self.r.k.aki["kdigo"]
        if aki.baseline_result is not None:
            return self.r.fill(
                texts["baseline_lowest"],
                {
                    "value": self.fmt.lab(aki.baseline_result),
                    "time": self.fmt.time(aki.baseline_result.time),
                    "window": self.fmt.duration(parse_duration(crit["baseline_recent_window"])),
                },
            )
        hist = crit["baseline_historic_window"]
        return self.r.fill(
            texts["baseline_median"],
            {
                "value": self.fmt.canonical_value("creatinine", aki.baseline),
                "start": str(parse_duration(hist["start"]).days),
                "end": str(parse_duration(hist["end"]).days),
            },
        )

    def p_criterion(self) -> str | None:
        aki = self.c.aki
        if aki is None or not aki.met:
            return None
        texts = self.r.t["aki"]["criteria"]
        crit = self.r.k.aki["kdigo"]
        parts = []
        for code in aki.met:
            vals: dict[str, str] = {}
            if code == "ratio" and aki.ratio is not None:
                vals["ratio"] = f"{aki.ratio:.1f}"
            elif code == "rise":
                rise = crit["absolute_rise"]
                vals["rise"] = self.fmt.canonical_value("creatinine", aki.rise_48h or 0.0)
                vals["minimum"] = self.fmt.named(
                    "creatinine", NamedQuantity(rise["unit"], value=rise["value"])
                )
                vals["within"] = self.fmt.duration(parse_duration(rise["within"]))
                if aki.rise_from is not None:
                    vals["from"] = self.fmt.lab(aki.rise_from, both=False)
                    vals["from_time"] = self.fmt.time(aki.rise_from.time)
            elif code == "absolute":
                a = crit["stage3_absolute"]
                vals["absolute"] = self.fmt.named(
                    "creatinine", NamedQuantity(a["unit"], value=a["value"])
                )
            elif code == "dialysis":
                proc = aki.dialysis
                vals["procedure"] = (
                    concept_name(proc.concept, self.r)
                    if proc is not None
                    else self.r.t["common"]["unnamed"]
                )
                when = (proc.start or proc.end) if proc is not None else None
                vals["time"] = self.fmt.time(when) if when else self.r.t["common"]["no_time"]
            parts.append(self.r.fill(texts[code], vals))
        criteria = self.fmt.join(parts, "clause")
        staged = aki.peak  # the result that gave the stage; name it when it is not the latest
        if staged is not None and aki.current is not None and staged.time != aki.current.time:
            return self.r.fill(
                self.r.t["aki"]["met_by"],
                {"value": self.fmt.lab(staged, both=False), "time": self.fmt.time(staged.time),
                 "criteria": criteria},
            )  # fmt: skip
        return criteria

    def p_peak(self) -> str | None:
        """The episode's highest creatinine, when it is not the latest one (evidence.md §3)."""
        aki = self.c.aki
        peak = aki.episode_peak if aki is not None else None
        if aki is None or peak is None or aki.current is None or peak.value <= aki.current.value:
            return None
        return self.fmt.after(self.fmt.lab(peak), self.fmt.time(peak.time))

    # --- evidence and ranges -------------------------------------------------------------

    def p_exclusions(self) -> str | None:
        found = self.r.exclusions(self.rule)
        return self.fmt.join(found, "clause") if found else None

    def p_reference_range(self) -> str | None:
        low, high = self.r.k.reference_range
        text = self.fmt.named("magnesium", NamedQuantity("mg/dL", low=low, high=high), both=False)
        lab = next((self.fmt.lab_range(v) for v in self.f.values if v.reference_range), None)
        if lab and lab != text:  # the laboratory's own range, when it differs from ours
            label = self.r.t["common"]["lab_range"]
            text = self.fmt.join([text, f"{label}{self.fmt.f['colon']}{lab}"], "clause")
        return text


def gate_values(r: TextRenderer, context: Any, params: Any) -> dict[str, str]:
    """The placeholders of a safety-gate condition's text (see GATE_PLACEHOLDERS)."""
    fmt = r.fmt
    vals: dict[str, str] = {}
    if context.lab is not None:
        vals["value"] = fmt.lab(context.lab, both=False)
    if context.egfr is not None:
        e = context.egfr
        number = f"{e.value:.0f}"
        if e.computed and e.creatinine is not None:
            vals["egfr"] = r.fill(
                r.t["common"]["egfr_computed"],
                {"egfr": number, "creatinine": fmt.lab(e.creatinine, both=False)},
            )
        else:
            vals["egfr"] = r.fill(r.t["common"]["egfr_reported"], {"egfr": number})
    if context.window is not None:
        vals["window"] = fmt.duration(context.window)
    if context.aki is not None:
        vals["stage"] = str(context.aki.stage)
    if context.age is not None:
        vals["age"] = str(context.age)
    if context.conditions:
        vals["condition"] = fmt.join(
            sorted({concept_name(c.concept, r) for c in context.conditions})
        )
    if context.medications:
        vals["drugs"] = fmt.join(
            sorted({concept_name(x.concept, r) for x, _ in context.medications})
        )
    bounds = getattr(params, "bounds", None) if params is not None else None
    if isinstance(params, Bounds):
        bounds = params
    if bounds is not None:  # the quantity by the lab kind: mg/dL is a unit of several
        kind = getattr(params, "kind", None) or (context.lab.kind if context.lab else None)
        vals["threshold"] = fmt.bounds_any(bounds, QUANTITY_OF_KIND.get(kind or ""))
    stage_ge = getattr(params, "stage_ge", None)
    if stage_ge is not None:
        vals["threshold"] = str(stage_ge)
    return vals


def when(t: datetime | None, r: TextRenderer) -> str:
    """A time, or the locale's "time not recorded"."""
    return r.fmt.time(t) if t else r.t["common"]["no_time"]
