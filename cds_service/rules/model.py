"""The rule model (loaded from ``mappings/``) and the engine's output, ``Advice``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cds_service.clinical.aki import AkiCriteria
from cds_service.clinical.names import IcuNames, SpecimenWords
from cds_service.clinical.terminology import ValueSets
from cds_service.clinical.units import Units

if TYPE_CHECKING:
    from cds_service.rules.facts import Term

INDICATOR_ORDER = {"info": 0, "warning": 1, "critical": 2}

# A fact term: (fact name, parameters). Parameters are the parsed YAML value.
Fact = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class Bounds:
    """Inclusive/exclusive bounds in one unit: lt, le, gt, ge (any subset, at least one)."""

    unit: str
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None

    def describe(self) -> str:
        """Human-readable bounds, e.g. ``< 1.5 mg/dL``."""
        parts = []
        for op, sym in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            val = getattr(self, op)
            if val is not None:
                parts.append(f"{sym} {val:g}")
        return " and ".join(parts) + f" {self.unit}"


@dataclass(frozen=True, slots=True)
class Threshold:
    """One arm of a rule: bounds on the measured value and the direction it means."""

    direction: str
    bounds: Bounds
    label: str | None = None
    effect: str | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """A closed window [anchor + start, anchor + end]."""

    start: timedelta
    end: timedelta


@dataclass(frozen=True, slots=True)
class Measure:
    """A named measure of evidence.md §2."""

    id: str
    title: str
    definition: str
    series: str
    anchor: str
    pick: str
    window: Window | None = None
    albumin_corrected: bool = False
    extend_to_encounter_start: bool = False


@dataclass(frozen=True, slots=True)
class Citation:
    """A reference: the review's number, authors, year, title, journal, DOI or URL."""

    ref: str
    authors: str
    year: int | None
    title: str
    journal: str | None = None
    doi: str | None = None
    url: str | None = None

    @property
    def link(self) -> str:
        """The DOI link, else the URL."""
        return self.doi or self.url or ""


@dataclass(frozen=True, slots=True)
class Effect:
    """One reported effect size."""

    label: str
    measure: str
    value: float | None = None
    ci: tuple[float, float] | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Evidence:
    """The study behind a rule."""

    study: str
    design: str
    n: int | None = None
    population: str | None = None
    effects: tuple[Effect, ...] = ()
    checked: str | None = None
    set_here: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule file of ``mappings/rules``."""

    id: str
    version: str
    title: str
    category: str
    direction: str
    indicator: str
    population: tuple[Fact, ...]
    evidence: Evidence
    citations: tuple[Citation, ...]
    text_key: str
    order: int
    measure: str | None = None
    thresholds: tuple[Threshold, ...] = ()
    bands: tuple[Threshold, ...] = ()
    indicator_when: tuple[tuple[str, Bounds], ...] = ()
    indicator_when_stage: dict[int, str] = field(default_factory=dict)
    trigger: tuple[str, dict[str, Any]] | None = None
    suggestion: dict[str, Any] | None = None
    fallback: bool = False
    obstetric_suppress: bool = False
    obstetric_thresholds: tuple[Threshold, ...] = ()
    show_conditions: tuple[str, ...] = ()
    source_file: str = ""
    # What the engine runs, parsed once by the loader: ``population`` compiled
    # (rules/facts.py) and the trigger's parameters parsed (rules/triggers.py).
    terms: tuple[Term, ...] = field(kw_only=True, compare=False, repr=False)
    trigger_args: Any = field(kw_only=True, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class GateCondition:
    """A safety-gate condition (gate.yaml)."""

    id: str
    fact: Fact
    suggest_lab: bool = False
    term: Term = field(kw_only=True, compare=False, repr=False)  # ``fact`` compiled


@dataclass(frozen=True, slots=True)
class SiteLabCode:
    """A local lab code mapped to a value set (with the unit the site sends)."""

    system: str
    code: str
    value_set: str
    unit: str | None = None
    display: str | None = None


@dataclass(frozen=True)
class SiteMap:
    """Site mapping: local lab codes, ICU units, rule governance."""

    lab_codes: dict[tuple[str, str], SiteLabCode] = field(default_factory=dict)
    icu_units: frozenset[str] = frozenset()
    icu_units_removed: frozenset[str] = frozenset()
    disabled_rules: frozenset[str] = frozenset()
    indicator_overrides: dict[str, str] = field(default_factory=dict)
    source_file: str = ""


@dataclass(frozen=True)
class Knowledge:
    """Everything loaded from ``mappings/``, validated."""

    valuesets: ValueSets
    units: Units
    measures: dict[str, Measure]
    gate: tuple[GateCondition, ...]
    gate_sources: tuple[Citation, ...]
    aki: dict[str, Any]
    rules: tuple[Rule, ...]
    texts: dict[str, dict[str, Any]]
    site: SiteMap
    plausible: Bounds
    plausible_limits: dict[str, Bounds]
    reference_range: tuple[float, float]
    albumin_correction: dict[str, Any]
    version: str
    # mappings/icu-units.yaml with the site's names; mappings/specimens.yaml
    icu_names: IcuNames = field(default_factory=IcuNames)
    specimen_words: SpecimenWords = field(default_factory=SpecimenWords)

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id.

        :raises KeyError: unknown rule id.
        """
        return self._rules_by_id[rule_id]

    @cached_property
    def _rules_by_id(self) -> dict[str, Rule]:
        by_id: dict[str, Rule] = {}
        for r in self.rules:
            by_id.setdefault(r.id, r)
        return by_id

    @cached_property
    def aki_criteria(self) -> AkiCriteria:
        """``aki`` compiled once, with the creatinine unit table."""
        return AkiCriteria(self.aki, self.units["creatinine"])


