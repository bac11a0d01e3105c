"""Rule data in words for reviewers: bounds with the other unit, durations, facts, measures.

Words come from ``reviewer:`` of ``mappings/text/<locale>.yaml``; every number from the
loaded ``Knowledge`` (rule files, gate, measures, units). Nothing here restates a value.
"""

from __future__ import annotations

import string
from datetime import timedelta
from typing import Any

from cds_service.render.format import fmt_num
from cds_service.rules.context import SERIES_QUANTITY
from cds_service.rules.durations import parse_duration
from cds_service.rules.facts import parse_bounds
from cds_service.rules.model import Bounds, Fact, Knowledge, Measure

# The unit a reader compares with (evidence.md §1: "the other unit in brackets is for reading")
OTHER_UNIT = {
    ("magnesium", "mg/dL"): "mmol/L",
    ("magnesium", "mmol/L"): "mg/dL",
    ("magnesium", "meq/L"): "mg/dL",
    ("creatinine", "mg/dL"): "umol/L",
    ("creatinine", "umol/L"): "mg/dL",
}
UNIT_DISPLAY = {"mL/min/{1.73_m2}": "mL/min/1.73 m²", "umol/L": "µmol/L", "meq/L": "mEq/L"}
PLACES = {"umol/L": 1}
SYMBOLS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def bounds_json(b: Bounds) -> dict[str, Any]:
    """Bounds as structured JSON: ``{"lt": 1.5, "unit": "mg/dL"}`` (only the bounds set)."""
    out: dict[str, Any] = {op: getattr(b, op) for op, _ in SYMBOLS if getattr(b, op) is not None}
    out["unit"] = b.unit
    return out


def raw_bounds(params: dict[str, Any]) -> Bounds:
    """The bounds of a validated fact or suggestion parameter mapping."""
    keys = {k: v for k, v in params.items() if k in ("lt", "le", "gt", "ge", "unit")}
    return parse_bounds(keys, "bounds", None, None)


