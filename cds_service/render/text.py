"""Advice → localised text (summary under 140 characters, markdown detail, labels)."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cds_service.clinical import model as m
from cds_service.rules.durations import describe_duration
from cds_service.rules.model import Advice, Finding, Knowledge, Rule, ValueUsed

SUMMARY_LIMIT = 139
MG_PER_MMOL = "magnesium"


class _Safe(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "n/a"


def fmt_num(x: float, places: int = 2) -> str:
    """A number with at most ``places`` decimals, trailing zeros removed."""
    text = f"{x:.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


def fmt_time(t: datetime | None) -> str:
    """A timestamp for card text (minute precision, with its zone)."""
    if t is None:
        return "n/a"
    return t.strftime("%Y-%m-%d %H:%M") + (f" {t.tzname()}" if t.tzname() else "")


def _concept_name(concept: m.Concept) -> str:
    if concept.text:
        return concept.text
    for c in concept.codings:
        if c.display:
            return c.display
    return concept.codings[0].code if concept.codings else "n/a"


def _side(f: Finding) -> str:
    """The text variant of a finding: its direction, else the side of the bound that fired.

    A ``monitoring`` rule with low and high thresholds (``reference-range``) must say
    "below" for a low value and "above" for a high one.
    """
    if f.direction in ("low", "high") or f.threshold is None:
        return f.direction
    return "low" if f.threshold.lt is not None or f.threshold.le is not None else "high"


@dataclass(frozen=True)
class Rendered:
    """The text of one advice: summary, markdown detail, suggestion labels."""

    summary: str
    detail: str
    medication_label: str | None
    lab_label: str | None


class TextRenderer:
    """Renders Advice for one locale from ``mappings/text/<locale>.yaml``."""

    def __init__(self, knowledge: Knowledge, locale: str) -> None:
        self.k = knowledge
        self.locale = locale if locale in knowledge.texts else "en"
        self.t = knowledge.texts[self.locale]

    def _fill(self, template: Any, values: dict[str, Any]) -> str:
        return string.Formatter().vformat(str(template), (), _Safe(values))

    def _pick(self, node: Any, direction: str, indicator: str) -> Any:
        if isinstance(node, dict):
            for key in (direction, indicator, "low" if direction == "low" else "high"):
                if key in node:
                    return node[key]
            return next(iter(node.values()))
        return node

    def value_text(self, v: ValueUsed) -> dict[str, str]:
        """Placeholders describing a Mg value in the received unit, mg/dL and mmol/L."""
        units = self.k.units
        quantity = units.find(v.original_unit) if v.original_unit else None
        comp = v.comparator or ""
        out = {
            "value": f"{comp}{fmt_num(v.original_value)} {v.original_unit}".strip(),
            "time": fmt_time(v.time),
            "unit": v.original_unit,
        }
        if v.kind in (m.SERUM_MG, m.IONIZED_MG):
            out["value_mg_dl"] = comp + fmt_num(v.value)
            out["value_mmol_l"] = comp + fmt_num(
                units[MG_PER_MMOL].from_canonical(v.value, "mmol/L")
            )
            mg_quantity = units[MG_PER_MMOL]
            received_mg_dl = mg_quantity.preferred.get(v.original_unit.strip()) == "mg/dL"
            out["value_converted"] = (
                f"{out['value_mmol_l']} mmol/L" if received_mg_dl else f"{out['value_mg_dl']} mg/dL"
            )
            if v.corrected_from is not None:
                out["value"] = f"{fmt_num(v.corrected_from)} mg/dL → {fmt_num(v.value)} mg/dL"
        elif quantity is not None:
            out["value"] = f"{comp}{fmt_num(v.original_value)} {v.original_unit}"
        return out

    def placeholders(self, f: Finding) -> dict[str, Any]:
        """Every placeholder value a finding can fill."""
        rule = self.k.rule(f.rule_id)
        c = f.context
        vals: dict[str, Any] = {"rules": f.rule_id}
        if f.values:
            vals.update(self.value_text(f.values[-1]))
            vals["values"] = ", ".join(
                f"{self.value_text(v)['value']} ({fmt_time(v.time)})" for v in f.values
            )
        if rule.measure:
            vals["measure"] = self.k.measures[rule.measure].title
        enc_start = c["encounter"].start if "encounter" in c else None
        vals["admission"] = fmt_time(enc_start) if enc_start else "n/a"
        if "icu" in c:
            vals["icu_start"] = fmt_time(c["icu"].start)
        if "procedure" in c:
            proc: m.Procedure = c["procedure"]
            vals["procedure"] = _concept_name(proc.concept)
            vals["surgery_end"] = fmt_time(proc.end or proc.start)
        if "conditions" in c:
            vals["condition"] = ", ".join(
                sorted({_concept_name(x.concept) for x in c["conditions"]})
            )
        if "medications" in c:
            vals["drugs"] = ", ".join(
                sorted({_concept_name(x.concept) for x, _ in c["medications"]})
            )
        if "aki" in c:
            aki = c["aki"]
            vals["stage"] = aki.stage
            vals["baseline"] = (
                f"{fmt_num(aki.baseline)} mg/dL" if aki.baseline is not None else "n/a"
            )
            vals["nhs_stage"] = aki.nhs_stage
            # the creatinine that met the criteria (the peak of the episode), then the current one
            shown = [r for r in (aki.peak, aki.current) if r is not None]
            shown = [r for i, r in enumerate(shown) if r not in shown[:i]]
            if shown:
                vals["value"] = f"{fmt_num(shown[0].value)} mg/dL"
                vals["values"] = ", ".join(
                    f"{fmt_num(r.value)} mg/dL ({fmt_time(r.time)})" for r in shown
                )
        if f.band:
            vals["band"] = f.band + (f" — {c['band_effect']}" if c.get("band_effect") else "")
        if "measure_n" in c:
            vals["n"] = c["measure_n"]
        if "n" in c:
            vals["n"] = c["n"]
        if "trend" in c:
            vals["trend"] = c["trend"]
        if isinstance(c.get("window"), timedelta):
            vals["window"] = describe_duration(c["window"])
        elif rule.trigger and "window" in rule.trigger[1]:
            from cds_service.rules.durations import parse_duration

            vals["window"] = describe_duration(parse_duration(rule.trigger[1]["window"]))
        if "since" in c:
            vals["since"] = fmt_time(c["since"])
        if "monitoring_context" in c:
            contexts = self.t["rules"][rule.text_key].get("contexts", {})
            vals["monitoring_context"] = contexts.get(
                c["monitoring_context"], c["monitoring_context"]
            )
        if "age" in c:
            vals["age"] = c["age"]
        if "excluded" in c:
            ex: m.Excluded = c["excluded"]
            reasons = self.t["rules"][rule.text_key].get("reasons", {})
            vals["reason"] = reasons.get(ex.reason_code, ex.reason)
            if ex.specimen:  # what the result was sent as ("Urine", "尿镁"): quoted as sent
                vals["reason"] = f"{vals['reason']} ({ex.specimen})"
            vals["value"] = " ".join(x for x in (ex.value_text, ex.unit) if x) or "n/a"
            vals["time"] = fmt_time(ex.time)
        if "reasons" in c:
            vals["reasons"] = "; ".join(self.t["gate"].get(r, r) for r in c["reasons"])
        if rule.show_conditions:
            vals["markers"] = self._markers(rule, c) or "—"
        s = rule.suggestion or {}
        if "target" in s:
            vals["target"] = f"{fmt_num(s['target'].get('ge', 0))} {s['target']['unit']}"
        if f.dose is not None:
            vals["dose"] = f.dose.text
            if f.dose.bolus_minutes is not None:
                vals["bolus_minutes"] = fmt_num(f.dose.bolus_minutes, 0)
            if f.dose.infusion_g_per_h is not None:
                vals["infusion"] = f"{fmt_num(f.dose.infusion_g_per_h)} g/h"
            if f.dose.weight_kg is not None:
                vals["weight"] = f"{fmt_num(f.dose.weight_kg, 1)} kg"
        elif "dose" in s:
            vals["dose"] = f"{fmt_num(float(s['dose']['amount']))} g"
        if f.no_dose_reason:
            vals["reason"] = self._no_dose_reason(f)
        exclusions = self.exclusions(rule)
        if exclusions:
            vals["exclusions"] = "; ".join(exclusions)
        vals["study"], vals["design"] = rule.evidence.study, self.design(rule)
        population = self.population(rule)
        if population:
            vals["population"] = population
        low, high = self.k.reference_range
        vals["reference_range"] = f"{fmt_num(low)}-{fmt_num(high)} mg/dL"
        lab_range = next((v.reference_range for v in f.values if v.reference_range), None)
        if lab_range:
            vals["reference_range"] += f" ({self.t['common']['lab_range']}: {lab_range})"
        return vals

    def _markers(self, rule: Rule, c: dict[str, Any]) -> str:
        del c
        found = []
        vs = self.k.valuesets
        for cond in self._snapshot_conditions:
            if vs.concept_match(cond.concept, rule.show_conditions):
                found.append(_concept_name(cond.concept))
        return ", ".join(sorted(set(found)))

    _snapshot_conditions: tuple[m.Condition, ...] = ()

    def _no_dose_reason(self, f: Finding) -> str:
        reasons = self.t["common"].get("no_dose_reasons", {})
        template = reasons.get(f.no_dose_reason, f.no_dose_reason or "")
        ctx = f.context
        vals = {
            "weight": f"{fmt_num(ctx['dose_weight'], 1)} kg" if "dose_weight" in ctx else "n/a",
            "window": describe_duration(ctx["dose_window"]) if "dose_window" in ctx else "n/a",
        }
        return self._fill(template, vals)

    def _evidence_text(self, rule: Rule) -> dict[str, Any]:
        """This locale's ``rules.<text key>.evidence`` translation (empty when there is none)."""
        node = (self.t.get("rules") or {}).get(rule.text_key) or {}
        tr = node.get("evidence") if isinstance(node, dict) else None
        return tr if isinstance(tr, dict) else {}

    def design(self, rule: Rule) -> str:
        """The study design in this locale, else the rule file's English text."""
        return str(self._evidence_text(rule).get("design") or rule.evidence.design)

    def population(self, rule: Rule) -> str | None:
        """The population studied in this locale, else the rule file's English text."""
        return self._evidence_text(rule).get("population") or rule.evidence.population

    def exclusions(self, rule: Rule) -> list[str]:
        """The trial's exclusions in this locale, else the rule file's English list."""
        english = [str(x) for x in rule.evidence.extra.get("trial_exclusions") or []]
        tr = self._evidence_text(rule).get("exclusions")
        return [str(x) for x in tr] if tr and len(tr) == len(english) else english

    def effect_texts(self, rule: Rule) -> list[tuple[str, str]]:
        """(label, measure) of each effect in this locale; each list falls back to English."""
        effects = rule.evidence.effects
        tr = self._evidence_text(rule)
        labels = tr.get("effect_labels")
        measures = tr.get("effect_measures")
        if not labels or len(labels) != len(effects):
            labels = [e.label for e in effects]
        if not measures or len(measures) != len(effects):
            measures = [e.measure for e in effects]
        return [(str(label), str(measure)) for label, measure in zip(labels, measures, strict=True)]

    def evidence_line(self, rule: Rule) -> str:
        """One line: study, design, N, effects with CIs, DOI link."""
        ev = rule.evidence
        effects = []
        for e, (label, measure) in zip(ev.effects, self.effect_texts(rule), strict=True):
            part = f"{label}: {measure} {e.value:g}" if e.value is not None else label
            if e.ci:
                part += f" ({e.ci[0]:g}-{e.ci[1]:g})"  # as reported: P 0.007, HR 0.082
            effects.append(part)
        n = f", N={ev.n:,}" if ev.n else ""
        line = self._fill(
            self.t["common"]["evidence_line"],
            {
                "study": ev.study,
                "design": self.design(rule),
                "n": n,
                "effects": "; ".join(effects) or "—",
            },
        )
        links = ", ".join(f"[{c.ref}]({c.link})" for c in rule.citations if c.link)
        return f"{line} {links}".strip()

    def render(self, advice: Advice, conditions: tuple[m.Condition, ...] = ()) -> Rendered:
        """Summary, markdown detail and suggestion labels for one advice."""
        self._snapshot_conditions = conditions
        filled: dict[int, dict[str, Any]] = {}  # a finding's placeholders, computed once

        def placeholders(f: Finding) -> dict[str, Any]:
            if id(f) not in filled:
                filled[id(f)] = self.placeholders(f)
            return filled[id(f)]

        lead = advice.findings[0]
        lead_rule = self.k.rule(lead.rule_id)
        texts = self.t["rules"][lead_rule.text_key]
        vals = placeholders(lead)
        summary = self._fill(self._pick(texts["summary"], _side(lead), lead.indicator), vals)
        if len(summary) > SUMMARY_LIMIT:
            summary = summary[: SUMMARY_LIMIT - 1].rstrip() + "…"
        common = self.t["common"]
        lines: list[str] = []
        if advice.magnesium is not None and advice.direction in (
            "low",
            "high",
            "safety",
            "prevention",
        ):
            mv = self.value_text(advice.magnesium)
            key = "value_line_ionized" if advice.magnesium.kind == m.IONIZED_MG else "value_line"
            lines.append("**" + self._fill(common[key], mv) + "**")
        seen: set[str] = set()
        for f in advice.findings:
            if f.rule_id in seen and f.rule_id != "mg-data-quality":
                continue
            seen.add(f.rule_id)
            rule = self.k.rule(f.rule_id)
            rt = self.t["rules"][rule.text_key]
            fv = placeholders(f)
            lines.append(f"### {self._fill(self._pick(rt['summary'], _side(f), f.indicator), fv)}")
            if "context" in rt:
                lines.append(self._fill(rt["context"], fv))
            action_key = (
                "obstetric_action"
                if f.context.get("obstetric") and "obstetric_action" in rt
                else "action"
            )
            if action_key in rt:
                lines.append(
                    f"**{common['what_to_do']}:** "
                    + self._fill(self._pick(rt[action_key], _side(f), f.indicator), fv)
                )
            if f.no_dose_reason and "no_dose" in rt:
                lines.append(self._fill(rt["no_dose"], fv))
            if "aki" in f.context and f.context["aki"].nhs_stage != f.context["aki"].stage:
                lines.append(self._fill(common["nhs_differs"], fv))
            lines.append(f"**{common['evidence']}:** " + self.evidence_line(rule))
            if rule.category == "association" and not rule.fallback:
                lines.append("_" + common["association_caution"] + "_")
        if advice.withheld:
            reasons = "; ".join(self.t["gate"].get(g, g) for g in advice.withheld[0].conditions)
            lines.append(
                "**"
                + self._fill(common["withheld"], {"reasons": reasons})
                + "** "
                + self.t["gate"]["instead"]
            )
        if advice.missing:
            lines.append(self._fill(common["missing_data"], {"missing": ", ".join(advice.missing)}))
        if advice.direction in ("low", "high"):
            lines.append(f"**{common['mechanism']}:** " + self.t["mechanism"][advice.direction])
        lines.append(self._fill(common["rules_behind"], {"rules": ", ".join(advice.rules)}))
        med_label = lab_label = None
        if advice.medication_suggestion is not None:
            mf = advice.medication_suggestion
            mt = self.t["rules"][self.k.rule(mf.rule_id).text_key]
            med_label = self._fill(mt.get("label", mt["summary"]), placeholders(mf))
        if advice.lab_suggestion is not None:
            lf = advice.lab_suggestion
            lt = self.t["rules"][self.k.rule(lf.rule_id).text_key]
            lab_label = self._fill(
                lt.get("label") or common.get("measure_mg_label", "Serum magnesium"),
                placeholders(lf),
            )
            if advice.withheld and "mg-missing" in advice.gate_conditions:
                lab_label = common.get("measure_mg_label", lab_label)
        return Rendered(summary, "\n\n".join(lines), med_label, lab_label)
