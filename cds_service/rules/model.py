"""The rule model (loaded from ``mappings/``) and the engine's output, ``Advice``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from cds_service.clinical.aki import AkiCriteria, AkiStatus
from cds_service.clinical.delta_checks import DeltaParams, Resolution, Suspect
from cds_service.clinical.model import (
    Condition,
    Encounter,
    Excluded,
    IcuStay,
    LabResult,
    Medication,
    Procedure,
)
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
class NamedQuantity:
    """A number a rule's (or the gate's) text names: a value or a range, with its unit.

    ``about``: the source gives it as an approximation ("about 3 mg/dL").
    """

    unit: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    about: bool = False


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
    # Card text: the placeholders its templates may use (declared in the rule file, checked
    # by the loader), whether its "What to do" advises repletion (then a ``gated`` variant
    # is required), and the named numbers its text may show.
    placeholders: frozenset[str] = frozenset()
    advises_repletion: bool = False
    quantities: dict[str, NamedQuantity] = field(default_factory=dict)
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
    placeholders: frozenset[str] = frozenset()
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
    """Site mapping: local lab codes, ICU units, rule governance, rules it pushes besides."""

    lab_codes: dict[tuple[str, str], SiteLabCode] = field(default_factory=dict)
    icu_units: frozenset[str] = frozenset()
    icu_units_removed: frozenset[str] = frozenset()
    disabled_rules: frozenset[str] = frozenset()
    indicator_overrides: dict[str, str] = field(default_factory=dict)
    source_file: str = ""
    push_enabled: frozenset[str] = frozenset()


# When advice pushed by events is pushed again (push.yaml, evidence.md §8).
PUSH_MODES = ("aki-episode", "index-event", "result", "suspect")


@dataclass(frozen=True, slots=True)
class PushRule:
    """How a rule's advice is pushed by events: ``once_per`` (PUSH_MODES), pushed by default."""

    once_per: str
    pushed: bool = True


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
    delta: DeltaParams  # suspect results (delta-checks.yaml)
    # gate.yaml ``instead`` numbers (reduced dose: recheck interval, 48-h maximum), the
    # CKD-EPI 2021 parameters (egfr.yaml), and how long association rules with an index
    # event fire after it (measures.yaml ``index_event_limit``).
    gate_quantities: dict[str, NamedQuantity] = field(default_factory=dict)
    egfr: dict[str, Any] = field(default_factory=dict)
    index_event_limit: timedelta | None = None
    administration_counts_for: timedelta = timedelta(0)  # measures.yaml (24 h)
    # mappings/icu-units.yaml with the site's names; mappings/specimens.yaml
    icu_names: IcuNames = field(default_factory=IcuNames)
    specimen_words: SpecimenWords = field(default_factory=SpecimenWords)
    push: dict[str, PushRule] = field(default_factory=dict)  # push.yaml, every rule

    def push_rule(self, rule_id: str) -> PushRule | None:
        """How advice of a rule is pushed, the site's ``push.enable`` applied (None: unlisted)."""
        found = self.push.get(rule_id)
        if found is not None and not found.pushed and rule_id in self.site.push_enabled:
            return PushRule(found.once_per, True)
        return found

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
    """A computed magnesium sulfate order: one number for the text and the FHIR resource.

    ``grams`` is one administration (a bolus, or a day's infusion when ``per_day``);
    ``over`` how long it runs; ``count`` or ``days`` bound the order in time. A
    weight-based dose also carries the weight, the per-kg amounts and the rate limit.
    """

    grams: float
    route: str
    over: timedelta | None = None
    count: int | None = None
    days: int | None = None
    per_day: bool = False
    meq: float | None = None
    volume_ml: float | None = None
    fluid: str | None = None
    weight_kg: float | None = None
    mg_per_kg: float | None = None
    max_rate_mg_min: float | None = None
    infusion_mg_per_kg_h: float | None = None
    infusion_g_per_h: float | None = None

    @property
    def over_minutes(self) -> int | None:
        """Whole minutes of infusion (rounded up when computed)."""
        return None if self.over is None else round(self.over.total_seconds() / 60)

    @property
    def rate_mg_min(self) -> float | None:
        """The rate the dose runs at, in mg/min."""
        minutes = self.over_minutes
        return None if not minutes else self.grams * 1000 / minutes


@dataclass(frozen=True, slots=True)
class FindingContext:
    """What made a rule (or a gate condition) hold: the typed bindings its text may name.

    Population facts, measures and triggers fill these; the renderer reads only these.
    """

    encounter: Encounter | None = None
    icu: IcuStay | None = None
    procedure: Procedure | None = None
    procedure_state: str | None = None
    conditions: tuple[Condition, ...] = ()
    medications: tuple[tuple[Medication, str], ...] = ()
    aki: AkiStatus | None = None
    age: int | None = None
    lab: LabResult | None = None
    egfr: EgfrValue | None = None
    window: timedelta | None = None
    since: datetime | None = None
    monitoring_context: str | None = None
    trend: str | None = None
    n: int | None = None
    excluded: Excluded | None = None
    reasons: tuple[str, ...] = ()
    orders: tuple[Medication, ...] = ()
    obstetric: bool = False
    band: Threshold | None = None
    weight: LabResult | None = None
    no_dose_reason: str | None = None
    # suspect results (delta checks, evidence.md §1): the suspect result and why (an
    # mg-data-quality finding, or hypermagnesemia-toxic on a suspect value), and the results
    # excluded as spurious at the time of their refuting repeat
    suspect: LabResult | None = None
    delta: Suspect | None = None
    spurious: tuple[Resolution, ...] = ()

    @classmethod
    def of(cls, bindings: dict[str, Any]) -> FindingContext:
        """The typed context of a fact's bindings (names outside the contract are dropped)."""
        known = {k: v for k, v in bindings.items() if k in _CONTEXT_FIELDS}
        on_suspect = bindings.get("suspect_value")
        if on_suspect is not None:  # a rule that still uses a suspect latest value
            known.update(delta=on_suspect, suspect=on_suspect.result)
        for key in ("conditions", "medications", "reasons", "orders", "spurious"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class EgfrValue:
    """The eGFR the safety gate used: reported, or computed from creatinine (CKD-EPI 2021)."""

    value: float
    time: datetime
    computed: bool
    creatinine: LabResult | None = None
    age: int | None = None
    sex: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    """One rule that fired, with what it used (several findings make an Advice)."""

    rule_id: str
    direction: str
    indicator: str
    values: tuple[ValueUsed, ...] = ()
    context: FindingContext = field(default_factory=FindingContext)
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
class GateHit:
    """A safety-gate condition that holds, with what made it hold (for the card text)."""

    id: str
    context: FindingContext


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
    gate: tuple[GateHit, ...] = ()  # every gate condition that holds (the card's text names them)
    aki_stage: int | None = None
    magnesium: ValueUsed | None = None
    missing: tuple[str, ...] = ()


_CONTEXT_FIELDS = frozenset(FindingContext.__dataclass_fields__)
