"""The clinical snapshot: everything the rule engine may look at, frozen.

Inbound adapters (FHIR bundles, CDS Hooks prefetch, HL7 v2 store) build a
``ClinicalSnapshot``; the engine only reads it. Values are already normalised
to the canonical unit of their analyte (see ``mappings/units.yaml``); the
original value and unit travel with them for display.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

# Lab kinds (the snapshot series). Value-set ids live in mappings/codes.
SERUM_MG = "serum-mg"
IONIZED_MG = "ionized-mg"
CREATININE = "creatinine"
ALBUMIN = "albumin"
EGFR = "egfr"
WEIGHT = "weight"

# Reasons a result was not used (Excluded.reason_code).
UNIT_UNCERTAIN = "unit-uncertain"
UNKNOWN_UNIT = "unknown-unit"
IMPLAUSIBLE = "implausible"
NON_NUMERIC = "non-numeric"
NON_SERUM = "non-serum"  # coded as red cell, urine, body fluid or whole blood: ignored
SPECIMEN_NOT_SERUM = "specimen-not-serum"  # a serum/ionized code whose specimen says otherwise
NOT_FINAL = "status"
NO_TIME = "no-time"
BAD_RESOURCE = "bad-resource"
OTHER_PATIENT = "other-patient"

# Reasons that produce the mg-data-quality card (evidence.md §1).
DATA_QUALITY_REASONS = frozenset({UNIT_UNCERTAIN, IMPLAUSIBLE, NON_NUMERIC, SPECIMEN_NOT_SERUM})


@dataclass(frozen=True, slots=True)
class Coding:
    """A code with its system URI (a code never travels without its system)."""

    system: str
    code: str
    display: str | None = None


@dataclass(frozen=True, slots=True)
class Concept:
    """A CodeableConcept: codings plus free text."""

    codings: tuple[Coding, ...] = ()
    text: str | None = None


@dataclass(frozen=True, slots=True)
class LabResult:
    """One usable numeric result, normalised to the canonical unit of its kind."""

    id: str
    kind: str
    value: float
    unit: str
    time: datetime
    code: Coding
    original_value: float
    original_unit: str
    comparator: str | None = None
    status: str = "final"
    time_source: str = "effective"
    time_flags: frozenset[str] = frozenset()
    date_only: bool = False
    reference_range: str | None = None
    specimen: str | None = None


@dataclass(frozen=True, slots=True)
class Excluded:
    """A resource or result that was read but not used, with the reason."""

    resource: str
    reason_code: str
    reason: str
    kind: str | None = None
    value_text: str | None = None
    unit: str | None = None
    time: datetime | None = None
    specimen: str | None = None  # for specimen-not-serum: the text that says so, as sent


@dataclass(frozen=True, slots=True)
class LocationPeriod:
    """A location the patient occupied during an encounter."""

    location: str
    types: tuple[Coding, ...]
    start: datetime | None
    end: datetime | None
    is_icu: bool = False


@dataclass(frozen=True, slots=True)
class Encounter:
    """An encounter; ``klass`` is inpatient | emergency | ambulatory | other."""

    id: str
    klass: str
    status: str
    start: datetime | None
    end: datetime | None
    locations: tuple[LocationPeriod, ...] = ()
    is_icu: bool = False


@dataclass(frozen=True, slots=True)
class IcuStay:
    """An ICU stay (from an ICU encounter or an ICU location period)."""

    start: datetime
    end: datetime | None
    source: str
    encounter_id: str | None = None


@dataclass(frozen=True, slots=True)
class Condition:
    """A diagnosis that counts (active/recurrence/relapse, not refuted)."""

    id: str
    concept: Concept
    onset: datetime | None = None
    recorded: datetime | None = None


@dataclass(frozen=True, slots=True)
class Procedure:
    """A procedure: performed, in progress, or planned (draft order / preparation)."""

    id: str
    concept: Concept
    status: str
    start: datetime | None
    end: datetime | None
    planned: bool = False
    source: str = "Procedure"


@dataclass(frozen=True, slots=True)
class Medication:
    """A medication order or administration that counts."""

    id: str
    concept: Concept
    status: str
    source: str
    draft: bool = False
    time: datetime | None = None
    authored: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClinicalSnapshot:
    """Everything known about one patient at evaluation time (frozen)."""

    patient_id: str
    birth_date: date | None = None
    sex: str | None = None
    encounters: tuple[Encounter, ...] = ()
    current_encounter_id: str | None = None
    icu_stays: tuple[IcuStay, ...] = ()
    serum_mg: tuple[LabResult, ...] = ()
    ionized_mg: tuple[LabResult, ...] = ()
    creatinine: tuple[LabResult, ...] = ()
    albumin: tuple[LabResult, ...] = ()
    egfr: tuple[LabResult, ...] = ()
    weight: tuple[LabResult, ...] = ()
    conditions: tuple[Condition, ...] = ()
    procedures: tuple[Procedure, ...] = ()
    medications: tuple[Medication, ...] = ()
    excluded: tuple[Excluded, ...] = ()
    missing: frozenset[str] = field(default_factory=frozenset)
    newest_time: datetime | None = None

    @property
    def current_encounter(self) -> Encounter | None:
        """The current encounter, if one is known."""
        for enc in self.encounters:
            if enc.id == self.current_encounter_id:
                return enc
        return None

    def series(self, kind: str) -> tuple[LabResult, ...]:
        """The results of one kind, oldest first."""
        return {
            SERUM_MG: self.serum_mg,
            IONIZED_MG: self.ionized_mg,
            CREATININE: self.creatinine,
            ALBUMIN: self.albumin,
            EGFR: self.egfr,
            WEIGHT: self.weight,
        }[kind]
