"""The rule review document (GET /rules JSON and HTML, docs/rules.md): one source for all three.

Structured values (bounds, parameters, doses) come from the loaded ``Knowledge``; each also
has its words in the requested locale (``reviewer:`` texts, evidence translations).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cds_service.render.format import fmt_num
from cds_service.render.reviewer_words import Words, bounds_json, raw_bounds
from cds_service.render.text import TextRenderer
from cds_service.rules.durations import parse_duration
from cds_service.rules.facts import FACTS, PRE_ECLAMPSIA_SET
from cds_service.rules.load_rule import CATEGORIES
from cds_service.rules.model import Citation, Knowledge, Rule
from cds_service.rules.triggers import TRIGGERS

MG = "magnesium"


def citation_json(c: Citation) -> dict[str, Any]:
    """A citation without empty members."""
    pairs = (
        ("ref", c.ref),
        ("authors", c.authors),
        ("year", c.year),
        ("title", c.title),
        ("journal", c.journal),
        ("link", c.link),
    )
    return {k: v for k, v in pairs if v}


class Review:
    """The review document of one locale."""

    def __init__(self, knowledge: Knowledge, locale: str = "en") -> None:
        """Words from ``locale`` (en or zh-CN), values from ``knowledge``."""
        self.k = knowledge
        self.w = Words(knowledge, locale)
        self.text = TextRenderer(knowledge, self.w.locale)
        self.gate_text = {g.id: self.w.fact(g.fact) for g in knowledge.gate}

    def document(self) -> dict[str, Any]:
        """Everything a reviewer reads: rules grouped by kind, the gate, the obstetric scope."""
        w, k = self.w, self.k
        kinds = [
            {
                "id": kind,
                "title": w.word("kinds", kind),
                "intro": w.word("kind_intro", kind),
                "rules": [r.id for r in k.rules if r.category == kind],
            }
            for kind in CATEGORIES
            if any(r.category == kind for r in k.rules)
        ]
        return {
            "locale": w.locale,
            "mappings_version": k.version,
            "title": w.fill("title"),
            "intro": w.fill("intro"),
            "kinds": kinds,
            "rules": [self.rule(r) for r in k.rules],
            "gate": self.gate(),
            "obstetric": self.obstetric(),
            "facts": {name: spec.doc for name, spec in sorted(FACTS.items())},
            "triggers": sorted(TRIGGERS),
        }

    def rule(self, r: Rule) -> dict[str, Any]:
        """One rule: identity, population, measure, thresholds, advice, evidence, citations."""
        w = self.w
        population = [{"fact": n, "params": p, "text": w.fact((n, p))} for n, p in r.population]
        out: dict[str, Any] = {
            "id": r.id,
            "version": r.version,
            "title": r.title,
            "category": r.category,
            "direction": r.direction,
            "indicator": self.k.site.indicator_overrides.get(r.id, r.indicator),
            "indicator_range": self.indicator_range(r),
            "card_text": self._card(r),
            "population": population,
            "population_text": w.clauses([str(p["text"]) for p in population]) or w.fill("anyone"),
        }
        if r.measure:
            m = self.k.measures[r.measure]
            out["measure"] = {"id": m.id, "title": m.title, "text": w.measure(m)}
        thresholds: list[dict[str, Any]] = [
            {
                "direction": t.direction,
                "bounds": bounds_json(t.bounds),
                "other_unit": bounds_json(o) if (o := w.converted(t.bounds, MG)) else None,
                "text": self._threshold_text(t.direction, w.bounds_both(t.bounds, MG)),
            }
            for t in r.thresholds
        ]
        if thresholds:
            out["thresholds"] = thresholds
        if r.trigger:
            out["trigger"] = {"name": r.trigger[0], "params": r.trigger[1], "text": self.trigger(r)}
        out["fires_when"] = w.clauses([str(t["text"]) for t in thresholds]) or (
            out["trigger"]["text"] if r.trigger else w.fill("fires_population")
        )
        out["suggestion"] = self.suggestion(r)
        if r.category == "supplementation" or (out["suggestion"] or {}).get("kind") == "medication":
            out["gate"] = self.gate_line(r)
        out["obstetric"] = self.obstetric_line(r)
        out["evidence"] = self.evidence(r)
        out["citations"] = [citation_json(c) for c in r.citations]
        out["enabled"] = r.id not in self.k.site.disabled_rules
        out["source_file"] = f"mappings/rules/{Path(r.source_file).name}"
        return out

    def _card(self, r: Rule) -> str:
        """The card (direction) the rule's advice goes to, in words."""
        if r.direction == "by-threshold":
            return self.w.join([self.w.word("directions", t.direction) for t in r.thresholds])
        return self.w.word("directions", r.direction)

    def _threshold_text(self, direction: str, bounds: str) -> str:
        if direction in ("low", "high"):
            return self.w.fill(
                "threshold", direction=self.w.word("directions", direction), bounds=bounds
            )
        return bounds

    def indicator_range(self, r: Rule) -> dict[str, Any]:
        """The indicator and when it differs (by value, AKI stage or gate condition)."""
        w = self.w
        base = self.k.site.indicator_overrides.get(r.id, r.indicator)
        when: list[dict[str, Any]] = []
        words: list[str] = []
        for ind, b in r.indicator_when:
            when.append({"indicator": ind, "bounds": bounds_json(b)})
            words.append(
                w.fill(
                    "indicator_when",
                    indicator=w.word("indicators", ind),
                    bounds=w.bounds_both(b, MG),
                )
            )
        for stage, ind in sorted(r.indicator_when_stage.items()):
            when.append({"indicator": ind, "aki_stage": stage})
            words.append(
                w.fill("indicator_when_stage", indicator=w.word("indicators", ind), stage=stage)
            )
        if r.trigger and r.trigger[1].get("critical_when"):
            ids = list(r.trigger[1]["critical_when"])
            when.append({"indicator": "critical", "gate_conditions": ids})
            conds = w.join([self.gate_text.get(i, i) for i in ids])
            words.append(
                w.fill(
                    "indicator_when_gate",
                    indicator=w.word("indicators", "critical"),
                    conditions=conds,
                )
            )
        levels = sorted(
            {base, *(x["indicator"] for x in when)}, key=["info", "warning", "critical"].index
        )
        text = w.word("indicators", base)
        if words:
            text = w.fill("indicator_range", indicator=text, exceptions=w.clauses(words))
        if r.id in self.k.site.indicator_overrides:
            text += " (" + w.fill("overridden", indicator=w.word("indicators", base)) + ")"
        return {"default": base, "levels": levels, "when": when, "text": text}

    def trigger(self, r: Rule) -> str:
        """A trigger rule's condition in words, every number from its parameters."""
        assert r.trigger is not None
        name, p = r.trigger
        w = self.w
        if name == "monitoring-gap":
            parts = []
            for c in p["contexts"]:
                when = w.clauses([w.fact(_term(x)) for x in c["when"]])
                if "window" in c:
                    parts.append(
                        w.fill(
                            "triggers.monitoring-gap-window",
                            when=when,
                            window=w.duration(c["window"]),
                        )
                    )
                else:
                    parts.append(
                        w.fill(
                            "triggers.monitoring-gap-since",
                            when=when,
                            anchor=w.word("anchors", str(c.get("since"))),
                        )
                    )
            return w.fill("triggers.monitoring-gap", contexts=" | ".join(parts))
        if name == "mg-trend":
            unit = p["unit"]
            fall, rise = p["falling"], p["rising"]
            return w.fill(
                "triggers.mg-trend",
                n=p["min_count"],
                window=w.duration(p["window"]),
                falling=w.bounds_both(raw_bounds({"lt": fall["latest_lt"], "unit": unit}), MG),
                rising=w.bounds_both(raw_bounds({"gt": rise["latest_gt"], "unit": unit}), MG),
                drop=f"{fmt_num(fall['drop_ge'])} {unit}",
                rise=f"{fmt_num(rise['rise_ge'])} {unit}",
            )
        if name == "data-quality":
            reasons = [
                w.fill(
                    f"triggers.data-quality-reasons.{x}", bounds=w.bounds_both(self.k.plausible, MG)
                )
                for x in p.get("reasons", [])
            ]
            return w.fill("triggers.data-quality", reasons=w.join(reasons))
        if name == "kdigo":
            return self._kdigo()
        if name == "mg-order-unsafe":
            ignored = w.join([self.gate_text.get(i, i) for i in p.get("ignore_conditions", [])])
            return w.fill("triggers.mg-order-unsafe", ignored=ignored or "—")
        return name

    def _kdigo(self) -> str:
        w, kd = self.w, self.k.aki["kdigo"]
        unit = self.k.aki.get("unit", "mg/dL")
        rise = kd["absolute_rise"]
        historic = kd["baseline_historic_window"]
        absolute = kd["stage3_absolute"]
        return w.fill(
            "triggers.kdigo",
            rise=w.amount(rise["value"], rise["unit"], "creatinine"),
            rise_window=w.duration(rise["within"]),
            ratio=fmt_num(min(s["ratio_ge"] for s in kd["stages"])),
            recent=w.duration(kd["baseline_recent_window"]),
            historic_start=w.duration(historic["start"]),
            historic_end=w.duration(historic["end"]),
            absolute=w.amount(absolute["value"], absolute.get("unit", unit), "creatinine"),
        )

    def suggestion(self, r: Rule) -> dict[str, Any] | None:
        """What the rule suggests: a magnesium order (dose, dilution, rate) or a lab order."""
        s = r.suggestion
        w = self.w
        if s is None:
            return (
                {"kind": "none", "text": w.fill("suggestion.none")}
                if r.category == "supplementation"
                else None
            )
        if s["kind"] == "lab-order":
            code = s["code"]
            text = w.fill(
                "suggestion.lab-order",
                code=w.phrase(str(code.get("display", code["code"]))),
                system="LOINC" if "loinc" in code["system"] else code["system"],
                number=code["code"],
            )
            if "timing" in s:
                text = w.fill(
                    "suggestion.lab-timing", order=text, timing=w.phrase(str(s["timing"]))
                )
            return {"kind": "lab-order", "code": code, "text": text}
        return self._medication(s)

    def _medication(self, s: dict[str, Any]) -> dict[str, Any]:
        w = self.w
        route = w.phrase(str(s.get("route", "IV")))
        out: dict[str, Any] = {
            "kind": "medication",
            "medication": s["medication"],
            "medication_text": w.value_set(s["medication"]),
        }
        if "dose" in s:
            grams = float(s["dose"]["amount"])
            dose = w.fill("suggestion.dose-fixed", grams=fmt_num(grams), route=route)
            if "dose_meq" in s:
                dose = w.fill("suggestion.dose-meq", dose=dose, meq=fmt_num(float(s["dose_meq"])))
            if s.get("per") == "day":
                dose = w.fill("suggestion.dose-per-day", dose=dose)
            if "days" in s:
                dose = w.fill("suggestion.dose-days", dose=dose, days=s["days"])
            if "dose_range" in s:
                dose = w.fill(
                    "suggestion.dose-range",
                    dose=dose,
                    range=f"{fmt_num(s['dose_range']['low'])}-{fmt_num(s['dose_range']['high'])} "
                    f"{s['dose_range']['unit']}",
                )
            out["dose"] = {
                "amount": grams,
                "unit": "g",
                "meq": s.get("dose_meq"),
                "per": s.get("per"),
                "days": s.get("days"),
            }
            if "rate" in s:
                over = parse_duration(s["rate"]["over"])
                out["rate"] = {"over": s["rate"]["over"]}
                out["rate_text"] = w.fill(
                    "suggestion.rate-over",
                    over=w.duration(over),
                    mg_per_min=fmt_num(grams * 1000 / (over.total_seconds() / 60), 1),
                )
        else:
            per_kg, inf = s["dose_per_kg"], s.get("infusion_per_kg") or {}
            dose = w.fill(
                "suggestion.dose-per-kg",
                per_kg=fmt_num(float(per_kg["amount"])),
                route=route,
                infusion=fmt_num(float(inf.get("amount", 0))),
            )
            out["dose"] = {"per_kg": per_kg, "infusion_per_kg": inf or None}
            wt = s["weight"]
            out["weight_text"] = w.fill(
                "suggestion.weight",
                window=w.duration(wt["within"]),
                bounds=w.bounds(raw_bounds(wt)),
            )
            max_rate = fmt_num(float(s["max_rate"]["amount"]))
            out["rate"] = {"max_rate": s["max_rate"], "min_bolus": s.get("min_bolus")}
            out["rate_text"] = w.fill(
                "suggestion.rate-bolus",
                max_rate=max_rate,
                min_bolus=w.duration(s.get("min_bolus", "0m")),
            )
            out["rate_limit_text"] = w.fill("suggestion.rate-limit", max_rate=max_rate)
        out["dose_text"] = dose
        if "timing" in s and "dose" in s:
            out["timing_text"] = w.phrase(str(s["timing"]))
        diluent = s.get("diluent")
        if diluent:
            out["dilution"] = diluent
            out["dilution_text"] = w.fill(
                "suggestion.dilution",
                volume=fmt_num(float(diluent["volume_ml"])),
                fluid=w.phrase(str(diluent.get("fluid", ""))),
            )
        if "when_latest_mg" in s:
            out["given_when_text"] = w.fill(
                "suggestion.given-when", bounds=w.bounds_both(raw_bounds(s["when_latest_mg"]), MG)
            )
        if "target" in s:
            out["target_text"] = w.fill(
                "suggestion.target", bounds=w.bounds_both(raw_bounds(s["target"]), MG)
            )
        if "repeat" in s:
            out["repeat_text"] = w.phrase(str(s["repeat"]))
        return out

    def gate_line(self, r: Rule) -> str:
        """For a rule that may suggest magnesium: the gate conditions in words."""
        if (r.suggestion or {}).get("kind") != "medication":
            return self.w.fill("gate.not_applicable")
        return self.w.fill("gate.applies", conditions=self.w.clauses(list(self.gate_text.values())))

    def gate(self) -> dict[str, Any]:
        """The safety gate: every condition (structured and in words), what to do instead."""
        w = self.w
        conditions = [
            {
                "id": g.id,
                "fact": g.fact[0],
                "params": g.fact[1],
                "text": self.gate_text[g.id],
                "card_text": _template_view(str(self.text.t["gate"].get(g.id, ""))),
                **({"note": w.fill("gate.suggests_lab")} if g.suggest_lab else {}),
            }
            for g in self.k.gate
        ]
        return {
            "title": w.fill("gate.title"),
            "intro": w.fill("gate.intro"),
            "conditions": conditions,
            "instead_title": w.fill("gate.instead"),
            "instead": self.text.instead(),
            "sources_title": w.fill("gate.sources"),
            "sources": [citation_json(c) for c in self.k.gate_sources],
        }

    def obstetric_line(self, r: Rule) -> dict[str, Any]:
        """How a rule behaves with pre-eclampsia/eclampsia coded."""
        w = self.w
        if r.obstetric_suppress:
            return {"suppressed": True, "text": w.fill("obstetric.suppressed")}
        if r.obstetric_thresholds:
            b = w.clauses([w.bounds_both(t.bounds, MG) for t in r.obstetric_thresholds])
            return {
                "suppressed": False,
                "thresholds": [bounds_json(t.bounds) for t in r.obstetric_thresholds],
                "text": w.fill("obstetric.own_threshold", bounds=b),
            }
        return {"suppressed": False, "text": w.fill("obstetric.evaluated")}

    def obstetric(self) -> dict[str, Any]:
        """The obstetric scope in words: which rules stay silent, which change threshold."""
        w = self.w
        silent = [r.id for r in self.k.rules if r.obstetric_suppress]
        changed = [
            w.fill(
                "obstetric.thresholds",
                rule=r.id,
                bounds=w.clauses([w.bounds_both(t.bounds, MG) for t in r.obstetric_thresholds]),
            )
            for r in self.k.rules
            if r.obstetric_thresholds
        ]
        return {
            "title": w.fill("obstetric.title"),
            "value_set": PRE_ECLAMPSIA_SET,
            "suppressed_rules": silent,
            "text": " ".join(
                [
                    w.fill(
                        "obstetric.intro",
                        sets=w.value_set(PRE_ECLAMPSIA_SET),
                        rules=", ".join(silent),
                    ),
                    *changed,
                ]
            ),
        }

    def evidence(self, r: Rule) -> dict[str, Any]:
        """The study: design, N, population, effects with CI (in this locale where translated)."""
        ev = r.evidence
        effects = []
        for e, (label, measure) in zip(ev.effects, self.text.effect_texts(r), strict=True):
            text = f"{label}: {measure} {e.value:g}" if e.value is not None else label
            if e.ci:
                text += f" ({e.ci[0]:g}-{e.ci[1]:g})"
            item: dict[str, Any] = {"label": label, "measure": measure, "text": text}
            if e.value is not None:
                item["value"] = e.value
            if e.ci:
                item["ci"] = list(e.ci)
            effects.append(item)
        out: dict[str, Any] = {"study": ev.study, "design": self.text.design(r), "effects": effects}
        for key, value in (
            ("n", ev.n),
            ("population_studied", self.text.population(r)),
            ("checked", ev.checked),
            ("set_here", ev.set_here),
            ("exclusions", self.text.exclusions(r)),
        ):
            if value:
                out[key] = value
        return out


def _term(raw: Any) -> tuple[str, Any]:
    if isinstance(raw, str):
        return (raw, None)
    ((name, params),) = raw.items()
    return (name, params)


def review(knowledge: Knowledge, locale: str = "en") -> dict[str, Any]:
    """The review document of ``locale``."""
    return Review(knowledge, locale).document()


def _template_view(template: str) -> str:
    """A card template as a reviewer reads it: ``{value}`` shown as ``‹value›``."""
    return re.sub(r"\{([a-z_]+)\}", r"‹\1›", template)
