"""Load ``text/<locale>.yaml`` and hold every template to its rule (docs/mappings.md "Text").

- Every locale has every key (a rule's ``evidence`` translation is optional).
- A rule's templates name only the placeholders its rule file declares; a declaration
  the rule cannot fill, and a computed (weight-based) value in a template shown without a
  dose, are refused (``rules/placeholders.py``).
- No template restates a number its rule file holds (it names it); a translated evidence
  text keeps exactly the numbers of the English one.
- Variants: known names only; the ones safety needs are present (``withheld`` summary and
  a ``regimen`` for a magnesium order, ``gated`` for text that advises repletion,
  ``no_dose`` where no dose may be computable, ``in_range_low`` where a low threshold
  reaches into the reference range, whose wording never says hypomagnesaemia).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cds_service.rules.mapfile import MappingError, numbers_in, numbers_of_text, read_mapping
from cds_service.rules.model import GateCondition, Knowledge, Rule
from cds_service.rules.placeholders import (
    FIELDS,
    GATE_PLACEHOLDERS,
    PLACEHOLDERS,
    VARIANTS,
    WITHOUT_DOSE,
    unavailable,
)

LOCALES = ("en", "zh-CN")
EVIDENCE_TEXT_KEYS = (
    "study",
    "design",
    "population",
    "effect_labels",
    "effect_measures",
    "exclusions",
)
RULE_KEYS = (*FIELDS, "contexts", "reasons", "parts", "evidence")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Numbers in a rule file that are not clinical values a template could restate.
_NOT_CLINICAL = frozenset({"citations", "version", "id", "title"})
# Fixed placeholders of shared templates: template key -> names it may use.
SHARED = {
    "common.value_line": {"value", "time"},
    "common.value_line_ionized": {"value", "time"},
    "common.value_line_corrected": {"value", "measured", "albumin", "time"},
    "common.value_line_median": {"value", "time"},
    "common.evidence_line": {"study", "design", "n", "effects"},
    "common.evidence_line_no_effects": {"study", "design", "n"},
    "common.n": {"n"},
    "common.withheld_action": {"reasons", "instead"},
    "common.trial_excluded": {"exclusions"},
    "common.missing_data": {"missing"},
    "common.rules_behind": {"rules"},
    "common.nhs_differs": {"nhs_stage"},
    "common.egfr_computed": {"egfr", "creatinine"},
    "common.egfr_reported": {"egfr"},
    "common.no_dose_reasons": {"weight", "window", "weight_range", "value", "target"},
    "common.suspect": set(),
    "common.tests": set(),
    "aki.baseline_lowest": {"value", "time", "window"},
    "aki.baseline_median": {"value", "start", "end"},
    "aki.criteria.ratio": {"ratio"},
    "aki.criteria.rise": {"rise", "minimum", "within", "from", "from_time"},
    "aki.criteria.absolute": {"absolute"},
    "aki.criteria.dialysis": {"procedure", "time"},
    "aki.met_by": {"value", "time", "criteria"},
    "measures": {"before", "after"},
}


def _walk(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_walk(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = node
    return out


def _is_evidence_key(key: str) -> bool:
    """Optional per locale: a rule's evidence translation, and the review page's words
    (``reviewer.``, checked by rules/reviewer_texts.py)."""
    parts = key.split(".")
    return parts[0] == "reviewer" or (
        len(parts) >= 3 and parts[0] == "rules" and parts[2] == "evidence"
    )


def _shared_names(key: str) -> set[str] | None:
    for prefix, names in SHARED.items():
        if key == prefix or key.startswith(prefix + "."):
            return names
    return None


def load_texts(folder: Path, knowledge: Knowledge, sources: dict[str, Any]) -> dict[str, Any]:
    """Load and check every locale's text file.

    ``sources`` are the parsed files whose numbers templates may not restate: each rule
    file by rule id, and ``gate``, ``measures``, ``aki``, ``units``.

    :raises MappingError: a missing locale or key, an undeclared placeholder, a restated
        number, a missing or unknown variant.
    """
    texts: dict[str, Any] = {}
    for locale in LOCALES:
        path = folder / f"{locale}.yaml"
        if not path.exists():
            raise MappingError(f"{path}: locale file missing")
        data = read_mapping(path, "text")
        if not isinstance(data, dict):
            raise MappingError(f"{path}: expected a mapping")
        texts[locale] = data
    base = _walk(texts["en"])
    for locale, data in texts.items():
        path = folder / f"{locale}.yaml"
        flat = _walk(data)
        missing = sorted(
            k for k in base if k not in flat and k != "locale" and not _is_evidence_key(k)
        )
        if missing:
            raise MappingError(
                f"{path}: missing text key {missing[0]} (and {len(missing) - 1} more)"
            )
        extra = sorted(k for k in flat if k not in base and not _is_evidence_key(k))
        if extra:
            raise MappingError(f"{path}: unknown text key {extra[0]} (not in en.yaml)")
        for key, value in flat.items():
            names = _shared_names(key)
            if names is not None:
                _check_names(path, key, value, names)
        _check_rules(path, data, knowledge, sources)
        _check_gate(path, data, knowledge.gate, sources["gate"])
        _check_evidence(path, data, knowledge.rules)
    return texts


def _check_names(path: Path, key: str, value: Any, allowed: set[str]) -> None:
    for name in _PLACEHOLDER.findall(str(value)):
        if name not in allowed:
            raise MappingError(
                f"{path}: {key}: placeholder {{{name}}} is not one this text can use "
                f"({', '.join(sorted(allowed))})"
            )


def _templates(node: Any, field: str) -> list[tuple[str, str]]:
    """(variant, template) pairs of one field (a string is the ``default`` variant)."""
    if isinstance(node, str):
        return [("default", node)]
    if isinstance(node, dict):
        return [(str(k), str(v)) for k, v in node.items()]
    return []


def _check_rules(path: Path, data: dict[str, Any], k: Knowledge, sources: dict[str, Any]) -> None:
    rules_node = data.get("rules") or {}
    ids = {r.id for r in k.rules}
    for key in rules_node:
        if key not in ids:
            raise MappingError(f"{path}: rules.{key}: no rule has this id")
    low_limit, high_limit = k.reference_range
    hypo = [str(w).lower() for w in (data.get("format") or {}).get("hypo_words") or []]
    for rule in k.rules:
        where = f"{path}: rules.{rule.id}"
        node = rules_node.get(rule.id)
        if not isinstance(node, dict):
            raise MappingError(f"{where}: missing (every rule has its text)")
        unknown = sorted(set(node) - set(RULE_KEYS))
        if unknown:
            raise MappingError(f"{where}: unknown key(s) {unknown} (known: {', '.join(RULE_KEYS)})")
        for name in sorted(rule.placeholders):
            why = unavailable(name, rule, k)
            if why:
                raise MappingError(f"{rule.source_file}: text.placeholders: {why}")
        restated = numbers_in(sources["rules"][rule.id], _NOT_CLINICAL)
        templates: list[tuple[str, str, str]] = []
        for field in FIELDS:
            value = node.get(field)
            if value is not None and not isinstance(value, str | dict):
                raise MappingError(f"{where}.{field}: expected text or variants")
            for variant, template in _templates(value, field):
                if variant not in VARIANTS:
                    raise MappingError(
                        f"{where}.{field}.{variant}: unknown variant (known: {', '.join(VARIANTS)})"
                    )
                templates.append(
                    (f"{field}.{variant}", field if variant == "default" else variant, template)
                )
        for sub in ("contexts", "reasons", "parts"):
            for name, template in (node.get(sub) or {}).items():
                templates.append((f"{sub}.{name}", sub, str(template)))
        computed = {n for n, p in PLACEHOLDERS.items() if p.computed(rule)}
        for key, kind, template in templates:
            for name in _PLACEHOLDER.findall(template):
                if name not in rule.placeholders:
                    raise MappingError(
                        f"{where}.{key}: placeholder {{{name}}} is not declared in "
                        f"{rule.source_file} (text.placeholders)"
                    )
                if name in computed and kind in WITHOUT_DOSE:
                    raise MappingError(
                        f"{where}.{key}: {{{name}}} exists only once a dose is computed; "
                        "this text is shown without one"
                    )
            for number in sorted(numbers_of_text(template) & restated):
                raise MappingError(
                    f"{where}.{key}: restates {number:g}, a number {rule.source_file} holds: "
                    "name it with a placeholder"
                )
        _check_required(where, node, rule)
        if hypo and _can_fire_in_range_low(rule, k, low_limit):
            for field in ("summary", "action"):
                value = node.get(field)
                chosen = value if isinstance(value, str) else None
                if isinstance(value, dict):
                    chosen = value.get("in_range_low")
                    if chosen is None and ("low" in value or "default" in value):
                        raise MappingError(
                            f"{where}.{field}: needs an in_range_low variant: a value in the "
                            "reference range can fire this rule"
                        )
                if chosen and any(w in chosen.lower() for w in hypo):
                    raise MappingError(
                        f"{where}.{field}: a value in the reference range can fire this rule: "
                        "its wording must not call it hypomagnesaemia"
                    )
    del high_limit


def _can_fire_in_range_low(rule: Rule, k: Knowledge, low_limit: float) -> bool:
    """Whether a low threshold of the rule admits serum values at or above the lower limit."""
    if rule.measure is None or k.measures[rule.measure].series != "serum-mg":
        return False
    for t in rule.thresholds:
        side = t.direction or rule.direction
        b = t.bounds
        top = b.lt if b.lt is not None else b.le
        if side == "low" and top is not None:
            top_mg = k.units["magnesium"].to_canonical(top, b.unit)
            if top_mg > low_limit + 1e-9:
                return True
    return False


def _check_required(where: str, node: dict[str, Any], rule: Rule) -> None:
    def has(field: str, variant: str | None = None) -> bool:
        value = node.get(field)
        if variant is None:
            return value is not None
        return isinstance(value, dict) and variant in value

    if not has("summary"):
        raise MappingError(f"{where}: missing summary")
    s = rule.suggestion or {}
    if s.get("kind") == "medication":
        for field, variant in (("summary", "withheld"), ("regimen", None), ("label", None)):
            if not has(field, variant):
                name = f"{field}.{variant}" if variant else field
                raise MappingError(f"{where}: a rule that suggests magnesium needs {name}")
        if ("dose_per_kg" in s or "when_latest_mg" in s) and not has("action", "no_dose"):
            raise MappingError(
                f"{where}: action needs a no_dose variant (no dose may be computable)"
            )
    if rule.advises_repletion and not has("action", "gated"):
        raise MappingError(
            f"{where}: action needs a gated variant ({rule.source_file} says it advises repletion)"
        )
    if rule.trigger and rule.trigger[0] == "monitoring-gap":
        contexts = node.get("contexts") or {}
        for c in rule.trigger[1]["contexts"]:
            if c["id"] not in contexts:
                raise MappingError(f"{where}.contexts: missing {c['id']}")


def _check_gate(
    path: Path, data: dict[str, Any], gate: tuple[GateCondition, ...], source: Any
) -> None:
    node = data.get("gate") or {}
    restated = numbers_in(source, frozenset({"source"}))
    for cond in gate:
        where = f"{path}: gate.{cond.id}"
        template = node.get(cond.id)
        if not isinstance(template, str):
            raise MappingError(f"{where}: missing (every gate condition has its text)")
        for name in _PLACEHOLDER.findall(template):
            if name not in cond.placeholders:
                raise MappingError(
                    f"{where}: placeholder {{{name}}} is not declared for this condition "
                    "in gate.yaml"
                )
        for number in sorted(numbers_of_text(template) & restated):
            raise MappingError(f"{where}: restates {number:g}, a number gate.yaml holds")
    instead = str(node.get("instead", ""))
    for number in sorted(numbers_of_text(instead) & restated):
        raise MappingError(f"{path}: gate.instead: restates {number:g}, a number gate.yaml holds")


def check_gate_placeholders(cond: GateCondition, declared: list[Any], where: str) -> frozenset[str]:
    """The placeholders a gate condition declares, each one its fact can fill.

    :raises MappingError: a placeholder the condition's fact does not give.
    """
    allowed = GATE_PLACEHOLDERS.get(cond.fact[0], frozenset())
    for name in declared:
        if name not in allowed:
            raise MappingError(
                f"{where}.placeholders: {{{name}}} is not given by the {cond.fact[0]!r} fact "
                f"(it gives: {', '.join(sorted(allowed)) or 'nothing'})"
            )
    return frozenset(str(n) for n in declared)


def _check_evidence(path: Path, data: dict[str, Any], rules: tuple[Rule, ...]) -> None:
    by_id = {r.id: r for r in rules}
    for rule_id, node in (data.get("rules") or {}).items():
        if not isinstance(node, dict) or "evidence" not in node:
            continue
        where = f"{path}: rules.{rule_id}.evidence"
        tr = node["evidence"]
        if not isinstance(tr, dict):
            raise MappingError(f"{where}: expected a mapping")
        unknown = sorted(set(tr) - set(EVIDENCE_TEXT_KEYS))
        if unknown:
            raise MappingError(
                f"{where}: unknown key(s) {unknown} (known: {', '.join(EVIDENCE_TEXT_KEYS)})"
            )
        rule = by_id[rule_id]
        for field in ("study", "design", "population"):
            if field in tr and (not isinstance(tr[field], str) or not tr[field].strip()):
                raise MappingError(f"{where}.{field}: expected a non-empty string")
        ev = rule.evidence
        if "population" in tr and not ev.population:
            raise MappingError(f"{where}.population: {rule.source_file} has no evidence.population")
        english = {
            "study": [ev.study],
            "design": [ev.design],
            "population": [ev.population or ""],
            "effect_labels": [e.label for e in ev.effects],
            "effect_measures": [e.measure for e in ev.effects],
            "exclusions": [str(x) for x in ev.extra.get("trial_exclusions") or []],
        }
        for field, want in english.items():
            if field not in tr:
                continue
            got = tr[field] if isinstance(tr[field], list) else [tr[field]]
            if field not in ("study", "design", "population"):
                if not isinstance(tr[field], list) or not all(isinstance(x, str) for x in got):
                    raise MappingError(f"{where}.{field}: expected a list of strings")
                source = (
                    "evidence.effects"
                    if field.startswith("effect")
                    else "evidence.trial_exclusions"
                )
                if len(got) != len(want):
                    raise MappingError(
                        f"{where}.{field}: {len(got)} entries, but {source} of "
                        f"{rule.source_file} has {len(want)}"
                    )
            for i, (en, tr_text) in enumerate(zip(want, got, strict=False)):
                a = sorted(_NUMBER.findall(str(en).replace("²", "2")))
                b = sorted(_NUMBER.findall(str(tr_text).replace("²", "2")))
                if a != b:
                    raise MappingError(
                        f"{where}.{field}[{i}]: the translation's numbers {b} differ from the "
                        f"English text's {a}"
                    )
