"""Check the ``reviewer:`` texts of every locale (the rule review page: GET /rules, docs/rules.md).

The page's words live under the top-level key ``reviewer`` of ``mappings/text/<locale>.yaml``;
its numbers come from the rule, gate, measure and unit files. The loader calls
``check_reviewer_texts`` after loading the texts: every key the page uses exists, every
placeholder is known, and each locale other than English translates every value set and
every free-text phrase (route, timing, fluid...) that the rules and the gate show.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from cds_service.rules.facts import PRE_ECLAMPSIA_SET
from cds_service.rules.model import GateCondition, Rule

REVIEWER_PLACEHOLDERS = frozenset(
    "version n bounds other direction indicator exceptions stage conditions window sets "
    "classes states lab labs items anchor pick series start end measure method when contexts "
    "falling rising drop rise reasons rise_window ratio recent historic_start historic_end "
    "absolute ignored code system number order timing grams route dose meq days range per_kg "
    "infusion until adjust volume fluid over mg_per_min minutes min_bolus max_rate rules rule "
    "max".split()
)
# Keys the page reads (dotted, under ``reviewer``); each must be a string in every locale.
REQUIRED_KEYS = (
    "title intro mappings_version generated language contents rules_count anyone disabled "
    "fires_population clause_sep "
    "overridden none list_or list_and list_sep bounds_and other_unit threshold indicator_range "
    "indicator_when indicator_when_stage indicator_when_gate measure_window measure_encounter "
    "measure_extended measure_corrected fact_vocabulary gate.title gate.intro gate.applies "
    "gate.applies_list gate.not_applicable gate.suggests_lab gate.instead gate.sources "
    "obstetric.title obstetric.intro obstetric.thresholds obstetric.suppressed "
    "obstetric.own_threshold obstetric.evaluated"
).split()
# Groups of words the page looks up by a code (indicator, unit, lab kind...).
REQUIRED_GROUPS = (
    "kinds kind_intro fields indicators directions units labs encounters procedure_states "
    "anchors picks facts triggers suggestion"
).split()
# The free-text fields of a rule's suggestion block that the page shows as words.
PHRASE_FIELDS = ("route",)
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class ReviewerTextError(ValueError):
    """A reviewer text is missing or malformed (the loader turns it into a MappingError)."""


def _walk(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _strings(node: Any) -> Iterator[str]:
    """Every string inside a parsed YAML value (keys and values)."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from _strings(value)
    elif isinstance(node, list | tuple):
        for item in node:
            yield from _strings(item)


def sets_shown(rules: Iterable[Rule], gate: Iterable[GateCondition], known: set[str]) -> set[str]:
    """The value-set ids that rule populations, triggers, suggestions and the gate name."""
    found: set[str] = set()
    for rule in rules:
        for node in (rule.population, rule.trigger, rule.suggestion, rule.show_conditions):
            found.update(s for s in _strings(node) if s in known)
    for cond in gate:
        found.update(s for s in _strings(cond.fact) if s in known)
    if PRE_ECLAMPSIA_SET in known:  # the obstetric scope names it
        found.add(PRE_ECLAMPSIA_SET)
    return found


def phrases_shown(rules: Iterable[Rule]) -> set[str]:
    """The free-text words of suggestion blocks that the page shows."""
    found: set[str] = set()
    for rule in rules:
        s = rule.suggestion or {}
        found.update(str(s[k]) for k in PHRASE_FIELDS if k in s)
        found.update(str(v) for v in (s.get("diluent") or {}).values() if isinstance(v, str))
        infusion = s.get("infusion_per_kg") or {}
        found.update(str(infusion[k]) for k in ("until", "adjust") if k in infusion)
        if isinstance(s.get("code"), dict) and s["code"].get("display"):
            found.add(str(s["code"]["display"]))
    return found


def keys_needed(rules: Iterable[Rule]) -> set[str]:
    """Reviewer keys the rules' own parameters name (a data-quality reason's words)."""
    found: set[str] = set()
    for rule in rules:
        if rule.trigger is None:
            continue
        name, params = rule.trigger
        if name == "data-quality":
            found.update(f"triggers.data-quality-reasons.{r}" for r in params.get("reasons", []))
    return found


def check_locale(
    locale: str,
    node: Any,
    sets: set[str],
    phrases: set[str],
    where: str,
    needed: Iterable[str] = (),
) -> None:
    """Check one locale's ``reviewer`` mapping.

    :raises ReviewerTextError: a missing key, an unknown placeholder, or a missing translation.
    """
    if not isinstance(node, dict):
        raise ReviewerTextError(f"{where}: missing text key reviewer")
    flat = dict(_walk(node))
    for key, value in flat.items():
        for name in _PLACEHOLDER.findall(str(value)):
            if name not in REVIEWER_PLACEHOLDERS:
                raise ReviewerTextError(f"{where}: reviewer.{key}: unknown placeholder {{{name}}}")
    for key in (*REQUIRED_KEYS, *sorted(needed)):
        if not isinstance(flat.get(key), str):
            raise ReviewerTextError(f"{where}: missing text key reviewer.{key}")
    for group in REQUIRED_GROUPS:
        if not isinstance(node.get(group), dict) or not node[group]:
            raise ReviewerTextError(f"{where}: missing text key reviewer.{group}")
    if locale == "en":
        return  # English shows the value-set titles and the rule files' own words
    names = node.get("value_sets") or {}
    for vs in sorted(sets):
        if not isinstance(names.get(vs), str):
            raise ReviewerTextError(f"{where}: reviewer.value_sets: no translation of {vs!r}")
    words = node.get("phrases") or {}
    for phrase in sorted(phrases):
        if not isinstance(words.get(phrase), str):
            raise ReviewerTextError(f"{where}: reviewer.phrases: no translation of {phrase!r}")


def check_reviewer_texts(
    folder: Path,
    texts: dict[str, dict[str, Any]],
    rules: tuple[Rule, ...],
    gate: tuple[GateCondition, ...],
    known_sets: set[str],
) -> None:
    """Check the ``reviewer`` texts of every locale against the loaded rules and gate.

    :raises ReviewerTextError: the first problem, naming the file and the key.
    """
    sets = sets_shown(rules, gate, known_sets)
    phrases = phrases_shown(rules)
    needed = keys_needed(rules)
    for locale, data in texts.items():
        where = str(folder / f"{locale}.yaml")
        check_locale(locale, data.get("reviewer"), sets, phrases, where, needed)
