"""Build ``ClinicalSnapshot`` objects directly for the rule-engine acceptance tests.

Every code is a real code of ``mappings/codes``; every magnesium value is converted
with the real unit table (``knowledge.units["magnesium"].to_canonical``), exactly as
extraction does (``cds_service/clinical/fhir_labs.py``).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from cds_service.clinical import model as m
from cds_service.rules.engine import evaluate
from cds_service.rules.model import Advice, Finding, Knowledge

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
MIN = timedelta(minutes=1)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CPT = "http://www.ama-assn.org/go/cpt"
ATC = "http://www.whocc.no/atc"

MG_UNITS = ("mg/dL", "mmol/L", "mEq/L")

# Conditions (system, code, display), all members of the value sets named.
CIRRHOSIS = (ICD10CM, "K70.30", "Alcoholic cirrhosis of liver without ascites")
CIRRHOSIS_SCT = (SNOMED, "19943007", "Cirrhosis of liver")
PANCREATITIS = (ICD10CM, "K85.90", "Acute pancreatitis without necrosis or infection, unspecified")
TBI = (ICD10CM, "S06.0X0A", "Concussion without loss of consciousness, initial encounter")
MALIGNANCY = (ICD10CM, "C34.90", "Malignant neoplasm of unspecified part of bronchus or lung")
IN_SITU = (ICD10CM, "D05.90", "Unspecified type of carcinoma in situ of unspecified breast")
COVID = (ICD10CM, "U07.1", "COVID-19")
SEPSIS = (ICD10CM, "A41.9", "Sepsis, unspecified organism")
AKI = (ICD10CM, "N17.9", "Acute kidney failure, unspecified")
CKD3 = (ICD10CM, "N18.30", "Chronic kidney disease, stage 3 unspecified")
CKD4 = (ICD10CM, "N18.4", "Chronic kidney disease, stage 4 (severe)")
CKD5_SCT = (SNOMED, "433146000", "Chronic kidney disease stage 5 (disorder)")
ESRD = (ICD10CM, "N18.6", "End stage renal disease")
DIALYSIS_STATUS = (ICD10CM, "Z99.2", "Dependence on renal dialysis")
OLIGURIA = (ICD10CM, "R34", "Anuria and oliguria")
MYASTHENIA = (ICD10CM, "G70.00", "Myasthenia gravis without (acute) exacerbation")
AV_BLOCK_2 = (ICD10CM, "I44.1", "Atrioventricular block, second degree")
AV_BLOCK_3 = (ICD10CM, "I44.2", "Atrioventricular block, complete")
AV_BLOCK_1 = (ICD10CM, "I44.0", "Atrioventricular block, first degree")
PREGNANCY = (ICD10CM, "Z33.1", "Pregnant state, incidental")
PRE_ECLAMPSIA = (ICD10CM, "O14.14", "Severe pre-eclampsia complicating childbirth")
HYPERTENSION = (ICD10CM, "I10", "Essential (primary) hypertension")

# Procedures
CABG = (SNOMED, "232717009", "Coronary artery bypass grafting")
CABG_CPT = (CPT, "33533", "CABG, arterial, single")
APPENDECTOMY = (SNOMED, "80146002", "Appendectomy")
PCI = (SNOMED, "415070008", "Percutaneous coronary intervention")
ANGIOGRAPHY_CPT = (CPT, "93458", "Left heart catheterization with coronary angiography")
LAP_COLECTOMY = (SNOMED, "1390003", "Laparoscopic-assisted sigmoid colectomy")
LAP_COLECTOMY_CPT = (CPT, "44204", "Laparoscopic partial colectomy")
OPEN_COLECTOMY = (SNOMED, "23968004", "Colectomy")
HEMODIALYSIS = (SNOMED, "302497006", "Hemodialysis")

# Medications
CISPLATIN = (RXNORM, "2555", "cisplatin")
VANCOMYCIN = (RXNORM, "11124", "vancomycin")
PIP_TAZO = (RXNORM, "74169", "piperacillin / tazobactam")
OMEPRAZOLE = (RXNORM, "7646", "omeprazole")
HCTZ = (RXNORM, "5487", "hydrochlorothiazide")
GENTAMICIN = (RXNORM, "4413", "gentamicin")
MG_SULFATE = (RXNORM, "6585", "magnesium sulfate")
MG_OXIDE_ATC = (ATC, "A12CC10", "magnesium oxide")
ACETAMINOPHEN = (RXNORM, "161", "acetaminophen")

Code = tuple[str, str, str]


def concept(code: Code, text: str | None = None) -> m.Concept:
    """A CodeableConcept with one coding."""
    return m.Concept((m.Coding(code[0], code[1], code[2]),), text)


# --- ages ---------------------------------------------------------------------------------


def add_months(d: date, months: int) -> date:
    """The same day ``months`` later (clipped to the month's last day)."""
    total = d.year * 12 + d.month - 1 + months
    year, month = divmod(total, 12)
    day = min(d.day, calendar.monthrange(year, month + 1)[1])
    return date(year, month + 1, day)


def born(years: int = 0, months: int = 0, days: int = 0, at: datetime = NOW) -> date:
    """The birth date of someone exactly that old (years, months, days) on the date of ``at``."""
    return add_months(at.date(), -(12 * years + months)) - timedelta(days=days)


# --- labs ---------------------------------------------------------------------------------

_SEQ = iter(range(1, 10**9))


def _lab(
    kind: str,
    quantity: str,
    code: str,
    knowledge: Knowledge,
    value: float,
    unit: str,
    at: datetime,
    *,
    comparator: str | None = None,
    date_only: bool = False,
) -> m.LabResult:
    q = knowledge.units[quantity]
    canonical = q.to_canonical(value, unit)
    return m.LabResult(
        id=f"Observation/{kind}-{next(_SEQ)}",
        kind=kind,
        value=canonical,
        unit=q.canonical,
        time=at,
        code=m.Coding(LOINC, code),
        original_value=value,
        original_unit=q.normalise_unit(unit),
        comparator=comparator,
        date_only=date_only,
    )


def mg(
    k: Knowledge,
    value: float,
    unit: str = "mg/dL",
    at: datetime = NOW - H,
    *,
    comparator: str | None = None,
    date_only: bool = False,
) -> m.LabResult:
    """A serum Mg result (LOINC 19123-9 for mass units, 2601-3 for molar units)."""
    code = "19123-9" if unit.lower() == "mg/dl" else "2601-3"
    return _lab(m.SERUM_MG, "magnesium", code, k, value, unit, at, comparator=comparator,
                date_only=date_only)  # fmt: skip


def ionized(
    k: Knowledge, value: float, unit: str = "mmol/L", at: datetime = NOW - H
) -> m.LabResult:
    """An ionized Mg result (LOINC 73573-8)."""
    return _lab(m.IONIZED_MG, "magnesium", "73573-8", k, value, unit, at)


def creatinine(
    k: Knowledge, value: float, at: datetime = NOW - 2 * H, unit: str = "mg/dL"
) -> m.LabResult:
    """A serum creatinine result (LOINC 2160-0)."""
    return _lab(m.CREATININE, "creatinine", "2160-0", k, value, unit, at)


def egfr(k: Knowledge, value: float, at: datetime = NOW - 2 * H) -> m.LabResult:
    """An eGFR result (LOINC 98979-8)."""
    return _lab(m.EGFR, "egfr", "98979-8", k, value, "mL/min/{1.73_m2}", at)


def albumin(k: Knowledge, value: float, at: datetime = NOW - H, unit: str = "g/dL") -> m.LabResult:
    """A serum albumin result (LOINC 1751-7)."""
    return _lab(m.ALBUMIN, "albumin", "1751-7", k, value, unit, at)


def weight(k: Knowledge, kg: float, at: datetime = NOW - D) -> m.LabResult:
    """A body weight (LOINC 29463-7)."""
    return _lab(m.WEIGHT, "weight", "29463-7", k, kg, "kg", at)


def excluded_mg(reason_code: str, value_text: str | None, unit: str | None = None,
                at: datetime = NOW - H) -> m.Excluded:  # fmt: skip
    """A serum Mg read but not used, as ``fhir_labs.read_observation`` records it."""
    reasons = {
        m.UNIT_UNCERTAIN: "no unit sent",
        m.IMPLAUSIBLE: f"{value_text} {unit} is outside ≥ 0.1 and ≤ 20 mg/dL",
        m.NON_NUMERIC: "not a number",
        m.NOT_FINAL: "status is preliminary, not final",
        m.NON_SERUM: "specimen is not serum/plasma (Urine)",
    }
    return m.Excluded(f"Observation/x-{next(_SEQ)}", reason_code, reasons[reason_code], m.SERUM_MG,
                      value_text, unit, at)  # fmt: skip


# --- context ------------------------------------------------------------------------------


def condition(code: Code, onset: datetime | None = None) -> m.Condition:
    """A counting Condition."""
    return m.Condition(f"Condition/{code[1]}-{next(_SEQ)}", concept(code), onset=onset)


def performed(code: Code, start: datetime, end: datetime | None = None,
              status: str = "completed") -> m.Procedure:  # fmt: skip
    """A Procedure performed (completed) or in progress."""
    return m.Procedure(f"Procedure/{next(_SEQ)}", concept(code), status, start,
                       end if end is not None else (start if status == "completed" else None))  # fmt: skip


def planned(code: Code, draft: bool = True) -> m.Procedure:
    """A planned procedure: a draft ServiceRequest of the hook (or an active ServiceRequest)."""
    return m.Procedure(f"ServiceRequest/{next(_SEQ)}", concept(code), "draft" if draft else "active",
                       None, None, planned=True, source="draft-order" if draft else "ServiceRequest")  # fmt: skip


def med(code: Code, *, draft: bool = False, status: str = "active",
        authored: datetime | None = NOW - D, text: str | None = None) -> m.Medication:  # fmt: skip
    """An active MedicationRequest, or a draft order of the hook."""
    return m.Medication(f"MedicationRequest/{next(_SEQ)}", concept(code, text),
                        "draft" if draft else status, "MedicationRequest", draft=draft,
                        authored=None if draft else authored)  # fmt: skip


def given(code: Code, at: datetime) -> m.Medication:
    """A completed MedicationAdministration."""
    return m.Medication(f"MedicationAdministration/{next(_SEQ)}", concept(code), "completed",
                        "MedicationAdministration", time=at)  # fmt: skip


def snapshot(
    *,
    birth: date | None = None,
    age: int | None = 50,
    sex: str | None = None,
    encounter: str | None = "inpatient",
    admitted: datetime = NOW - 2 * D,
    discharged: datetime | None = None,
    icu: datetime | None = None,
    icu_end: datetime | None = None,
    mg: Iterable[m.LabResult] = (),
    ionized: Iterable[m.LabResult] = (),
    creatinine: Iterable[m.LabResult] = (),
    albumin: Iterable[m.LabResult] = (),
    egfr: Iterable[m.LabResult] = (),
    weight: Iterable[m.LabResult] = (),
    conditions: Sequence[m.Condition] = (),
    procedures: Sequence[m.Procedure] = (),
    medications: Sequence[m.Medication] = (),
    excluded: Sequence[m.Excluded] = (),
) -> m.ClinicalSnapshot:
    """A snapshot: patient (``birth`` or exact ``age`` in years at NOW), encounter, ICU, data.

    ``encounter`` is the current encounter's class (inpatient, emergency, ambulatory)
    or None for no encounter; ``icu`` the start of an ICU stay of that encounter.
    """
    if birth is None and age is not None:
        birth = born(age)
    encounters: tuple[m.Encounter, ...] = ()
    current = None
    if encounter is not None:
        current = "Encounter/e1"
        encounters = (m.Encounter(current, encounter, "in-progress", admitted, discharged),)
    stays = (m.IcuStay(icu, icu_end, "Encounter.location", current),) if icu is not None else ()

    def series(results: Iterable[m.LabResult]) -> tuple[m.LabResult, ...]:
        return tuple(sorted(results, key=lambda r: r.time))

    return m.ClinicalSnapshot(
        patient_id="Patient/p1",
        birth_date=birth,
        sex=sex,
        encounters=encounters,
        current_encounter_id=current,
        icu_stays=stays,
        serum_mg=series(mg),
        ionized_mg=series(ionized),
        creatinine=series(creatinine),
        albumin=series(albumin),
        egfr=series(egfr),
        weight=series(weight),
        conditions=tuple(conditions),
        procedures=tuple(procedures),
        medications=tuple(medications),
        excluded=tuple(excluded),
    )


def safe_labs(k: Knowledge) -> dict[str, Any]:
    """Creatinine 0.9 mg/dL, eGFR 75 and weight 70 kg, all within the gate's windows."""
    return {
        "creatinine": [creatinine(k, 0.9)],
        "egfr": [egfr(k, 75)],
        "weight": [weight(k, 70)],
    }


# --- running and reading ------------------------------------------------------------------


def run(k: Knowledge, snap: m.ClinicalSnapshot, now: datetime = NOW) -> list[Advice]:
    """``evaluate`` at NOW."""
    return evaluate(k, snap, now)


def fired(advice: Sequence[Advice]) -> set[str]:
    """Every rule id that fired, over all advice."""
    return {f.rule_id for a in advice for f in a.findings}


def findings(advice: Sequence[Advice], rule_id: str) -> list[Finding]:
    """The findings of one rule."""
    return [f for a in advice for f in a.findings if f.rule_id == rule_id]


def finding(advice: Sequence[Advice], rule_id: str) -> Finding:
    """The single finding of one rule (fails when it did not fire or fired twice)."""
    found = findings(advice, rule_id)
    assert len(found) == 1, f"{rule_id}: {len(found)} findings; fired: {sorted(fired(advice))}"
    return found[0]


def by_direction(advice: Sequence[Advice]) -> dict[str, Advice]:
    """Advice by direction (asserting one per direction)."""
    out = {a.direction: a for a in advice}
    assert len(out) == len(advice), "more than one Advice for a direction"
    return out


def convert_mg(k: Knowledge, value: float, from_unit: str, to_unit: str) -> float:
    """A magnesium value converted exactly with the real unit table (unrounded)."""
    q = k.units["magnesium"]
    return q.from_canonical(q.to_canonical(value, from_unit), to_unit)


OPS = ("lt", "le", "gt", "ge")
# below, at, above the threshold: does a bound of this operator hold?
EXPECT = {
    "lt": (True, False, False),
    "le": (True, True, False),
    "gt": (False, False, True),
    "ge": (False, True, True),
}


def boundary_cases(op: str, threshold: float, unit: str) -> list[tuple[str, str, float, bool]]:
    """(position, input unit, offset, fires) for a bound: below/at/above, in 3 units.

    The offset is in the threshold's unit (0.01 mg/dL, 0.002 mmol/L); tests convert
    ``threshold + offset`` into the input unit with ``convert_mg``.
    """
    step = 0.01 if unit == "mg/dL" else 0.002
    out = []
    for in_unit in MG_UNITS:
        for pos, off, fires in zip(("below", "at", "above"), (-step, 0.0, step), EXPECT[op],
                                   strict=True):  # fmt: skip
            out.append((pos, in_unit, off, fires))
    return out


def observed(k: Knowledge, *, value: float | None = None, unit: str | None = "mg/dL",
             value_string: str | None = None, loinc: str = "19123-9", status: str = "final",
             at: datetime = NOW - H) -> m.LabResult | m.Excluded:  # fmt: skip
    """A FHIR Observation read by the real extraction (``fhir_labs.read_observation``)."""
    from cds_service.clinical.fhir_common import ResourceIndex
    from cds_service.clinical.fhir_labs import lab_table, read_observation

    obs: dict[str, object] = {
        "resourceType": "Observation",
        "id": f"obs-{next(_SEQ)}",
        "status": status,
        "code": {"coding": [{"system": LOINC, "code": loinc}]},
        "effectiveDateTime": at.isoformat(),
    }
    if value is not None:
        vq: dict[str, object] = {"value": value}
        if unit is not None:
            vq["unit"] = unit
        obs["valueQuantity"] = vq
    if value_string is not None:
        obs["valueString"] = value_string
    out = read_observation(obs, lab_table(k), ResourceIndex(), UTC)
    assert out is not None
    return out