@dataclass(frozen=True, slots=True)
class ValueUsed:
    """A lab value a rule used, with its time and original form."""

    kind: str
    value: float
    unit: str
    time: datetime
    original_value: float
    original_unit: str
    comparator: str | None = None
    code: str | None = None
    resource: str | None = None
    corrected_from: float | None = None
    albumin_g_dl: float | None = None
    flags: tuple[str, ...] = ()
    reference_range: str | None = None
    loinc: str | None = None


@dataclass(frozen=True, slots=True)
class Dose:
    """A computed magnesium sulfate dose (grams, weight-based or fixed)."""

    grams: float
    route: str
    text: str
    meq: float | None = None
    weight_kg: float | None = None
    bolus_minutes: float | None = None
    infusion_g_per_h: float | None = None
    volume_ml: float | None = None
    fluid: str | None = None
    over_minutes: float | None = None
    per_day: bool = False
    days: int | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired, with what it used (several findings make an Advice)."""

    rule_id: str
    direction: str
    indicator: str
    values: tuple[ValueUsed, ...] = ()
    context: dict[str, Any] = field(default_factory=dict)
    threshold: Bounds | None = None
    band: str | None = None
    suggestion: dict[str, Any] | None = None
    dose: Dose | None = None
    no_dose_reason: str | None = None
    # The index event the measure belongs to (``admission:<encounter id>``,
    # ``icu-start:<ISO start>``, ``surgery-end:<procedure id>``, ``aki-onset:<ISO onset>``,
    # ``encounter:<id>``...) and its time; None for latest-value measures and triggers.
    index_event: str | None = None
    index_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Withheld:
    """A suggestion the safety gate held back, and why."""

    rule_id: str
    conditions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Advice:
    """One piece of advice (one card): a direction, its lead rule and all its findings."""

    direction: str
    indicator: str
    lead: str
    rules: tuple[str, ...]
    findings: tuple[Finding, ...]
    medication_suggestion: Finding | None = None
    lab_suggestion: Finding | None = None
    withheld: tuple[Withheld, ...] = ()
    gate_conditions: tuple[str, ...] = ()
    aki_stage: int | None = None
    magnesium: ValueUsed | None = None
    missing: tuple[str, ...] = ()
