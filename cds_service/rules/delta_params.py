"""Read and validate ``mappings/delta-checks.yaml`` (suspect results, evidence.md §1).

Strict: every key is required, unknown keys are refused, and each error names the key path.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from cds_service.clinical.delta_checks import DeltaParams
from cds_service.clinical.fhir_labs import LAB_SETS
from cds_service.clinical.model import Coding
from cds_service.clinical.terminology import ValueSets
from cds_service.clinical.units import Units
from cds_service.rules.context import SERIES_QUANTITY
from cds_service.rules.durations import parse_duration

# The tests the delta checks can review: those with a repeat order and a unit quantity.
TESTS = tuple(SERIES_QUANTITY)


class DeltaParamsError(ValueError):
    """The file is invalid; the message names the key path (the loader adds the file)."""


def _keys(node: object, where: str, keys: Collection[str]) -> dict[str, Any]:
    if not isinstance(node, dict):
        raise DeltaParamsError(f"{where}: expected a mapping")
    unknown = sorted(set(node) - set(keys))
    if unknown:
        raise DeltaParamsError(f"{where}: unknown key(s) {unknown} (known: {', '.join(keys)})")
    missing = [k for k in keys if node.get(k) is None]
    if missing:
        raise DeltaParamsError(f"{where}: missing key '{missing[0]}'")
    return node


def _pct(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 100:
        raise DeltaParamsError(f"{where}: expected a percentage between 0 and 100")
    return float(value)


def _duration(value: object, where: str) -> Any:
    try:
        found = parse_duration(value)
    except ValueError as exc:
        raise DeltaParamsError(f"{where}: {exc}") from None
    if found.total_seconds() <= 0:
        raise DeltaParamsError(f"{where}: expected a positive duration")
    return found


def _test(value: object, where: str) -> str:
    if value not in TESTS:
        raise DeltaParamsError(f"{where}: unknown test {value!r} (known: {', '.join(TESTS)})")
    return str(value)


def _order(node: object, where: str, kind: str, valuesets: ValueSets) -> dict[str, str]:
    """A repeat-order coding: system and code of a value set that feeds the test."""
    coding = _keys(node, where, ("system", "code", "display"))
    if not all(isinstance(coding[k], str) for k in ("system", "code", "display")):
        raise DeltaParamsError(f"{where}: system, code and display are strings")
    feeds = [s for s, (series, _) in LAB_SETS.items() if series == kind and s in valuesets]
    if not any(valuesets.in_set(Coding(coding["system"], coding["code"]), s) for s in feeds):
        raise DeltaParamsError(
            f"{where}: {coding['code']!r} is not a code of the {kind} value sets"
        )
    return {k: coding[k] for k in ("system", "code", "display")}


def parse_delta_params(
    raw: object, valuesets: ValueSets, units: Units, latest_rules: Collection[str]
) -> DeltaParams:
    """The validated parameters of a delta-checks file.

    ``latest_rules`` are the ids of the rules whose measure is the latest value (anchor now):
    only they can still fire on a suspect latest result.

    :raises DeltaParamsError: a missing or unknown key, a bad value, an unknown test, value
        set or rule; the message names the key path.
    """
    top = _keys(
        raw,
        "delta-checks",
        ("source", "dilution", "jump", "resolution", "still_used_by", "repeat_order"),
    )
    dil = _keys(
        top["dilution"],
        "dilution",
        ("tests", "same_draw_within", "fall_ge_pct", "previous_within"),
    )
    tests = dil["tests"]
    if not isinstance(tests, list) or len(tests) < 2 or len(set(map(str, tests))) != len(tests):
        raise DeltaParamsError("dilution.tests: expected two or more different tests")
    dilution_tests = tuple(_test(t, f"dilution.tests[{i}]") for i, t in enumerate(tests))
    jump = _keys(top["jump"], "jump", ("test", "rise_ge", "previous_within", "magnesium_given"))
    jump_test = _test(jump["test"], "jump.test")
    rise = _keys(jump["rise_ge"], "jump.rise_ge", ("value", "unit"))
    if isinstance(rise["value"], bool) or not isinstance(rise["value"], int | float):
        raise DeltaParamsError("jump.rise_ge.value: expected a number")
    quantity = units[SERIES_QUANTITY[jump_test]]
    if str(rise["unit"]) not in quantity.preferred:
        raise DeltaParamsError(f"jump.rise_ge.unit: {rise['unit']!r} is not a unit of {jump_test}")
    given = jump["magnesium_given"]
    if not isinstance(given, list) or not given:
        raise DeltaParamsError("jump.magnesium_given: expected a list of value set ids")
    for i, set_id in enumerate(given):
        if set_id not in valuesets:
            raise DeltaParamsError(
                f"jump.magnesium_given[{i}]: value set {set_id!r} is referenced but absent"
            )
    res = _keys(top["resolution"], "resolution", ("within", "refuted_within_pct"))
    used_by = top["still_used_by"]
    if not isinstance(used_by, list):
        raise DeltaParamsError("still_used_by: expected a list of rule ids")
    for i, rule_id in enumerate(used_by):
        if rule_id not in latest_rules:
            raise DeltaParamsError(
                f"still_used_by[{i}]: {rule_id!r} is not a rule that uses the latest value"
            )
    suspect_tests = tuple(dict.fromkeys((*dilution_tests, jump_test)))
    orders = _keys(top["repeat_order"], "repeat_order", suspect_tests)
    if not isinstance(top["source"], list) or not top["source"]:
        raise DeltaParamsError("source: expected a list of citations")
    return DeltaParams(
        dilution_tests=dilution_tests,
        same_draw=_duration(dil["same_draw_within"], "dilution.same_draw_within"),
        fall_pct=_pct(dil["fall_ge_pct"], "dilution.fall_ge_pct"),
        fall_within=_duration(dil["previous_within"], "dilution.previous_within"),
        jump_test=jump_test,
        rise=quantity.to_canonical(float(rise["value"]), str(rise["unit"])),
        jump_within=_duration(jump["previous_within"], "jump.previous_within"),
        magnesium_sets=tuple(given),
        resolve_within=_duration(res["within"], "resolution.within"),
        refute_pct=_pct(res["refuted_within_pct"], "resolution.refuted_within_pct"),
        still_used_by=frozenset(used_by),
        repeat_order={
            k: _order(orders[k], f"repeat_order.{k}", k, valuesets) for k in suspect_tests
        },
    )