class Words:
    """One locale's words for rule data."""

    def __init__(self, knowledge: Knowledge, locale: str) -> None:
        """Words of ``locale`` (English when the locale has no reviewer texts)."""
        self.k = knowledge
        self.locale = locale if locale in knowledge.texts else "en"
        self.t: dict[str, Any] = knowledge.texts[self.locale]["reviewer"]

    def fill(self, key: str, **values: Any) -> str:
        """The text at dotted ``key`` with its placeholders filled."""
        node: Any = self.t
        for part in key.split("."):
            node = node[part]
        return str(string.Formatter().vformat(str(node), (), _Blank(values)))

    def word(self, group: str, code: str) -> str:
        """A word of a group (``units``, ``labs``...), else the code itself."""
        return str((self.t.get(group) or {}).get(code, code))

    def phrase(self, text: str) -> str:
        """A free-text phrase of a rule file in this locale (English: as written)."""
        return str((self.t.get("phrases") or {}).get(text, text))

    def join(self, items: list[str], conj: str = "or") -> str:
        """``a, b or c`` in this locale."""
        if len(items) <= 1:
            return "".join(items)
        sep, last = str(self.t["list_sep"]), str(self.t["list_or" if conj == "or" else "list_and"])
        return sep.join(items[:-1]) + last + items[-1]

    def value_set(self, vs_id: str) -> str:
        """A value set's name: this locale's translation, else its title."""
        names = self.t.get("value_sets") or {}
        if vs_id in names:
            return str(names[vs_id])
        sets = self.k.valuesets.sets
        return sets[vs_id].title if vs_id in sets else vs_id

    def sets(self, ids: Any, conj: str = "or") -> str:
        """Value-set names joined (``ids`` is an id or a list of ids)."""
        return self.join(
            [self.value_set(i) for i in ([ids] if isinstance(ids, str) else ids)], conj
        )

    def unit(self, unit: str) -> str:
        """A unit for reading: words for ``a``/``mo``, else the display spelling."""
        if unit in ("a", "mo"):
            return self.word("units", unit)
        return UNIT_DISPLAY.get(unit, unit)

    def bounds(self, b: Bounds, converted: bool = False) -> str:
        """``≥ 18 years``, ``> 1.1 and < 1.7 mg/dL``: values as written (converted ones rounded)."""
        places = PLACES.get(b.unit, 2) if converted else 6
        parts = [
            f"{sym} {fmt_num(v, places)}"
            for op, sym in SYMBOLS
            if (v := getattr(b, op)) is not None
        ]
        return str(self.t["bounds_and"]).join(parts) + f" {self.unit(b.unit)}"

    def converted(self, b: Bounds, quantity: str | None) -> Bounds | None:
        """The same bounds in the other unit of the quantity, if it has one."""
        other = OTHER_UNIT.get((quantity or "", b.unit))
        if quantity is None or other is None:
            return None
        q = self.k.units[quantity]

        def conv(v: float | None) -> float | None:
            return None if v is None else q.from_canonical(q.to_canonical(v, b.unit), other)

        return Bounds(other, lt=conv(b.lt), le=conv(b.le), gt=conv(b.gt), ge=conv(b.ge))

    def bounds_both(self, b: Bounds, quantity: str | None) -> str:
        """Bounds with the other unit in brackets: ``< 1.5 mg/dL (< 0.62 mmol/L)``."""
        other = self.converted(b, quantity)
        if other is None:
            return self.bounds(b)
        return self.fill(
            "other_unit", bounds=self.bounds(b), other=self.bounds(other, converted=True)
        )

    def amount(self, value: float, unit: str, quantity: str | None) -> str:
        """A single amount with the other unit: ``0.3 mg/dL (26.5 µmol/L)``."""
        b = Bounds(unit, ge=float(value))
        text = f"{fmt_num(float(value), 6)} {self.unit(unit)}"
        other = self.converted(b, quantity)
        if other is None or other.ge is None:
            return text
        shown = f"{fmt_num(other.ge, PLACES.get(other.unit, 2))} {self.unit(other.unit)}"
        return self.fill("other_unit", bounds=text, other=shown)

    def clauses(self, items: list[str]) -> str:
        """Clauses joined with this locale's semicolon."""
        return str(self.t["clause_sep"]).join(items)

    def duration(self, value: Any) -> str:
        """``72 h``, ``7 days``, ``15 min`` (from ``72h``/``7d``/``15m`` or a timedelta)."""
        delta = value if isinstance(value, timedelta) else parse_duration(value)
        seconds = abs(delta.total_seconds())
        hours = seconds / 3600
        if hours > 72 and hours % 24 == 0:  # 48 h, 72 h as the studies say; 7 days, 30 days
            return f"{int(hours // 24)} {self.word('units', 'd')}"
        if hours >= 1:
            return f"{fmt_num(hours)} {self.word('units', 'h')}"
        return f"{fmt_num(seconds / 60)} {self.word('units', 'min')}"

    def offset(self, delta: timedelta) -> str:
        """A signed window edge: ``- 12 h``, ``+ 24 h``; nothing for zero."""
        if not delta:
            return ""
        return ("- " if delta.total_seconds() < 0 else "+ ") + self.duration(delta)

    def measure(self, m: Measure) -> str:
        """A measure's definition in words, from its anchor, window and pick."""
        pick, series = self.word("picks", m.pick), self.word("labs", m.series)
        anchor = self.word("anchors", m.anchor)
        if m.window is None:
            text = self.fill("measure_encounter", pick=pick, series=series, anchor=anchor)
        else:
            text = (
                self.fill(
                    "measure_window",
                    pick=pick,
                    series=series,
                    anchor=anchor,
                    start=self.offset(m.window.start),
                    end=self.offset(m.window.end),
                )
                .replace(" ]", "]")
                .replace(" ,", ",")
                .replace(" ，", "，")
            )
        if m.extend_to_encounter_start:
            text = self.fill("measure_extended", measure=text)
        if m.albumin_corrected:
            corr = self.k.albumin_correction
            text = self.fill(
                "measure_corrected",
                measure=text,
                method=corr.get("method", ""),
                window=self.duration(corr.get("max_gap", "24h")),
            )
        return text

    def fact(self, fact: Fact) -> str:
        """A population, gate or context fact in words."""
        name, p = fact
        f = "facts."
        if name == "age":
            return self.fill(f + "age", bounds=self.bounds(raw_bounds(p)))
        if name == "encounter":
            return self.fill(
                f + "encounter", classes=self.join([self.word("encounters", c) for c in p])
            )
        if name == "icu-stay":
            p = p or {}
            if "started_within" in p:
                return self.fill(f + "icu-stay-started", window=self.duration(p["started_within"]))
            return self.fill(f + ("icu-stay-ongoing" if p.get("ongoing") else "icu-stay"))
        if name in ("condition", "no-condition", "draft-order"):
            return self.fill(f + name, sets=self.sets(p))
        if name == "procedure":
            return self.fill(f + "procedure", sets=self.sets(p["set"]), states=self._states(p))
        if name == "medication":
            key, conj = ("medication-any", "or") if "any_of" in p else ("medication-all", "and")
            return self.fill(f + key, sets=self.sets(p.get("any_of") or p.get("all_of"), conj))
        if name == "no-magnesium-given-since":
            return self.fill(f + name, anchor=self.word("anchors", str(p)))
        if name == "aki":
            return self._aki(p)
        if name == "latest-suspect":
            return self.fill(f + name, lab=self.word("labs", p["kind"]))
        if name in ("latest-lab", "weight", "egfr"):
            kind = p.get("kind", {"weight": "weight", "egfr": "egfr"}.get(name))
            b = self.bounds_both(raw_bounds(p), SERIES_QUANTITY.get(kind))
            window = self.duration(p["within"])
            if name in ("weight", "egfr"):
                return self.fill(f + name, window=window, bounds=b)
            return self.fill(f + "latest-lab", lab=self.word("labs", kind), window=window, bounds=b)
        if name == "no-lab-within":
            labs = self.join([self.word("labs", x) for x in p["kinds"]])
            return self.fill(f + name, labs=labs, window=self.duration(p["within"]))
        if name == "any":
            items = [self.fact(_term(x)) for x in p]
            return self.fill(f + "any", items=self.clauses(items))
        return self.fill(f + name)  # facts without parameters

    def _states(self, p: dict[str, Any]) -> str:
        words = []
        for state in p.get("states", ["performed", "in-progress", "planned"]):
            if state == "performed" and "within" in p:
                words.append(
                    self.fill(
                        "procedure_states.performed_within", window=self.duration(p["within"])
                    )
                )
            else:
                words.append(self.word("procedure_states", state))
        return self.join(words)

    def _aki(self, p: dict[str, Any]) -> str:
        if "stage_ge" in p:
            return self.fill("facts.aki-stage", stage=int(p["stage_ge"]))
        if "after_procedure" in p:
            after = p["after_procedure"]
            return self.fill(
                "facts.aki-after",
                sets=self.sets(after["set"]),
                window=self.duration(after["within"]),
            )
        return self.fill("facts.aki-present")


def _term(raw: Any) -> Fact:
    """A nested fact term as written (``name`` or ``{name: params}``)."""
    if isinstance(raw, str):
        return (raw, None)
    ((name, params),) = raw.items()
    return (name, params)
