"""Acceptance tests of the supplementation and prevention rules (evidence.md §4, second table).

Each rule's trigger in and out; the magnesium suggestion and its exact dose in a
context where no safety-gate condition holds (the gate itself: test_safety_gate.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.rules.model import Advice, Knowledge
from tests.unit.builders import (
    ACETAMINOPHEN,
    APPENDECTOMY,
    CABG,
    CISPLATIN,
    GENTAMICIN,
    HCTZ,
    LAP_COLECTOMY,
    LAP_COLECTOMY_CPT,
    MG_SULFATE,
    MIN,
    NOW,
    OMEPRAZOLE,
    OPEN_COLECTOMY,
    PIP_TAZO,
    SEPSIS,
    VANCOMYCIN,
    D,
    H,
    born,
    boundary_cases,
    by_direction,
    condition,
    convert_mg,
    finding,
    fired,
    given,
    med,
    mg,
    performed,
    planned,
    run,
    safe_labs,
    snapshot,
)

ICU = NOW - 10 * H
R_SEPSIS_SHOCK = ("http://hl7.org/fhir/sid/icd-10-cm", "R65.21", "Severe sepsis with septic shock")


def clean(
    k: Knowledge, mg_value: float = 2.0, mg_at: datetime = NOW - 2 * H, **kw: Any
) -> m.ClinicalSnapshot:
    """Adult inpatient, serum Mg within 72 h, creatinine/eGFR/weight: no gate condition holds."""
    base: dict[str, Any] = {
        "age": 50,
        "encounter": "inpatient",
        "admitted": NOW - 3 * D,
        **safe_labs(k),
    }
    base["mg"] = [mg(k, mg_value, at=mg_at)]
    base.update(kw)
    return snapshot(**base)


def only_advice(advice: list[Advice], direction: str) -> Advice:
    return by_direction(advice)[direction]


# --- cisplatin-mg-preload --------------------------------------------------------------------

CISPLATIN_CASES = [
    ("draft order", lambda: [med(CISPLATIN, draft=True)], True),
    ("active MedicationRequest", lambda: [med(CISPLATIN)], True),
    ("product not in the set, ingredient in the text",
     lambda: [med(("http://www.nlm.nih.gov/research/umls/rxnorm", "999999", "Cisplatin 1 MG/ML Injectable Solution"))], True),
    ("ATC L01XA01", lambda: [med(("http://www.whocc.no/atc", "L01XA01", "cisplatin"))], True),
    ("stopped order", lambda: [med(CISPLATIN, status="stopped")], False),
    ("other drug", lambda: [med(ACETAMINOPHEN)], False),
    ("active order authored after now", lambda: [med(CISPLATIN, authored=NOW + H)], False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "meds", "fires"), CISPLATIN_CASES, ids=[c[0] for c in CISPLATIN_CASES]
)
def test_cisplatin_trigger(
    knowledge: Knowledge, label: str, meds: Callable[[], list[m.Medication]], fires: bool
) -> None:
    advice = run(knowledge, clean(knowledge, medications=meds()))
    assert ("cisplatin-mg-preload" in fired(advice)) is fires
    if fires:
        f = finding(advice, "cisplatin-mg-preload")
        assert (f.direction, f.indicator) == ("prevention", "warning")


@pytest.mark.parametrize("mg_value", [1.5, 2.0, 2.4])
def test_cisplatin_dose_regardless_of_baseline_mg(knowledge: Knowledge, mg_value: float) -> None:
    advice = run(knowledge, clean(knowledge, mg_value, medications=[med(CISPLATIN, draft=True)]))
    card = only_advice(advice, "prevention")
    assert card.lead == "cisplatin-mg-preload"
    assert card.withheld == ()
    s = card.medication_suggestion
    assert s is not None and s.rule_id == "cisplatin-mg-preload" and s.dose is not None
    assert (s.dose.grams, s.dose.meq, s.dose.route) == (2.0, 16, "IV")
    assert (s.dose.volume_ml, s.dose.over_minutes) == (100, 60.0)


# --- laparoscopic-intraop-mg -------------------------------------------------------------------

LAP_CASES = [
    ("planned, SNOMED, draft order", lambda: [planned(LAP_COLECTOMY)], True),
    (
        "planned, CPT 44204, active ServiceRequest",
        lambda: [planned(LAP_COLECTOMY_CPT, draft=False)],
        True,
    ),
    ("performed (not planned)", lambda: [performed(LAP_COLECTOMY, NOW - 3 * H, NOW - H)], False),
    ("in progress", lambda: [performed(LAP_COLECTOMY, NOW - H, None, status="in-progress")], False),
    ("open colectomy planned", lambda: [planned(OPEN_COLECTOMY)], False),
    ("appendectomy planned", lambda: [planned(APPENDECTOMY)], False),
]


@pytest.mark.parametrize(("label", "procs", "fires"), LAP_CASES, ids=[c[0] for c in LAP_CASES])
def test_laparoscopic_trigger(
    knowledge: Knowledge, label: str, procs: Callable[[], list[m.Procedure]], fires: bool
) -> None:
    advice = run(knowledge, clean(knowledge, procedures=procs()))
    assert ("laparoscopic-intraop-mg" in fired(advice)) is fires
    if fires:
        f = finding(advice, "laparoscopic-intraop-mg")
        assert (f.direction, f.indicator) == ("prevention", "info")
        assert f.dose is not None and f.dose.grams == pytest.approx(3.5)


# --- cardiac-surgery-intraop-mg -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "procs", "fires"),
    [
        ("planned CABG", lambda: [planned(CABG)], True),
        ("performed CABG", lambda: [performed(CABG, NOW - 6 * H, NOW - 2 * H)], False),
        ("in-progress CABG", lambda: [performed(CABG, NOW - H, None, status="in-progress")], False),
        ("planned appendectomy", lambda: [planned(APPENDECTOMY)], False),
    ],
)
def test_cardiac_intraop_trigger_and_no_dose(
    knowledge: Knowledge, label: str, procs: Callable[[], list[m.Procedure]], fires: bool
) -> None:
    advice = run(knowledge, clean(knowledge, procedures=procs()))
    assert ("cardiac-surgery-intraop-mg" in fired(advice)) is fires
    if fires:
        f = finding(advice, "cardiac-surgery-intraop-mg")
        assert (f.direction, f.indicator) == ("prevention", "info")
        assert f.suggestion is None and f.dose is None  # regimen not reported: no dose
        assert only_advice(advice, "prevention").medication_suggestion is None


# --- icu-hypomagnesemia-repletion ----------------------------------------------------------------

ICU_CTX: dict[str, Any] = {"icu": ICU, "admitted": ICU}
REPLETION_BOUNDS = [
    pytest.param(op, thr, pos, unit, off, fires, id=f"{op}{thr:g}-{pos}-in-{unit}")
    for op, thr in (("lt", 1.7), ("gt", 1.1))
    for pos, unit, off, fires in boundary_cases(op, thr, "mg/dL")
]


@pytest.mark.parametrize(("op", "threshold", "pos", "unit", "offset", "fires"), REPLETION_BOUNDS)
def test_icu_repletion_range(
    knowledge: Knowledge, op: str, threshold: float, pos: str, unit: str, offset: float, fires: bool
) -> None:
    """Fires for latest serum Mg < 1.7 and > 1.1 mg/dL (the trial's range), both bounds exact."""
    value = convert_mg(knowledge, threshold + offset, "mg/dL", unit)
    snap = clean(knowledge, **ICU_CTX, mg=[mg(knowledge, value, unit, NOW - 2 * H)])
    advice = run(knowledge, snap)
    assert ("icu-hypomagnesemia-repletion" in fired(advice)) is fires
    if fires:
        f = finding(advice, "icu-hypomagnesemia-repletion")
        assert (f.direction, f.indicator) == ("low", "warning")
        assert f.dose is not None and f.dose.grams == 5.9


@pytest.mark.parametrize(
    ("label", "over", "fires"),
    [
        ("18 at the sample", {"birth": born(18, at=NOW - 2 * H)}, True),
        ("17 at the sample", {"birth": born(18, days=-1, at=NOW - 2 * H)}, False),
        ("no ICU stay", {"icu": None}, False),
        ("latest Mg 7 d ago", {"mg": None, "mg_at": NOW - 7 * D}, True),
        ("latest Mg 7 d 1 min ago", {"mg": None, "mg_at": NOW - 7 * D - MIN}, False),
    ],
)
def test_icu_repletion_population_and_window(
    knowledge: Knowledge, label: str, over: dict[str, Any], fires: bool
) -> None:
    kw = {**ICU_CTX, **over}
    if kw.get("mg", ()) is None:
        kw.pop("mg")
    advice = run(knowledge, clean(knowledge, 1.5, **kw))
    assert ("icu-hypomagnesemia-repletion" in fired(advice)) is fires


def test_icu_repletion_uses_the_latest_mg(knowledge: Knowledge) -> None:
    results = [mg(knowledge, 1.5, at=NOW - 30 * H), mg(knowledge, 1.9, at=NOW - 2 * H)]
    assert "icu-hypomagnesemia-repletion" not in fired(
        run(knowledge, clean(knowledge, **ICU_CTX, mg=results))
    )
    results = [mg(knowledge, 1.9, at=NOW - 30 * H), mg(knowledge, 1.5, at=NOW - 2 * H)]
    assert "icu-hypomagnesemia-repletion" in fired(
        run(knowledge, clean(knowledge, **ICU_CTX, mg=results))
    )


def test_icu_repletion_dose(knowledge: Knowledge) -> None:
    """48 mEq/day = 5.9 g magnesium sulfate heptahydrate in 250 mL 0.9 % saline over 24 h, 3 days."""
    advice = run(knowledge, clean(knowledge, 1.5, **ICU_CTX))
    s = only_advice(advice, "low").medication_suggestion
    assert s is not None and s.rule_id == "icu-hypomagnesemia-repletion" and s.dose is not None
    d = s.dose
    assert (d.grams, d.meq, d.per_day, d.days) == (5.9, 48, True, 3)
    assert (d.volume_ml, d.fluid, d.over_minutes) == (250, "0.9 % sodium chloride", 24 * 60.0)


# --- vanco-pip-tazo-mg ---------------------------------------------------------------------------

VPT_CASES = [
    ("both active, ICU", {"medications": "both"}, True),
    ("both as draft orders, ICU", {"medications": "both-draft"}, True),
    ("vancomycin only", {"medications": "vanco"}, False),
    ("piperacillin/tazobactam only", {"medications": "piptazo"}, False),
    ("both, no ICU stay", {"medications": "both", "icu": None}, False),
]


def _vpt_meds(which: str) -> list[m.Medication]:
    return {
        "both": [med(VANCOMYCIN), med(PIP_TAZO)],
        "both-draft": [med(VANCOMYCIN, draft=True), med(PIP_TAZO, draft=True)],
        "vanco": [med(VANCOMYCIN)],
        "piptazo": [med(PIP_TAZO)],
    }[which]


@pytest.mark.parametrize(("label", "over", "fires"), VPT_CASES, ids=[c[0] for c in VPT_CASES])
def test_vanco_pip_tazo_trigger(
    knowledge: Knowledge, label: str, over: dict[str, Any], fires: bool
) -> None:
    kw = {**ICU_CTX, **over, "medications": _vpt_meds(over["medications"])}
    advice = run(knowledge, clean(knowledge, 2.0, **kw))
    assert ("vanco-pip-tazo-mg" in fired(advice)) is fires
    if fires:
        f = finding(advice, "vanco-pip-tazo-mg")
        assert (f.direction, f.indicator) == ("prevention", "info")


VPT_BOUNDS = [
    pytest.param(pos, unit, off, fires, id=f"{pos}-in-{unit}")
    for pos, unit, off, fires in boundary_cases("lt", 1.9, "mg/dL")
]


@pytest.mark.parametrize(("pos", "unit", "offset", "suggests"), VPT_BOUNDS)
def test_vanco_pip_tazo_suggests_magnesium_below_1_9(
    knowledge: Knowledge, pos: str, unit: str, offset: float, suggests: bool
) -> None:
    """The rule fires either way; the 1 g magnesium sulfate suggestion only while Mg < 1.9 mg/dL."""
    value = convert_mg(knowledge, 1.9 + offset, "mg/dL", unit)
    snap = clean(
        knowledge,
        **ICU_CTX,
        mg=[mg(knowledge, value, unit, NOW - 2 * H)],
        medications=_vpt_meds("both"),
    )
    advice = run(knowledge, snap)
    f = finding(advice, "vanco-pip-tazo-mg")
    card = only_advice(advice, "prevention")
    if suggests:
        assert f.dose is not None
        assert (f.dose.grams, f.dose.volume_ml, f.dose.over_minutes) == (1.0, 50, 60.0)
        assert (
            card.medication_suggestion is not None
            and card.medication_suggestion.rule_id == "vanco-pip-tazo-mg"
        )
    else:
        assert f.suggestion is None and f.dose is None
        assert card.medication_suggestion is None and card.withheld == ()


# --- sepsis-mg -----------------------------------------------------------------------------------

SEPSIS_CASES: list[tuple[str, Callable[[], dict[str, Any]], bool]] = [
    ("sepsis A41.9, ICU 10 h ago", lambda: {}, True),
    ("septic shock R65.21", lambda: {"conditions": [condition(R_SEPSIS_SHOCK)]}, True),
    ("ICU started 24 h ago", lambda: {"icu": NOW - 24 * H, "admitted": NOW - 24 * H}, True),
    (
        "ICU started 24 h 1 min ago",
        lambda: {"icu": NOW - 24 * H - MIN, "admitted": NOW - 2 * D},
        False,
    ),
    ("no ICU stay", lambda: {"icu": None}, False),
    ("no sepsis", lambda: {"conditions": []}, False),
    (
        "magnesium given after ICU start",
        lambda: {"medications": [given(MG_SULFATE, ICU + H)]},
        False,
    ),
    (
        "magnesium given before ICU start",
        lambda: {"medications": [given(MG_SULFATE, ICU - 2 * H)]},
        True,
    ),
    ("active magnesium order", lambda: {"medications": [med(MG_SULFATE, authored=ICU - D)]}, False),
]


@pytest.mark.parametrize(("label", "over", "fires"), SEPSIS_CASES, ids=[c[0] for c in SEPSIS_CASES])
def test_sepsis_trigger(
    knowledge: Knowledge, label: str, over: Callable[[], dict[str, Any]], fires: bool
) -> None:
    kw: dict[str, Any] = {**ICU_CTX, "conditions": [condition(SEPSIS)], **over()}
    advice = run(knowledge, clean(knowledge, **kw))
    assert ("sepsis-mg" in fired(advice)) is fires
    if fires:
        f = finding(advice, "sepsis-mg")
        assert (f.direction, f.indicator) == ("prevention", "info")


def test_sepsis_dose(knowledge: Knowledge) -> None:
    advice = run(knowledge, clean(knowledge, **ICU_CTX, conditions=[condition(SEPSIS)]))
    s = only_advice(advice, "prevention").medication_suggestion
    assert s is not None and s.rule_id == "sepsis-mg" and s.dose is not None
    # once, for that day only (evidence.md §4: boundsDuration 1 d), over at least 1 h
    assert (s.dose.grams, s.dose.count, s.dose.days, s.dose.volume_ml, s.dose.over_minutes) == (
        2.0,
        1,
        1,
        50,
        60,
    )


# --- drug-induced-hypomagnesemia -----------------------------------------------------------------

DRUGS = [
    ("omeprazole (PPI)", OMEPRAZOLE, True),
    ("hydrochlorothiazide", HCTZ, True),
    ("gentamicin (aminoglycoside)", GENTAMICIN, True),
    ("cisplatin", CISPLATIN, True),
    ("pantoprazole by ATC A02BC02", ("http://www.whocc.no/atc", "A02BC02", "pantoprazole"), True),
    ("acetaminophen", ACETAMINOPHEN, False),
]


@pytest.mark.parametrize(("label", "drug", "fires"), DRUGS, ids=[d[0] for d in DRUGS])
def test_drug_induced_drugs(
    knowledge: Knowledge, label: str, drug: tuple[str, str, str], fires: bool
) -> None:
    advice = run(knowledge, clean(knowledge, 1.6, encounter=None, medications=[med(drug)]))
    assert ("drug-induced-hypomagnesemia" in fired(advice)) is fires
    if fires:
        f = finding(advice, "drug-induced-hypomagnesemia")
        assert (f.direction, f.indicator) == ("low", "warning")
        assert f.suggestion is not None and f.suggestion["kind"] == "lab-order"
        assert f.suggestion["code"]["code"] == "19123-9"


@pytest.mark.parametrize(
    ("pos", "unit", "offset", "fires"),
    [pytest.param(*c, id=f"{c[0]}-in-{c[1]}") for c in boundary_cases("lt", 1.7, "mg/dL")],
)
def test_drug_induced_threshold(
    knowledge: Knowledge, pos: str, unit: str, offset: float, fires: bool
) -> None:
    value = convert_mg(knowledge, 1.7 + offset, "mg/dL", unit)
    snap = clean(
        knowledge,
        encounter=None,
        mg=[mg(knowledge, value, unit, NOW - 2 * H)],
        medications=[med(OMEPRAZOLE)],
    )
    assert ("drug-induced-hypomagnesemia" in fired(run(knowledge, snap))) is fires


def test_drug_induced_needs_a_recent_mg(knowledge: Knowledge) -> None:
    snap = clean(knowledge, 1.5, NOW - 7 * D - MIN, encounter=None, medications=[med(OMEPRAZOLE)])
    assert "drug-induced-hypomagnesemia" not in fired(run(knowledge, snap))
    snap = clean(knowledge, 1.5, NOW - 7 * D, encounter=None, medications=[med(OMEPRAZOLE)])
    assert "drug-induced-hypomagnesemia" in fired(run(knowledge, snap))


# --- all medication suggestions in a clean context -----------------------------------------------


@pytest.mark.parametrize(
    ("rule", "over", "grams"),
    [
        ("cisplatin-mg-preload", lambda k: {"medications": [med(CISPLATIN, draft=True)]}, 2.0),
        ("laparoscopic-intraop-mg", lambda k: {"procedures": [planned(LAP_COLECTOMY)]}, 3.5),
        ("icu-hypomagnesemia-repletion", lambda k: {**ICU_CTX, "mg": [mg(k, 1.5, at=NOW - 2 * H)]}, 5.9),
        ("vanco-pip-tazo-mg",
         lambda k: {**ICU_CTX, "medications": _vpt_meds("both"), "mg": [mg(k, 1.8, at=NOW - 2 * H)]}, 1.0),
        ("sepsis-mg", lambda k: {**ICU_CTX, "conditions": [condition(SEPSIS)]}, 2.0),
    ],
)  # fmt: skip
def test_each_medication_suggestion_passes_a_clean_gate(
    knowledge: Knowledge, rule: str, over: Callable[[Knowledge], dict[str, Any]], grams: float
) -> None:
    """Alone and with no gate condition, each medication rule yields exactly its own suggestion."""
    advice = run(knowledge, clean(knowledge, **over(knowledge)))
    suggestions = [a.medication_suggestion for a in advice if a.medication_suggestion is not None]
    assert [s.rule_id for s in suggestions] == [rule]
    assert suggestions[0].dose is not None and suggestions[0].dose.grams == pytest.approx(grams)
    assert all(a.withheld == () and a.gate_conditions == () for a in advice)
