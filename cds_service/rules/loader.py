"""Load and validate everything in ``mappings/`` at start-up; fail loudly, naming file and field."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from cds_service.clinical.fhir_labs import NON_SERUM_SPECIMEN
from cds_service.clinical.terminology import CodeRange, ValueSet, ValueSets, code_key, system_key
from cds_service.clinical.units import Units, build_units
from cds_service.rules import facts as F
from cds_service.rules.context import AKI_SET, DIALYSIS_SET, MAGNESIUM_SETS
from cds_service.rules.durations import parse_duration
from cds_service.rules.loader_names import (
    ICU_FILE,
    SPECIMEN_FILE,
    NamesError,
    load_icu_names,
    load_specimen_words,
)
from cds_service.rules.measures import ANCHORS, PICKS, parse_window
from cds_service.rules.model import (
    INDICATOR_ORDER,
    Bounds,
    Citation,
    Effect,
    Evidence,
    GateCondition,
    Knowledge,
    Measure,
    Rule,
    SiteLabCode,
    SiteMap,
    Threshold,
    Window,
)
from cds_service.rules.triggers import TRIGGERS

# Value sets named in code: without one of them a check would quietly never match
# (coded AKI, dialysis for AKI and the gate, magnesium already given, pre-eclampsia,
# non-serum specimens).
REQUIRED_VALUE_SETS = (
    AKI_SET,
    DIALYSIS_SET,
    *MAGNESIUM_SETS,
    F.PRE_ECLAMPSIA_SET,
    NON_SERUM_SPECIMEN,
)
CATEGORIES = ("association", "supplementation", "monitoring", "data", "aki", "safety")
DIRECTIONS = ("low", "high", "prevention", "safety", "monitoring", "aki")
SERIES = F.LAB_KINDS
LOCALES = ("en", "zh-CN")
PLACEHOLDERS = frozenset(
    "value value_converted value_mg_dl value_mmol_l time measure admission icu_start surgery_end "
    "procedure "
    "condition drugs markers band n stage baseline nhs_stage values trend reason window since "
    "dose infusion bolus_minutes rate target monitoring_context age weight reasons rules missing "
    "study design population effects reference_range unit exclusions nhs_stage".split()
)
_THRESHOLD_KEYS = ("unit", "direction", "label", "effect", "indicator")
# Optional per-locale translation of a rule's evidence: ``rules.<text key>.evidence``.
EVIDENCE_TEXT_KEYS = ("design", "population", "effect_labels", "effect_measures", "exclusions")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class MappingError(ValueError):
    """A mapping file is invalid; the message names the file and the field."""


def _read(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot read YAML: {exc}") from None


def _need(data: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if not isinstance(data, dict) or key not in data or data[key] is None:
        raise MappingError(f"{where}: missing field '{key}'")
    if not isinstance(data[key], kind):
        raise MappingError(f"{where}.{key}: wrong type {type(data[key]).__name__}")
    return data[key]


def load_valuesets(folder: Path) -> ValueSets:
    """Load ``codes/*.yaml``.

    :raises MappingError: a malformed or duplicate value set.
    """
    sets: dict[str, ValueSet] = {}
    for path in sorted(folder.glob("*.yaml")):
        data = _read(path)
        where = str(path)
        vs_id = _need(data, "id", where)
        if vs_id != path.stem:
            raise MappingError(f"{where}: id {vs_id!r} differs from the file name")
        if vs_id in sets:
            raise MappingError(f"{where}: duplicate value set id {vs_id!r}")
        codes: set[tuple[str, str]] = set()
        displays: dict[tuple[str, str], str] = {}
        for i, c in enumerate(data.get("codes") or []):
            w = f"{where}: codes[{i}]"
            system, code = _need(c, "system", w), str(_need(c, "code", w, (str, int)))
            _need(c, "display", w)
            _need(c, "source", w)
            key = (system_key(system), code_key(system, code))
            codes.add(key)
            displays[key] = c["display"]
        ranges = []
        for i, r in enumerate(data.get("ranges") or []):
            w = f"{where}: ranges[{i}]"
            system = _need(r, "system", w)
            _need(r, "source", w)
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
    data = _read(path) or {}
    where = str(path)
    codes: dict[tuple[str, str], SiteLabCode] = {}
    for i, c in enumerate(data.get("lab_codes") or []):
        w = f"{where}: lab_codes[{i}]"
        system, code = _need(c, "system", w), str(_need(c, "code", w, (str, int)))
        vs = _need(c, "value_set", w)
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
    )


def load_names(root: Path, site: SiteMap, valuesets: ValueSets) -> dict[str, Any]:
    """``icu-units.yaml`` (with the site's ICU names) and ``specimens.yaml``, as Knowledge fields.

    :raises MappingError: an invalid file, named with the field.
    """
    try:
        return {
            "icu_names": load_icu_names(
                root / ICU_FILE, sorted(site.icu_units), sorted(site.icu_units_removed)
            ),
            "specimen_words": load_specimen_words(root / SPECIMEN_FILE, set(valuesets.sets)),
        }
    except NamesError as exc:
        raise MappingError(str(exc)) from None


def _bounds(raw: Any, where: str, quantity: str | None, checker: F.Checker) -> Bounds:
    try:
        return F.parse_bounds(raw, where, quantity, checker)
    except F.FactError as exc:
        raise MappingError(str(exc)) from None


def _threshold(
    raw: Any, where: str, quantity: str, checker: F.Checker, need_dir: bool
) -> Threshold:
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - {*F.BOUND_KEYS, *_THRESHOLD_KEYS})
    if unknown:
        raise MappingError(
            f"{where}: unknown key(s) {unknown} (bounds are {', '.join(F.BOUND_KEYS)}, with a unit)"
        )
    direction = raw.get("direction")
    if need_dir and direction not in ("low", "high"):
        raise MappingError(f"{where}.direction: expected low or high")
    bounds = _bounds(
        {k: v for k, v in raw.items() if k in (*F.BOUND_KEYS, "unit")}, where, quantity, checker
    )
    return Threshold(direction or "", bounds, raw.get("label"), raw.get("effect"))


def _citation(raw: Any, where: str) -> Citation:
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping")
    if raw.get("ref") in (None, ""):
        raise MappingError(f"{where}: missing citation field 'ref'")
    authors = raw.get("authors") or raw.get("label")
    if not authors:
        raise MappingError(f"{where}: missing citation field 'authors'")
    if not raw.get("doi") and not raw.get("url"):
        raise MappingError(f"{where}: citation has neither doi nor url")
    doi = raw.get("doi")
    if doi and not str(doi).startswith("https://doi.org/"):
        raise MappingError(f"{where}.doi: must be a https://doi.org/ link")
    return Citation(
        ref=str(raw["ref"]),
        authors=str(authors),
        year=raw.get("year"),
        title=str(raw.get("title") or raw.get("label") or ""),
        journal=raw.get("journal"),
        doi=doi,
        url=raw.get("url"),
    )


def _evidence(raw: Any, where: str) -> Evidence:
    study = _need(raw, "study", where)
    design = _need(raw, "design", where)
    effects = []
    for i, e in enumerate(raw.get("effects") or []):
        w = f"{where}.effects[{i}]"
        ci = e.get("ci")
        if ci is not None and (not isinstance(ci, list) or len(ci) != 2):
            raise MappingError(f"{w}.ci: expected [low, high]")
        effects.append(
            Effect(
                label=str(_need(e, "label", w)),
                measure=str(e.get("measure", "")),
                value=e.get("value"),
                ci=(float(ci[0]), float(ci[1])) if ci else None,
                text=e.get("text"),
            )
        )
    known = {"study", "design", "n", "population", "effects", "checked", "set_here"}
    return Evidence(
        study=study,
        design=design,
        n=raw.get("n"),
        population=raw.get("population"),
        effects=tuple(effects),
        checked=raw.get("checked"),
        set_here=raw.get("set_here"),
        extra={k: v for k, v in raw.items() if k not in known},
    )


def _facts(raw: Any, where: str, checker: F.Checker) -> tuple[F.Term, ...]:
    """Validate a list of fact terms and compile them (``Term.fact`` is the term as written)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MappingError(f"{where}: expected a list of facts")
    out = []
    for i, term in enumerate(raw):
        try:
            fact = F.parse_fact(term, f"{where}[{i}]")
            F.check_fact(fact, f"{where}[{i}]", checker)
        except F.FactError as exc:
            raise MappingError(str(exc)) from None
        out.append(F.compile_fact(fact))
    return tuple(out)


def load_rule(path: Path, order: int, measures: dict[str, Measure], checker: F.Checker) -> Rule:
    """Load and validate one rule file.

    :raises MappingError: any invalid field, named with the file.
    """
    data = _read(path)
    where = str(path)
    if not isinstance(data, dict):
        raise MappingError(f"{where}: expected a mapping")
    rule_id = _need(data, "id", where)
    if rule_id != path.stem:
        raise MappingError(f"{where}: id {rule_id!r} differs from the file name")
    version = str(_need(data, "version", where, (str, int, float)))
    category = _need(data, "category", where)
    if category not in CATEGORIES:
        raise MappingError(f"{where}: category: unknown {category!r}")
    direction = _need(data, "direction", where)
    if direction not in (*DIRECTIONS, "by-threshold"):
        raise MappingError(f"{where}: direction: unknown {direction!r}")
    indicator = _need(data, "indicator", where)
    if indicator not in INDICATOR_ORDER:
        raise MappingError(f"{where}: indicator: unknown {indicator!r}")
    terms = _facts(data.get("population"), f"{where}: population", checker)
    measure_id = data.get("measure")
    trigger = None
    trigger_args = None
    thresholds: tuple[Threshold, ...] = ()
    quantity = "magnesium"
    if measure_id is not None:
        if measure_id not in measures:
            raise MappingError(f"{where}: measure: unknown measure {measure_id!r}")
        raw_t = data.get("thresholds")
        if not isinstance(raw_t, list) or not raw_t:
            raise MappingError(f"{where}: a measure rule needs thresholds")
        thresholds = tuple(
            _threshold(
                t, f"{where}: thresholds[{i}]", quantity, checker, direction == "by-threshold"
            )
            for i, t in enumerate(raw_t)
        )
    if "trigger" in data:
        raw_trig = data["trigger"]
        if not isinstance(raw_trig, dict) or len(raw_trig) != 1:
            raise MappingError(f"{where}: trigger: expected one {{name: params}}")
        ((name, params),) = raw_trig.items()
        if name not in TRIGGERS:
            raise MappingError(
                f"{where}: trigger: unknown trigger {name!r} (known: {sorted(TRIGGERS)})"
            )
        try:
            TRIGGERS[name].check(params or {}, f"{where}: trigger.{name}", checker)
        except F.FactError as exc:
            raise MappingError(str(exc)) from None
        trigger = (name, params or {})
        trigger_args = TRIGGERS[name].prepare(trigger[1])
    if measure_id is not None and trigger is not None:
        raise MappingError(f"{where}: a rule has a measure or a trigger, not both")
    bands = tuple(
        _threshold(t, f"{where}: bands[{i}]", quantity, checker, False)
        for i, t in enumerate(data.get("bands") or [])
    )
    ind_when = []
    for i, t in enumerate(data.get("indicator_when") or []):
        ind = t.get("indicator") if isinstance(t, dict) else None
        if ind not in INDICATOR_ORDER:
            raise MappingError(f"{where}: indicator_when[{i}].indicator: unknown {ind!r}")
        ind_when.append(
            (ind, _threshold(t, f"{where}: indicator_when[{i}]", quantity, checker, False).bounds)
        )
    stage_map = {int(k): v for k, v in (data.get("indicator_when_stage") or {}).items()}
    for stage, ind in stage_map.items():
        if ind not in INDICATOR_ORDER:
            raise MappingError(f"{where}: indicator_when_stage.{stage}: unknown indicator {ind!r}")
    obstetric = data.get("obstetric") or {}
    obst_thresholds = tuple(
        _threshold(
            t, f"{where}: obstetric.thresholds[{i}]", quantity, checker, direction == "by-threshold"
        )
        for i, t in enumerate(obstetric.get("thresholds") or [])
    )
    raw_cites = data.get("citations")
    if not isinstance(raw_cites, list) or not raw_cites:
        raise MappingError(f"{where}: missing citation")
    citations = tuple(_citation(c, f"{where}: citations[{i}]") for i, c in enumerate(raw_cites))
    evidence = _evidence(_need(data, "evidence", where, dict), f"{where}: evidence")
    advice = _need(data, "advice", where, dict)
    text_key = _need(advice, "text", f"{where}: advice")
    suggestion = data.get("suggestion")
    if suggestion is not None:
        _check_suggestion(suggestion, f"{where}: suggestion", checker)
    show = tuple(data.get("show_conditions") or [])
    for s in show:
        if s not in checker.valuesets:
            raise MappingError(
                f"{where}: show_conditions: value set {s!r} is referenced but absent"
            )
    return Rule(
        id=rule_id,
        version=version,
        title=_need(data, "title", where),
        category=category,
        direction=direction,
        indicator=indicator,
        population=tuple(t.fact for t in terms),
        evidence=evidence,
        citations=citations,
        text_key=text_key,
        order=order,
        measure=measure_id,
        thresholds=thresholds,
        bands=bands,
        indicator_when=tuple(ind_when),
        indicator_when_stage=stage_map,
        trigger=trigger,
        suggestion=suggestion,
        fallback=bool(data.get("fallback", False)),
        obstetric_suppress=bool(obstetric.get("suppress", False)),
        obstetric_thresholds=obst_thresholds,
        show_conditions=show,
        source_file=where,
        terms=terms,
        trigger_args=trigger_args,
    )


def _check_suggestion(raw: Any, where: str, checker: F.Checker) -> None:
    kind = _need(raw, "kind", where)
    if kind == "lab-order":
        code = _need(raw, "code", where, dict)
        _need(code, "system", f"{where}.code")
        _need(code, "code", f"{where}.code")
        return
    if kind != "medication":
        raise MappingError(f"{where}.kind: expected medication or lab-order")
    med = _need(raw, "medication", where)
    if med not in checker.valuesets:
        raise MappingError(f"{where}.medication: value set {med!r} is referenced but absent")
    if "dose" in raw:
        dose = _need(raw, "dose", where, dict)
        if dose.get("unit") != "g" or not isinstance(dose.get("amount"), int | float):
            raise MappingError(f"{where}.dose: expected {{amount: number, unit: g}}")
    elif "dose_per_kg" in raw:
        for key in ("dose_per_kg", "max_rate", "weight"):
            _need(raw, key, where, dict)
        if raw["dose_per_kg"].get("unit") != "mg/kg":
            raise MappingError(f"{where}.dose_per_kg.unit: expected mg/kg")
        if raw["max_rate"].get("unit") != "mg/min":
            raise MappingError(f"{where}.max_rate.unit: expected mg/min")
        w = raw["weight"]
        _bounds({k: v for k, v in w.items() if k != "within"}, f"{where}.weight", "weight", checker)
        for field, value in (
            ("weight.within", w.get("within")),
            ("min_bolus", raw.get("min_bolus", "0m")),
        ):
            try:
                parse_duration(value)
            except ValueError as exc:
                raise MappingError(f"{where}.{field}: {exc}") from None
    else:
        raise MappingError(f"{where}: a medication suggestion needs dose or dose_per_kg")
    if "when_latest_mg" in raw:
        _bounds(raw["when_latest_mg"], f"{where}.when_latest_mg", "magnesium", checker)
    if "rate" in raw:
        try:
            parse_duration(_need(raw["rate"], "over", f"{where}.rate"))
        except ValueError as exc:
            raise MappingError(f"{where}.rate.over: {exc}") from None


def load_measures(path: Path) -> dict[str, Measure]:
    """Load ``measures.yaml``.

    :raises MappingError: unknown anchor, pick or series, or a bad window.
    """
    data = _read(path)
    out: dict[str, Measure] = {}
    for mid, raw in (_need(data, "measures", str(path), dict)).items():
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


def _walk_keys(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_walk_keys(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        out[prefix] = node
    return out


def load_texts(
    folder: Path, rules: tuple[Rule, ...], gate_ids: list[str]
) -> dict[str, dict[str, Any]]:
    """Load ``text/<locale>.yaml`` and check that every locale has every key.

    :raises MappingError: a missing locale, a missing key, or an unknown placeholder.
    """
    texts: dict[str, dict[str, Any]] = {}
    for locale in LOCALES:
        path = folder / f"{locale}.yaml"
        if not path.exists():
            raise MappingError(f"{path}: locale file missing")
        data = _read(path)
        if not isinstance(data, dict):
            raise MappingError(f"{path}: expected a mapping")
        texts[locale] = data
    base = _walk_keys(texts["en"])
    for locale, data in texts.items():
        path = folder / f"{locale}.yaml"
        flat = _walk_keys(data)
        for key, value in flat.items():
            if _is_evidence_key(key):
                continue  # translated study text, not a template
            for name in _PLACEHOLDER.findall(str(value)):
                if name not in PLACEHOLDERS:
                    raise MappingError(f"{path}: {key}: unknown placeholder {{{name}}}")
        missing = sorted(
            k for k in base if k not in flat and k != "locale" and not _is_evidence_key(k)
        )
        if missing:
            raise MappingError(
                f"{path}: missing text key {missing[0]} (and {len(missing) - 1} more)"
            )
        for rule in rules:
            if rule.text_key not in (data.get("rules") or {}):
                raise MappingError(
                    f"{path}: missing text key rules.{rule.text_key} (rule {rule.id})"
                )
        for gid in gate_ids:
            if gid not in (data.get("gate") or {}):
                raise MappingError(f"{path}: missing text key gate.{gid}")
        _check_evidence_texts(path, data, rules)
    return texts


def _is_evidence_key(key: str) -> bool:
    """``rules.<text key>.evidence[.<field>]``: optional in every locale."""
    parts = key.split(".")
    return len(parts) >= 3 and parts[0] == "rules" and parts[2] == "evidence"


def _check_evidence_texts(path: Path, data: dict[str, Any], rules: tuple[Rule, ...]) -> None:
    """Check the optional ``rules.<text key>.evidence`` translations of one locale file.

    Each list has one entry per entry of the rule file's list (``effect_labels`` and
    ``effect_measures``: ``evidence.effects``; ``exclusions``: ``evidence.trial_exclusions``).

    :raises MappingError: an unknown key, a wrong type or a list of the wrong length.
    """
    by_key: dict[str, list[Rule]] = {}
    for rule in rules:
        by_key.setdefault(rule.text_key, []).append(rule)
    for text_key, node in (data.get("rules") or {}).items():
        if not isinstance(node, dict) or "evidence" not in node:
            continue
        where = f"{path}: rules.{text_key}.evidence"
        tr = node["evidence"]
        if not isinstance(tr, dict):
            raise MappingError(f"{where}: expected a mapping")
        unknown = sorted(set(tr) - set(EVIDENCE_TEXT_KEYS))
        if unknown:
            raise MappingError(
                f"{where}: unknown key(s) {unknown} (known: {', '.join(EVIDENCE_TEXT_KEYS)})"
            )
        if text_key not in by_key:
            raise MappingError(f"{where}: no rule has the text key {text_key!r}")
        for field in ("design", "population"):
            if field in tr and (not isinstance(tr[field], str) or not tr[field].strip()):
                raise MappingError(f"{where}.{field}: expected a non-empty string")
        for rule in by_key[text_key]:
            ev = rule.evidence
            if "population" in tr and not ev.population:
                raise MappingError(
                    f"{where}.population: {rule.source_file} has no evidence.population"
                )
            lengths = {
                "effect_labels": (len(ev.effects), "evidence.effects"),
                "effect_measures": (len(ev.effects), "evidence.effects"),
                "exclusions": (
                    len(ev.extra.get("trial_exclusions") or []),
                    "evidence.trial_exclusions",
                ),
            }
            for field, (want, source) in lengths.items():
                if field not in tr:
                    continue
                got = tr[field]
                if not isinstance(got, list) or not all(isinstance(x, str) for x in got):
                    raise MappingError(f"{where}.{field}: expected a list of strings")
                if len(got) != want:
                    raise MappingError(
                        f"{where}.{field}: {len(got)} entries, but {source} of "
                        f"{rule.source_file} has {want}"
                    )


def _fingerprint(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.yaml")):
        if "site" in path.relative_to(root).parts:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def load_knowledge(root: Path, site: Path | None = None) -> Knowledge:
    """Load and validate the whole mappings folder (plus an optional site file).

    :raises MappingError: anything invalid, with the file and field named.
    """
    valuesets = load_valuesets(root / "codes")
    missing = sorted(set(REQUIRED_VALUE_SETS) - set(valuesets.sets))
    if missing:
        raise MappingError(f"{root / 'codes'}: value sets the service reads are missing: {missing}")
    units_raw = _read(root / "units.yaml")
    try:
        units: Units = build_units(_need(units_raw, "quantities", str(root / "units.yaml"), dict))
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        raise MappingError(f"{root / 'units.yaml'}: {exc}") from None

    def unit_ok(quantity: str, unit: str) -> bool:
        return quantity in units.quantities and unit in units[quantity].preferred

    checker = F.Checker(set(valuesets.sets), unit_ok)
    upath = str(root / "units.yaml")
    plausible_raw = _need(units_raw, "plausible", upath, dict)
    plausible_limits = {
        q: _bounds(b, f"{upath}: plausible.{q}", q, checker) for q, b in plausible_raw.items()
    }
    if "magnesium" not in plausible_limits:
        raise MappingError(f"{upath}: missing field 'plausible.magnesium'")
    plausible = plausible_limits["magnesium"]
    ref = _need(_need(units_raw, "reference_range", upath, dict), "magnesium", upath, dict)
    albumin = _need(units_raw, "albumin_correction", upath, dict)
    measures = load_measures(root / "measures.yaml")
    gate_raw = _read(root / "gate.yaml")
    gpath = str(root / "gate.yaml")
    gate = []
    for i, g in enumerate(_need(gate_raw, "conditions", gpath, list)):
        w = f"{gpath}: conditions[{i}]"
        gid = _need(g, "id", w)
        (term,) = _facts([g.get("fact")], w, checker)
        gate.append(GateCondition(gid, term.fact, bool(g.get("suggest_lab")), term=term))
    gate_sources = tuple(
        _citation(c, f"{gpath}: source[{i}]") for i, c in enumerate(gate_raw.get("source") or [])
    )
    aki = _read(root / "aki.yaml")
    for key in ("kdigo", "nhs"):
        _need(aki, key, str(root / "aki.yaml"), dict)
    order_path = root / "rule-order.yaml"
    order = _need(_read(order_path), "order", str(order_path), list)
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
    rules = tuple(load_rule(files[rid], i, measures, checker) for i, rid in enumerate(order))
    ids = [r.id for r in rules]
    if len(set(ids)) != len(ids):
        raise MappingError(f"{root / 'rules'}: duplicate rule id")
    texts = load_texts(root / "text", rules, [g.id for g in gate])
    site_map = load_site(site, valuesets)
    for rid in site_map.disabled_rules | set(site_map.indicator_overrides):
        if rid not in ids:
            raise MappingError(f"{site_map.source_file}: unknown rule id {rid!r}")
    return Knowledge(
        valuesets=valuesets,
        units=units,
        measures=measures,
        gate=tuple(gate),
        gate_sources=gate_sources,
        aki=aki,
        rules=rules,
        texts=texts,
        site=site_map,
        plausible=plausible,
        plausible_limits=plausible_limits,
        reference_range=(float(ref["low"]), float(ref["high"])),
        albumin_correction=albumin,
        version=_fingerprint(root),
        **load_names(root, site_map, valuesets),
    )
