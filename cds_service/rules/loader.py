"""Load and validate everything in ``mappings/`` at start-up; fail loudly, naming file and field.

One rule file: ``rules/load_rule.py``; card text: ``rules/load_text.py``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from cds_service.clinical.delta_checks import DeltaParams
from cds_service.clinical.fhir_context import ENCOUNTER_CLASS_SETS, ICU_LOCATION
from cds_service.clinical.fhir_labs import LAB_SETS, NON_SERUM_SPECIMEN
from cds_service.clinical.terminology import CodeRange, ValueSet, ValueSets, code_key, system_key
from cds_service.clinical.units import Units, build_units
from cds_service.rules import facts as F
from cds_service.rules.context import AKI_SET, DIALYSIS_SET, MAGNESIUM_SETS
from cds_service.rules.delta_params import DeltaParamsError, parse_delta_params
from cds_service.rules.durations import parse_duration
from cds_service.rules.load_push import check_site_push, load_push
from cds_service.rules.load_rule import bounds, citation, fact, load_rule, named_quantity
from cds_service.rules.load_text import EVIDENCE_TEXT_KEYS, check_gate_placeholders, load_texts
from cds_service.rules.loader_names import load_names
from cds_service.rules.mapfile import MappingError, need, read_mapping, read_yaml
from cds_service.rules.measures import ANCHORS, PICKS, parse_window
from cds_service.rules.model import (
    INDICATOR_ORDER,
    GateCondition,
    Knowledge,
    Measure,
    Rule,
    SiteLabCode,
    SiteMap,
    Window,
)
from cds_service.rules.reviewer_texts import ReviewerTextError, check_reviewer_texts

__all__ = ["EVIDENCE_TEXT_KEYS", "MappingError", "load_knowledge"]

# Value sets named in code: without one of them a check would quietly never match
# (coded AKI, dialysis, magnesium given, pre-eclampsia, non-serum specimens, the lab
# kinds, encounter classes, ICU locations).
REQUIRED_VALUE_SETS = (
    AKI_SET,
    DIALYSIS_SET,
    *MAGNESIUM_SETS,
    F.PRE_ECLAMPSIA_SET,
    NON_SERUM_SPECIMEN,
    *LAB_SETS,
    *(set_id for set_id, _ in ENCOUNTER_CLASS_SETS),
    ICU_LOCATION,
)
SERIES = F.LAB_KINDS


def load_valuesets(folder: Path) -> ValueSets:
    """Load ``codes/*.yaml``.

    :raises MappingError: a malformed or duplicate value set.
    """
    sets: dict[str, ValueSet] = {}
    for path in sorted(folder.glob("*.yaml")):
        data = read_mapping(path, "valueset")
        where = str(path)
        vs_id = need(data, "id", where)
        if vs_id != path.stem:
            raise MappingError(f"{where}: id {vs_id!r} differs from the file name")
        if vs_id in sets:
            raise MappingError(f"{where}: duplicate value set id {vs_id!r}")
        codes: set[tuple[str, str]] = set()
        displays: dict[tuple[str, str], str] = {}
        for i, c in enumerate(data.get("codes") or []):
            w = f"{where}: codes[{i}]"
            system, code = need(c, "system", w), str(need(c, "code", w, (str, int)))
            need(c, "display", w)
            need(c, "source", w)
            key = (system_key(system), code_key(system, code))
            codes.add(key)
            displays[key] = c["display"]
        ranges = []
        for i, r in enumerate(data.get("ranges") or []):
            w = f"{where}: ranges[{i}]"
            system = need(r, "system", w)
            need(r, "source", w)
            if "prefix" in r:
                ranges.append(
                    CodeRange(system_key(system), prefix=code_key(system, str(r["prefix"])))
                )
            elif "from" in r and "to" in r:
                low, high = code_key(system, str(r["from"])), code_key(system, str(r["to"]))
                if len(low) != len(high) or low > high:
                    raise MappingError(f"{w}: from/to must have the same length and from <= to")
                ranges.append(CodeRange(system_key(system), low=low, high=high))
            else:
                raise MappingError(f"{w}: a range needs 'prefix' or 'from' and 'to'")
        names = tuple(str(t).lower() for t in data.get("text_match") or [])
        if not codes and not ranges and not names:
            raise MappingError(f"{where}: value set has no codes, ranges or text_match")
        sets[vs_id] = ValueSet(
            vs_id, str(data.get("title", vs_id)), frozenset(codes), tuple(ranges), names, displays
        )
    return ValueSets(sets)


def load_site(path: Path | None, valuesets: ValueSets) -> SiteMap:
    """Load a site mapping file (local lab codes, ICU units, governance).

    :raises MappingError: unknown value set or malformed entry.
    """
    if path is None:
        return SiteMap()
    data = read_mapping(path, "site") or {}
    where = str(path)
    codes: dict[tuple[str, str], SiteLabCode] = {}
    for i, c in enumerate(data.get("lab_codes") or []):
        w = f"{where}: lab_codes[{i}]"
        system, code = need(c, "system", w), str(need(c, "code", w, (str, int)))
        vs = need(c, "value_set", w)
        if vs not in valuesets:
            raise MappingError(f"{w}.value_set: value set {vs!r} is referenced but absent")
        codes[(system, code)] = SiteLabCode(system, code, vs, c.get("unit"), c.get("display"))
    overrides = data.get("indicator_overrides") or {}
    for rule_id, ind in overrides.items():
        if ind not in INDICATOR_ORDER:
            raise MappingError(f"{where}: indicator_overrides.{rule_id}: unknown indicator {ind!r}")
    return SiteMap(
        lab_codes=codes,
        icu_units=frozenset(str(u) for u in data.get("icu_units") or []),
        icu_units_removed=frozenset(str(u) for u in data.get("icu_units_removed") or []),
        disabled_rules=frozenset(data.get("disabled_rules") or []),
        indicator_overrides=dict(overrides),
        source_file=where,
        push_enabled=frozenset((data.get("push") or {}).get("enable") or []),
    )


def load_measures(path: Path) -> dict[str, Measure]:
    """Load ``measures.yaml``.

    :raises MappingError: unknown anchor, pick or series, or a bad window.
    """
    data = read_mapping(path, "measures")
    out: dict[str, Measure] = {}
    for mid, raw in (need(data, "measures", str(path), dict)).items():
        where = f"{path}: measures.{mid}"
        anchor, pick, series = raw.get("anchor"), raw.get("pick"), raw.get("series")
        if anchor not in ANCHORS:
            raise MappingError(f"{where}.anchor: unknown anchor {anchor!r}")
        if pick not in PICKS:
            raise MappingError(f"{where}.pick: unknown pick {pick!r}")
        if series not in SERIES:
            raise MappingError(f"{where}.series: unknown series {series!r}")
        window = None
        if "window" in raw:
            try:
                window = Window(*parse_window(raw["window"], where))
            except ValueError as exc:
                text = str(exc)
                raise MappingError(
                    text if text.startswith(where) else f"{where}.window: {text}"
                ) from None
        elif anchor != "encounter":
            raise MappingError(f"{where}: missing field 'window'")
        out[mid] = Measure(
            id=mid,
            title=str(raw.get("title", mid)),
            definition=str(raw.get("definition", "")),
            series=series,
            anchor=anchor,
            pick=pick,
            window=window,
            albumin_corrected=bool(raw.get("albumin_corrected", False)),
            extend_to_encounter_start=bool(raw.get("extend_to_encounter_start", False)),
        )
    return out


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.yaml")):
        if "site" in path.relative_to(root).parts:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_gate(
    path: Path, checker: F.Checker
) -> tuple[tuple[GateCondition, ...], Any, dict[str, Any]]:
    """Load ``gate.yaml``: conditions (each a fact, with the placeholders its text names),
    the sources, and the numbers of what to do instead.

    :raises MappingError: a bad fact, an unknown placeholder, a bad quantity.
    """
    raw = read_mapping(path, "gate")
    where = str(path)
    gate = []
    seen: set[str] = set()
    for i, g in enumerate(need(raw, "conditions", where, list)):
        w = f"{where}: conditions[{i}]"
        gid = need(g, "id", w)
        if gid in seen:
            raise MappingError(f"{w}.id: {gid!r} given twice")
        seen.add(gid)
        term = fact(g.get("fact"), w, checker)
        cond = GateCondition(gid, term.fact, bool(g.get("suggest_lab")), term=term)
        declared = g.get("placeholders") or []
        if not isinstance(declared, list):
            raise MappingError(f"{w}.placeholders: expected a list")
        placeholders = check_gate_placeholders(cond, declared, w)
        gate.append(
            GateCondition(gid, term.fact, cond.suggest_lab, placeholders=placeholders, term=term)
        )
    sources = tuple(
        citation(c, f"{where}: source[{i}]") for i, c in enumerate(raw.get("source") or [])
    )
    instead = {
        str(name): named_quantity(q, f"{where}: instead.{name}")
        for name, q in (need(raw, "instead", where, dict)).items()
    }
    return tuple(gate), sources, instead


def load_delta_checks(
    path: Path,
    valuesets: ValueSets,
    units: Units,
    rules: tuple[Rule, ...],
    measures: dict[str, Measure],
) -> DeltaParams:
    """Load ``delta-checks.yaml`` (suspect results, evidence.md §1).

    :raises MappingError: a missing or unknown key or a bad value, naming the file and key.
    """
    raw = read_yaml(path)
    latest = {r.id for r in rules if r.measure and measures[r.measure].anchor == "now"}
    try:
        params = parse_delta_params(raw, valuesets, units, latest)
    except DeltaParamsError as exc:
        raise MappingError(f"{path}: {exc}") from None
    for i, c in enumerate(raw["source"]):
        citation(c, f"{path}: source[{i}]")
    return params


def _rule_files(root: Path) -> list[Path]:
    order_path = root / "rule-order.yaml"
    order = need(read_mapping(order_path, "rule-order"), "order", str(order_path), list)
    files = {p.stem: p for p in (root / "rules").glob("*.yaml")}
    twice = sorted({rid for rid in order if order.count(rid) > 1})
    if twice:
        raise MappingError(f"{order_path}: order: rule id(s) listed twice: {twice}")
    for rid in order:
        if rid not in files:
            raise MappingError(f"{order_path}: rule {rid!r} has no file in rules/")
    for stem, path in files.items():
        if stem not in order:
            raise MappingError(f"{path}: rule not listed in {order_path}")
    return [files[rid] for rid in order]


def load_knowledge(root: Path, site: Path | None = None) -> Knowledge:
    """Load and validate the whole mappings folder (plus an optional site file).

    :raises MappingError: anything invalid, with the file and field named.
    """
    valuesets = load_valuesets(root / "codes")
    missing = sorted(set(REQUIRED_VALUE_SETS) - set(valuesets.sets))
    if missing:
        raise MappingError(f"{root / 'codes'}: value sets the service reads are missing: {missing}")
    upath = root / "units.yaml"
    units_raw = read_mapping(upath, "units")
    try:
        units: Units = build_units(need(units_raw, "quantities", str(upath), dict))
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        raise MappingError(f"{upath}: {exc}") from None

    def unit_ok(quantity: str, unit: str) -> bool:
        return quantity in units.quantities and unit in units[quantity].preferred

    checker = F.Checker(set(valuesets.sets), unit_ok)
    plausible_raw = need(units_raw, "plausible", str(upath), dict)
    plausible_limits = {
        q: bounds(b, f"{upath}: plausible.{q}", q, checker) for q, b in plausible_raw.items()
    }
    if "magnesium" not in plausible_limits:
        raise MappingError(f"{upath}: missing field 'plausible.magnesium'")
    ref = need(need(units_raw, "reference_range", str(upath), dict), "magnesium", str(upath), dict)
    albumin = need(units_raw, "albumin_correction", str(upath), dict)
    mpath = root / "measures.yaml"
    measures_raw = read_yaml(mpath)  # validated by load_measures
    measures = load_measures(mpath)
    index_limit = _duration(
        need(measures_raw, "index_event_limit", str(mpath)), f"{mpath}: index_event_limit"
    )
    given = _duration(
        need(measures_raw, "administration_counts_for", str(mpath)),
        f"{mpath}: administration_counts_for",
    )
    gate_path = root / "gate.yaml"
    gate, gate_sources, instead = load_gate(gate_path, checker)
    aki = read_mapping(root / "aki.yaml", "aki")
    for key in ("kdigo", "nhs"):
        need(aki, key, str(root / "aki.yaml"), dict)
    egfr = need(
        read_mapping(root / "egfr.yaml", "egfr"), "ckd_epi_2021", str(root / "egfr.yaml"), dict
    )
    paths = _rule_files(root)
    rules = tuple(load_rule(path, i, measures, checker) for i, path in enumerate(paths))
    delta = load_delta_checks(root / "delta-checks.yaml", valuesets, units, rules, measures)
    site_map = load_site(site, valuesets)
    ids = [r.id for r in rules]
    for rid in site_map.disabled_rules | set(site_map.indicator_overrides):
        if rid not in ids:
            raise MappingError(f"{site_map.source_file}: unknown rule id {rid!r}")
    push = load_push(root / "push.yaml", ids)
    check_site_push(site_map.push_enabled, push, site_map.source_file)
    knowledge = Knowledge(
        valuesets=valuesets,
        units=units,
        measures=measures,
        gate=gate,
        gate_sources=gate_sources,
        aki=aki,
        rules=rules,
        texts={},
        site=site_map,
        plausible=plausible_limits["magnesium"],
        plausible_limits=plausible_limits,
        reference_range=(float(ref["low"]), float(ref["high"])),
        albumin_correction=albumin,
        version=_fingerprint(root),
        delta=delta,
        gate_quantities=instead,
        egfr=egfr,
        index_event_limit=index_limit,
        administration_counts_for=given,
        **load_names(root, site_map, valuesets),
        push=push,
    )
    sources = {
        "rules": {r.id: read_yaml(p) for r, p in zip(rules, paths, strict=True)},
        "gate": read_yaml(gate_path),
    }
    knowledge.texts.update(load_texts(root / "text", knowledge, sources))
    try:
        check_reviewer_texts(root / "text", knowledge.texts, rules, gate, set(valuesets.sets))
    except ReviewerTextError as exc:
        raise MappingError(str(exc)) from None
    return knowledge


def _duration(value: Any, where: str) -> Any:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise MappingError(f"{where}: {exc}") from None
