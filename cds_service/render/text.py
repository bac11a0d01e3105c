"""Advice -> localised text: a summary under 140 characters, a markdown detail, labels.

Templates live in ``mappings/text/<locale>.yaml``; each rule's templates name only the
placeholders its rule file declares (``rules/placeholders.py``), filled by
``render/values.py``. A template field may have variants (``withheld``, ``gated``,
``no_dose``, ``in_range_low``, ...): the first that applies, in ``VARIANTS`` order, is
used. The detail never repeats the summary; a card whose magnesium suggestion the safety
gate withheld leads with that, gives the gate's alternative as what to do, and keeps the
trial regimen under Evidence.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from cds_service.clinical import model as m
from cds_service.render.format import Formatter
from cds_service.render.values import FindingValues, MissingValue, gate_values
from cds_service.rules.model import Advice, Finding, GateHit, Knowledge, Rule
from cds_service.rules.placeholders import VARIANTS

SUMMARY_LIMIT = 139
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rendered:
    """The text of one advice: summary, markdown detail, suggestion labels."""

    summary: str
    detail: str
    medication_label: str | None
    lab_label: str | None


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip(" ,;:，；：") + "…"


class TextRenderer:
    """Renders Advice for one locale from ``mappings/text/<locale>.yaml`` (no per-call state)."""

    def __init__(self, knowledge: Knowledge, locale: str) -> None:
        self.k = knowledge
        self.locale = locale if locale in knowledge.texts else "en"
        self.t: dict[str, Any] = knowledge.texts[self.locale]
        self.fmt = Formatter(knowledge, self.t)

    # --- templates -----------------------------------------------------------------------

    def fill(self, template: Any, values: Mapping[str, str]) -> str:
        """A template with its placeholders filled; a value that cannot be computed is
        named as not recorded (and logged without patient data)."""
        text = str(template)

        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            try:
                return values[name]
            except (MissingValue, KeyError):
                log.warning("card text: no value for placeholder %s", name)
                return str(self.t["common"]["not_recorded"])

        return self.fmt.tidy(_PLACEHOLDER.sub(one, text))

    def rule_text(self, rule: Rule) -> dict[str, Any]:
        """The rule's templates in this locale."""
        node: dict[str, Any] = self.t["rules"][rule.id]
        return node

    def pick(self, node: Any, variants: tuple[str, ...]) -> str | None:
        """The template of a field for the variants that apply (None: no such field)."""
        if node is None or isinstance(node, str):
            return node
        for name in VARIANTS:
            if name in variants and name in node:
                return str(node[name])
        return None

    # --- shared pieces --------------------------------------------------------------------

    def study(self, rule: Rule) -> str:
        """The study's name in this locale (a translated "label; review" form), else the file's."""
        return str(self._evidence_text(rule).get("study") or rule.evidence.study)

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

    def _evidence_text(self, rule: Rule) -> dict[str, Any]:
        node = (self.t.get("rules") or {}).get(rule.id) or {}
        tr = node.get("evidence") if isinstance(node, dict) else None
        return tr if isinstance(tr, dict) else {}

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

    def effect_text(self, rule: Rule, index: int, *, label: bool = True) -> str:
        """One effect: ``label: adjusted OR 1.70 (1.31-2.18)``, numbers as reported."""
        e = rule.evidence.effects[index]
        name, measure = self.effect_texts(rule)[index]
        if e.value is None:
            return name
        part = f"{measure} {self.fmt.number(e.value)}"
        if e.ci:
            ci = f"{self.fmt.number(e.ci[0])}{self.fmt.f['range']}{self.fmt.number(e.ci[1])}"
            part = self.fmt.after(part, ci)
        return f"{name}{self.fmt.f['colon']}{part}" if label else part

    def evidence_line(self, rule: Rule) -> str:
        """One line: study, design, N, effects with CIs, citation links."""
        ev = rule.evidence
        effects = [self.effect_text(rule, i) for i in range(len(ev.effects))]
        vals = {
            "study": self.study(rule),
            "design": self.design(rule),
            "n": self.fill(self.t["common"]["n"], {"n": f"{ev.n:,}"}) if ev.n else "",
            "effects": self.fmt.join(effects, "clause"),
        }
        key = "evidence_line" if effects else "evidence_line_no_effects"
        line = self.fill(self.t["common"][key], vals)
        return self.fmt.sentences(line, self._links(rule))

    @staticmethod
    def _links(rule: Rule) -> str:
        return ", ".join(f"[{c.ref}]({c.link})" for c in rule.citations if c.link)

    def gate_reasons(self, hits: list[GateHit] | tuple[GateHit, ...]) -> str:
        """The safety-gate conditions that hold, each with its values."""
        conditions = {c.id: c for c in self.k.gate}
        parts = []
        for hit in hits:
            cond = conditions.get(hit.id)
            params = cond.term.params if cond is not None else None
            parts.append(self.fill(self.t["gate"][hit.id], gate_values(self, hit.context, params)))
        return self.fmt.join(parts, "clause")

    def instead(self) -> str:
        """What to do instead when the gate holds (gate.yaml ``instead`` numbers)."""
        q = self.k.gate_quantities
        vals = {name: self.fmt.named(None, value) for name, value in q.items()}
        return self.fill(self.t["gate"]["instead"], vals)

    # --- one finding -----------------------------------------------------------------------

    def variants(self, advice: Advice, f: Finding, values: FindingValues) -> tuple[str, ...]:
        """Which template variants apply to a finding in this advice."""
        rule = self.k.rule(f.rule_id)
        out = []
        if any(w.rule_id == f.rule_id for w in advice.withheld):
            out.append("withheld")
        if rule.advises_repletion and advice.gate and _side(f) != "high":
            out.append("gated")
        if f.no_dose_reason:
            out.append("no_dose")
        if f.context.obstetric:
            out.append("obstetric")
        if f.context.spurious:
            out.append("spurious")
        if f.context.delta is not None:
            out += [f.context.delta.reason, "suspect"]
        if f.context.procedure_state == "planned":
            out.append("planned")
        if rule.show_conditions:
            try:
                values["markers"]
            except MissingValue:
                out.append("no_markers")
        if f.context.aki is not None:
            try:
                values["peak"]
                out.append("peak")
            except MissingValue:
                pass
        side = _side(f)
        v = max(f.values, key=lambda x: x.time) if f.values else None
        if v is not None and v.kind == m.SERUM_MG and v.comparator is None:
            low = self.k.reference_range[0]
            if side == "low" and v.value >= low - 1e-9:
                out.append("in_range_low")
        out += [f.indicator, side, "default"]
        return tuple(out)

    def _field(
        self, rule: Rule, field: str, variants: tuple[str, ...], values: FindingValues
    ) -> str | None:
        template = self.pick(self.rule_text(rule).get(field), variants)
        return None if template is None else self.fill(template, values)

    def finding_summary(self, advice: Advice, f: Finding, values: FindingValues) -> str:
        """A finding's summary (the card's summary when it leads)."""
        rule = self.k.rule(f.rule_id)
        text = self._field(rule, "summary", self.variants(advice, f, values), values)
        assert text is not None  # the loader requires a summary for every rule
        return text

    def _finding_lines(
        self, advice: Advice, f: Finding, values: FindingValues, *, heading: bool
    ) -> list[str]:
        rule = self.k.rule(f.rule_id)
        common = self.t["common"]
        variants = self.variants(advice, f, values)
        lines: list[str] = []
        if heading:
            lines.append("#### " + self.finding_summary(advice, f, values))
        context = self._field(rule, "context", variants, values)
        if context:
            lines.append(context)
        withheld = "withheld" in variants
        action = self._field(rule, "action", variants, values)
        own = self.rule_text(rule).get("action")
        if withheld and not (isinstance(own, dict) and "withheld" in own):
            action = self.fill(common["withheld_action"], values)
        if action:
            lines.append(self._labelled(common["what_to_do"], action))
        evidence = self.evidence_line(rule)
        own_line = self._field(rule, "evidence_line", variants, values)
        if own_line is not None:  # e.g. delta checks: locally set limits, not a study
            evidence = self.fmt.sentences(own_line, self._links(rule))
        if withheld or "no_dose" in variants:
            evidence = self.fmt.sentences(
                evidence, self._field(rule, "regimen", variants, values) or ""
            )
        if rule.evidence.extra.get("trial_exclusions"):
            evidence = self.fmt.sentences(evidence, self.fill(common["trial_excluded"], values))
        lines.append(self._labelled(common["evidence"], evidence))
        if rule.category == "association" and not rule.fallback:
            lines.append("_" + common["association_caution"] + "_")
        if f.context.aki is not None and f.context.aki.nhs_stage != f.context.aki.stage:
            lines.append(self.fill(common["nhs_differs"], values))
        return lines

    # --- one advice --------------------------------------------------------------------------

    def render(self, advice: Advice, conditions: tuple[m.Condition, ...] = ()) -> Rendered:
        """Summary, markdown detail and suggestion labels for one advice."""
        values = {id(f): FindingValues(self, advice, f, conditions) for f in advice.findings}
        lead = advice.findings[0]
        common = self.t["common"]
        summary = self.finding_summary(advice, lead, values[id(lead)])
        withheld_here = advice.withheld and not any(
            w.rule_id == lead.rule_id for w in advice.withheld
        )
        gated_here = any(  # repletion advice in words, held back by the gate: read as withheld
            "gated" in self.variants(advice, f, values[id(f)]) for f in advice.findings
        )
        if withheld_here or gated_here:
            suffix = self.fill(common["withheld_suffix"], {})
            summary = _shorten(summary, SUMMARY_LIMIT - len(suffix)) + suffix
        summary = _shorten(summary, SUMMARY_LIMIT)
        lines: list[str] = []
        mg_line = self._magnesium_line(advice)
        if mg_line:
            lines.append(mg_line)
        seen: set[str] = set()
        for i, f in enumerate(advice.findings):
            if f.rule_id in seen and f.context.excluded is None:
                continue
            seen.add(f.rule_id)
            lines += self._finding_lines(advice, f, values[id(f)], heading=i > 0)
        if advice.missing:
            names = self.t["common"].get("data_names") or {}
            missing = self.fmt.join(str(names.get(k, names.get("other"))) for k in advice.missing)
            lines.append(self.fill(common["missing_data"], {"missing": missing}))
        if advice.direction in ("low", "high"):
            lines.append(self._labelled(common["mechanism"], self.t["mechanism"][advice.direction]))
        lines.append(self.fill(common["rules_behind"], {"rules": self.fmt.join(advice.rules)}))
        return Rendered(summary, "\n\n".join(lines), *self._labels(advice, values))

    def _labelled(self, label: str, text: str) -> str:
        """``**What to do:** text`` with the locale's colon."""
        return f"**{label}{self.fmt.f['colon'].rstrip()}** {text}"

    def _magnesium_line(self, advice: Advice) -> str | None:
        """The serum Mg the card is about (not on the AKI card, nor beside an unusable result)."""
        lead = advice.findings[0].context
        if advice.direction == "aki" or lead.excluded is not None or lead.delta or lead.spurious:
            return None  # the finding's own text names the result it is about
        common = self.t["common"]
        mg = advice.magnesium
        if mg is None:
            return f"**{common['no_magnesium']}**"
        key = "value_line_ionized" if mg.kind == m.IONIZED_MG else "value_line"
        vals = {"value": self.fmt.lab(mg), "time": self.fmt.time(mg.time)}
        if "median" in mg.flags:
            key = "value_line_median"  # a computed value: never shown as one result
        if mg.corrected_from is not None and mg.albumin_g_dl is not None:
            key = "value_line_corrected"  # the computed value, with what it was computed from
            measured = replace(mg, value=mg.corrected_from, corrected_from=None)
            vals["measured"] = self.fmt.lab(measured, both=False)
            vals["albumin"] = self.fmt.canonical_value("albumin", mg.albumin_g_dl, both=False)
        line = self.fill(common[key], vals)
        flags: dict[str, str] = common["time_flags"]
        notes = [str(flags[flag]) for flag in mg.flags if flag in flags]
        lab_range = self.fmt.lab_range(mg)
        if lab_range:
            notes.append(f"{common['lab_range']}{self.fmt.f['colon']}{lab_range}")
        if notes:  # inside the sentence: before its full stop
            body = line.rstrip(".。")
            line = self.fmt.after(body, self.fmt.join(notes, "clause")) + line[len(body) :]
        return "**" + line + "**"

    def _labels(
        self, advice: Advice, values: dict[int, FindingValues]
    ) -> tuple[str | None, str | None]:
        common = self.t["common"]
        med_label = lab_label = None
        if advice.medication_suggestion is not None:
            mf = advice.medication_suggestion
            template = self.pick(self.rule_text(self.k.rule(mf.rule_id)).get("label"), ("default",))
            med_label = self.fill(template, values[id(mf)]) if template else None
        if advice.lab_suggestion is not None:
            lf = advice.lab_suggestion
            node = self.rule_text(self.k.rule(lf.rule_id)).get("label")
            template = self.pick(node, self.variants(advice, lf, values[id(lf)]))
            is_med = bool(lf.suggestion and lf.suggestion.get("kind") == "medication")
            if template is None or is_med:
                lab_label = str(common["measure_mg_label"])
            else:
                lab_label = self.fill(template, values[id(lf)])
        return med_label, lab_label


def _side(f: Finding) -> str:
    """The text variant of a finding: its direction, else the side of the bound that fired.

    A ``monitoring`` rule with low and high thresholds (``reference-range``) says
    "below" for a low value and "above" for a high one.
    """
    if f.direction in ("low", "high") or f.threshold is None:
        return f.direction
    return "low" if f.threshold.lt is not None or f.threshold.le is not None else "high"
