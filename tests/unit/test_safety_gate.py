"""The safety gate, mg-order-unsafe, hypermagnesemia-toxic, obstetric magnesium and the
weight-based laparoscopic dose (evidence.md §4 "Safety gate and safety rules", §5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.rules.model import Advice, Knowledge
from tests.unit.builders import (
    AV_BLOCK_1,
    AV_BLOCK_2,
    AV_BLOCK_3,
    CIRRHOSIS,
    CISPLATIN,
    CKD3,
    CKD4,
    CKD5_SCT,
    DIALYSIS_STATUS,
    ESRD,
    HEMODIALYSIS,
    ICD10CM,
    LAP_COLECTOMY,
    MG_OXIDE_ATC,
    MG_SULFATE,
    MIN,
    MYASTHENIA,
    NOW,
    OLIGURIA,
    PRE_ECLAMPSIA,
    PREGNANCY,
    D,
    H,
    born,
    boundary_cases,
    by_direction,
    condition,
    convert_mg,
    creatinine,
    egfr,
    finding,
    fired,
    given,
    med,
    mg,
    performed,
    planned,
    run,
    snapshot,
    weight,
)

ICU = NOW - 10 * H
GESTATIONAL_DM = (ICD10CM, "O24.410", "Gestational diabetes mellitus in pregnancy, diet controlled")


def control(k: Knowledge, **over: Any) -> m.ClinicalSnapshot:
    """The positive control: adult ICU, Mg 1.5 mg/dL, eGFR 75, creatinine 0.9, 70 kg, all in window.

    A man of 50: his creatinine gives a computed CKD-EPI 2021 eGFR too (0.9 mg/dL: 101).
    """
    kw: dict[str, Any] = {
        "age": 50,
        "sex": "male",
        "encounter": "inpatient",
        "admitted": ICU,
        "icu": ICU,
        "mg": [mg(k, 1.5, at=NOW - 2 * H)],
        "creatinine": [creatinine(k, 0.9, NOW - 3 * H)],
        "egfr": [egfr(k, 75, NOW - 3 * H)],
        "weight": [weight(k, 70, NOW - D)],
        **over,
    }
    return snapshot(**kw)


def preload(k: Knowledge, mg_value: float = 2.0, **over: Any) -> m.ClinicalSnapshot:
    """A prevention control: adult inpatient on cisplatin (no Mg threshold), otherwise as the control."""
    kw: dict[str, Any] = {"icu": None, "mg": [mg(k, mg_value, at=NOW - 2 * H)],
                          "medications": [med(CISPLATIN, draft=True)], **over}  # fmt: skip
    return control(k, **kw)


def med_cards(advice: list[Advice]) -> list[Advice]:
    return [
        a
        for a in advice
        if any(f.suggestion and f.suggestion.get("kind") == "medication" for f in a.findings)
    ]


def test_positive_control(knowledge: Knowledge) -> None:
    advice = run(knowledge, control(knowledge))
    assert fired(advice) == {"icu-admission-low", "icu-hypomagnesemia-repletion"}
    low = by_direction(advice)["low"]
    assert low.withheld == () and low.gate_conditions == ()
    s = low.medication_suggestion
    assert s is not None and s.rule_id == "icu-hypomagnesemia-repletion"
    assert s.dose is not None and s.dose.grams == 5.9 and s.dose.route == "IV"
    assert all(a.withheld == () for a in advice)


def test_prevention_control(knowledge: Knowledge) -> None:
    advice = run(knowledge, preload(knowledge))
    card = by_direction(advice)["prevention"]
    assert card.withheld == ()
    assert (
        card.medication_suggestion is not None
        and card.medication_suggestion.rule_id == "cisplatin-mg-preload"
    )


# Creatinine >= 3.5 mg/dL gives a computed eGFR below 30 at any adult age (CKD-EPI 2021):
# the two conditions hold together, in gate.yaml order.
ALSO = {"creatinine-high": ("egfr-low", "creatinine-high")}


def _assert_withheld(advice: list[Advice], rule: str, condition_id: str) -> None:
    cards = med_cards(advice)
    assert cards, f"no medication rule fired: {sorted(fired(advice))}"
    assert all(a.medication_suggestion is None for a in advice)
    withheld = {w.rule_id: w.conditions for a in advice for w in a.withheld}
    expected = ALSO.get(condition_id, (condition_id,))
    assert withheld[rule] == expected
    card = next(a for a in cards if rule in a.rules)
    assert card.gate_conditions == expected


def _assert_passes(advice: list[Advice], rule: str) -> None:
    assert all(a.withheld == () for a in advice)
    assert any(
        a.medication_suggestion is not None and a.medication_suggestion.rule_id == rule
        for a in advice
    )


# Each gate condition alone on the positive control (mg-high and child: on cisplatin-mg-preload,
# since Mg ≥ 2.5 cannot coexist with Mg 1.5 and the ICU repletion rule is for adults).
GATE: list[tuple[str, str, str, Callable[[Knowledge], m.ClinicalSnapshot], bool]] = [
    ("mg-high", "Mg 2.5 mg/dL", "cisplatin-mg-preload", lambda k: preload(k, 2.5), True),
    ("mg-high", "Mg 2.49 mg/dL", "cisplatin-mg-preload", lambda k: preload(k, 2.49), False),
    ("mg-high", "Mg 2.5 mg/dL in mmol/L", "cisplatin-mg-preload",
     lambda k: preload(k, mg=[mg(k, 2.5 / 2.4305, "mmol/L", NOW - 2 * H)]), True),
    ("mg-high", "Mg 2.5 mg/dL in mEq/L", "cisplatin-mg-preload",
     lambda k: preload(k, mg=[mg(k, 2.5 / 1.21525, "mEq/L", NOW - 2 * H)]), True),
    ("mg-high", "Mg '>2.4' (not decided)", "cisplatin-mg-preload",
     lambda k: preload(k, mg=[mg(k, 2.4, at=NOW - 2 * H, comparator=">")]), False),
    ("mg-missing", "Mg 72 h 1 min ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, mg=[mg(k, 1.5, at=NOW - 72 * H - MIN)]), True),
    ("mg-missing", "Mg 72 h ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, mg=[mg(k, 1.5, at=NOW - 72 * H)]), False),
    ("mg-missing", "no Mg at all", "cisplatin-mg-preload", lambda k: preload(k, mg=[]), True),
    ("renal-unknown", "no creatinine, no eGFR", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[], egfr=[]), True),
    ("renal-unknown", "both 7 d 1 min ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[creatinine(k, 0.9, NOW - 7 * D - MIN)], egfr=[egfr(k, 75, NOW - 7 * D - MIN)]), True),
    ("renal-unknown", "creatinine only, 7 d ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[creatinine(k, 0.9, NOW - 7 * D)], egfr=[]), False),
    ("renal-unknown", "eGFR only", "icu-hypomagnesemia-repletion", lambda k: control(k, creatinine=[]), False),
    ("egfr-low", "eGFR 29.9", "icu-hypomagnesemia-repletion", lambda k: control(k, egfr=[egfr(k, 29.9)]), True),
    ("egfr-low", "eGFR 30", "icu-hypomagnesemia-repletion", lambda k: control(k, egfr=[egfr(k, 30)]), False),
    ("aki-stage", "KDIGO stage 2 (1.0 -> 2.0)", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[creatinine(k, 1.0, NOW - 3 * D), creatinine(k, 2.0, NOW - 3 * H)]), True),
    ("aki-stage", "KDIGO stage 1 (1.0 -> 1.9)", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[creatinine(k, 1.0, NOW - 3 * D), creatinine(k, 1.9, NOW - 3 * H)]), False),
    ("creatinine-high", "creatinine 3.5 mg/dL", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[creatinine(k, 3.5)]), True),
    ("creatinine-high", "creatinine 309.4 umol/L (3.5 mg/dL)", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[creatinine(k, 309.4, unit="umol/L")]), True),
    ("creatinine-high", "creatinine 3.49 mg/dL", "icu-hypomagnesemia-repletion",
     lambda k: control(k, creatinine=[creatinine(k, 3.49)]), False),
    ("dialysis", "ESRD N18.6", "icu-hypomagnesemia-repletion", lambda k: control(k, conditions=[condition(ESRD)]), True),
    ("dialysis", "dialysis status Z99.2", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(DIALYSIS_STATUS)]), True),
    ("dialysis", "haemodialysis 10 d ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, procedures=[performed(HEMODIALYSIS, NOW - 10 * D - 4 * H, NOW - 10 * D)]), True),
    ("dialysis", "haemodialysis planned", "icu-hypomagnesemia-repletion",
     lambda k: control(k, procedures=[planned(HEMODIALYSIS)]), True),
    ("dialysis", "CKD stage 3 is not ESRD", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(CKD3)]), False),
    ("ckd-advanced", "CKD stage 4 N18.4", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(CKD4)]), True),
    ("ckd-advanced", "CKD stage 5 SNOMED 433146000", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(CKD5_SCT)]), True),
    ("ckd-advanced", "CKD stage 3 is not advanced", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(CKD3)]), False),
    ("egfr-low", "no eGFR sent; creatinine 3.0 in a woman of 85 (computed 15)", "icu-hypomagnesemia-repletion",
     lambda k: control(k, age=85, sex="female", egfr=[], creatinine=[creatinine(k, 3.0)]), True),
    ("egfr-low", "no eGFR sent; creatinine 2.0 in a man of 50 (computed 40)", "icu-hypomagnesemia-repletion",
     lambda k: control(k, egfr=[], creatinine=[creatinine(k, 2.0)]), False),
    ("egfr-low", "no eGFR sent; creatinine 1.9, sex unknown, 80 (female 27, male 36)", "icu-hypomagnesemia-repletion",
     lambda k: control(k, age=80, sex=None, egfr=[], creatinine=[creatinine(k, 1.9)]), True),
    ("egfr-low", "reported eGFR 75 but computed 26: the lower counts", "icu-hypomagnesemia-repletion",
     lambda k: control(k, age=85, sex="female", creatinine=[creatinine(k, 1.9)]), True),
    ("oliguria", "oliguria R34", "icu-hypomagnesemia-repletion", lambda k: control(k, conditions=[condition(OLIGURIA)]), True),
    ("myasthenia", "myasthenia gravis G70.00", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(MYASTHENIA)]), True),
    ("av-block", "AV block second degree I44.1", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(AV_BLOCK_2)]), True),
    ("av-block", "AV block complete I44.2", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(AV_BLOCK_3)]), True),
    ("av-block", "AV block first degree I44.0", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(AV_BLOCK_1)]), False),
    ("mg-active", "active magnesium sulfate order", "icu-hypomagnesemia-repletion",
     lambda k: control(k, medications=[med(MG_SULFATE)]), True),
    ("mg-active", "magnesium sulfate draft order", "icu-hypomagnesemia-repletion",
     lambda k: control(k, medications=[med(MG_SULFATE, draft=True)]), True),
    ("mg-active", "oral magnesium active", "icu-hypomagnesemia-repletion",
     lambda k: control(k, medications=[med(MG_OXIDE_ATC)]), True),
    ("mg-active", "magnesium given 2 h ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, medications=[given(MG_SULFATE, NOW - 2 * H)]), True),
    ("child", "17 years, on cisplatin", "cisplatin-mg-preload", lambda k: preload(k, birth=born(18, days=-1)), True),
    ("child", "18 years, on cisplatin", "cisplatin-mg-preload", lambda k: preload(k, birth=born(18)), False),
    ("age-unknown", "no birth date, on cisplatin", "cisplatin-mg-preload", lambda k: preload(k, birth=None, age=None), True),
    ("weight-unknown", "no weight at all", "icu-hypomagnesemia-repletion", lambda k: control(k, weight=[]), True),
    ("weight-unknown", "weight 30 d 1 min ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, weight=[weight(k, 70, NOW - 30 * D - MIN)]), True),
    ("weight-unknown", "weight 30 d ago", "icu-hypomagnesemia-repletion",
     lambda k: control(k, weight=[weight(k, 70, NOW - 30 * D)]), False),
    ("low-weight", "39.9 kg", "icu-hypomagnesemia-repletion", lambda k: control(k, weight=[weight(k, 39.9)]), True),
    ("low-weight", "40 kg", "icu-hypomagnesemia-repletion", lambda k: control(k, weight=[weight(k, 40)]), False),
    ("pregnancy", "pregnant state Z33.1", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(PREGNANCY)]), True),
    ("pregnancy", "gestational diabetes O24.410", "icu-hypomagnesemia-repletion",
     lambda k: control(k, conditions=[condition(GESTATIONAL_DM)]), True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("condition_id", "label", "rule", "build", "holds"), GATE, ids=[f"{g[0]}-{g[1]}" for g in GATE]
)
def test_each_gate_condition_alone(
    knowledge: Knowledge, condition_id: str, label: str, rule: str,
    build: Callable[[Knowledge], m.ClinicalSnapshot], holds: bool,
) -> None:  # fmt: skip
    advice = run(knowledge, build(knowledge))
    assert rule in fired(advice)
    if holds:
        _assert_withheld(advice, rule, condition_id)
    elif condition_id in ALSO:  # creatinine 3.49: its computed eGFR still withholds
        held = {c for a in advice for w in a.withheld for c in w.conditions}
        assert condition_id not in held and held == set(ALSO[condition_id]) - {condition_id}
    else:
        _assert_passes(advice, rule)


def test_every_gate_condition_is_tested(knowledge: Knowledge) -> None:
    assert {g.id for g in knowledge.gate} == {g[0] for g in GATE if g[4]}
    assert len(knowledge.gate) == 17


def test_recent_dialysis_is_also_aki_stage_3(knowledge: Knowledge) -> None:
    """evidence.md §3: dialysis started (within the 7-day episode) is KDIGO stage 3."""
    snap = control(
        knowledge, procedures=[performed(HEMODIALYSIS, NOW - 3 * D - 4 * H, NOW - 3 * D)]
    )
    (w,) = by_direction(run(knowledge, snap))["low"].withheld
    assert w.conditions == ("aki-stage", "dialysis")


def test_mg_missing_suggests_measuring(knowledge: Knowledge) -> None:
    advice = run(knowledge, preload(knowledge, mg=[]))
    card = by_direction(advice)["prevention"]
    assert card.gate_conditions == ("mg-missing",)
    assert card.lab_suggestion is not None


def test_the_gate_withholds_every_magnesium_suggestion(knowledge: Knowledge) -> None:
    """Two medication rules on two cards, one gate condition: both withheld, none suggested."""
    snap = control(knowledge, medications=[med(CISPLATIN, draft=True)], egfr=[egfr(knowledge, 20)])
    advice = run(knowledge, snap)
    cards = by_direction(advice)
    assert {w.rule_id for w in cards["low"].withheld} == {"icu-hypomagnesemia-repletion"}
    assert {w.rule_id for w in cards["prevention"].withheld} == {"cisplatin-mg-preload"}
    assert all(w.conditions == ("egfr-low",) for a in advice for w in a.withheld)
    assert all(a.medication_suggestion is None for a in advice)


def test_several_gate_conditions_are_all_named(knowledge: Knowledge) -> None:
    snap = control(
        knowledge,
        egfr=[egfr(knowledge, 20)],
        conditions=[condition(MYASTHENIA)],
        weight=[weight(knowledge, 38)],
    )
    advice = run(knowledge, snap)
    (w,) = by_direction(advice)["low"].withheld
    assert w.rule_id == "icu-hypomagnesemia-repletion"
    assert set(w.conditions) == {"egfr-low", "myasthenia", "low-weight"}


# --- mg-order-unsafe -----------------------------------------------------------------------------

DRAFT_MG = med(MG_SULFATE, draft=True)

UNSAFE: list[tuple[str, Callable[[Knowledge], m.ClinicalSnapshot], str | None]] = [
    ("no other gate condition", lambda k: control(k, medications=[DRAFT_MG]), None),
    ("Mg 2.5 mg/dL", lambda k: control(k, mg=[mg(k, 2.5, at=NOW - 2 * H)], medications=[DRAFT_MG]), "critical"),
    ("Mg 2.49 mg/dL", lambda k: control(k, mg=[mg(k, 2.49, at=NOW - 2 * H)], medications=[DRAFT_MG]), None),
    ("ESRD", lambda k: control(k, conditions=[condition(ESRD)], medications=[DRAFT_MG]), "critical"),
    ("haemodialysis", lambda k: control(k, procedures=[performed(HEMODIALYSIS, NOW - D - 4 * H, NOW - D)],
                                        medications=[DRAFT_MG]), "critical"),
    ("no Mg in 72 h", lambda k: control(k, mg=[], medications=[DRAFT_MG]), "warning"),
    ("renal function unknown", lambda k: control(k, creatinine=[], egfr=[], medications=[DRAFT_MG]), "warning"),
    ("eGFR 25", lambda k: control(k, egfr=[egfr(k, 25)], medications=[DRAFT_MG]), "warning"),
    ("AKI stage 2", lambda k: control(k, creatinine=[creatinine(k, 1.0, NOW - 3 * D), creatinine(k, 2.1, NOW - 3 * H)],
                                      medications=[DRAFT_MG]), "warning"),
    ("creatinine 3.6", lambda k: control(k, creatinine=[creatinine(k, 3.6)], medications=[DRAFT_MG]), "warning"),
    ("oliguria", lambda k: control(k, conditions=[condition(OLIGURIA)], medications=[DRAFT_MG]), "warning"),
    ("myasthenia gravis", lambda k: control(k, conditions=[condition(MYASTHENIA)], medications=[DRAFT_MG]), "warning"),
    ("complete AV block", lambda k: control(k, conditions=[condition(AV_BLOCK_3)], medications=[DRAFT_MG]), "warning"),
    ("child", lambda k: control(k, age=12, medications=[DRAFT_MG]), "warning"),
    ("38 kg", lambda k: control(k, weight=[weight(k, 38)], medications=[DRAFT_MG]), "warning"),
    ("pregnancy", lambda k: control(k, conditions=[condition(PREGNANCY)], medications=[DRAFT_MG]), "warning"),
    ("Mg 2.6 and eGFR 25", lambda k: control(k, mg=[mg(k, 2.6, at=NOW - 2 * H)], egfr=[egfr(k, 25)],
                                             medications=[DRAFT_MG]), "critical"),
    ("active (not draft) order, eGFR 25",
     lambda k: control(k, egfr=[egfr(k, 25)], medications=[med(MG_SULFATE)]), None),
    ("draft order of another drug, eGFR 25",
     lambda k: control(k, egfr=[egfr(k, 25)], medications=[med(CISPLATIN, draft=True)]), None),
    ("pre-eclampsia, eGFR 25", lambda k: control(k, egfr=[egfr(k, 25)], conditions=[condition(PRE_ECLAMPSIA)],
                                                 medications=[DRAFT_MG]), None),
]  # fmt: skip


@pytest.mark.parametrize(("label", "build", "indicator"), UNSAFE, ids=[u[0] for u in UNSAFE])
def test_mg_order_unsafe(
    knowledge: Knowledge,
    label: str,
    build: Callable[[Knowledge], m.ClinicalSnapshot],
    indicator: str | None,
) -> None:
    advice = run(knowledge, build(knowledge))
    if indicator is None:
        assert "mg-order-unsafe" not in fired(advice)
        return
    f = finding(advice, "mg-order-unsafe")
    assert (f.direction, f.indicator) == ("safety", indicator)
    assert "mg-active" not in f.context.reasons
    card = by_direction(advice)["safety"]
    assert (card.lead, card.indicator) == ("mg-order-unsafe", indicator)


# --- hypermagnesemia-toxic and obstetric magnesium -----------------------------------------------

TOXIC = [
    pytest.param(
        thr,
        obstetric,
        pos,
        unit,
        off,
        fires,
        id=f"{'obstetric-' if obstetric else ''}ge{thr:g}-{pos}-in-{unit}",
    )
    for thr, obstetric in ((4.8, False), (9.6, True))
    for pos, unit, off, fires in boundary_cases("ge", thr, "mg/dL")
]


@pytest.mark.parametrize(("threshold", "obstetric", "pos", "unit", "offset", "fires"), TOXIC)
def test_hypermagnesemia_toxic(
    knowledge: Knowledge,
    threshold: float,
    obstetric: bool,
    pos: str,
    unit: str,
    offset: float,
    fires: bool,
) -> None:
    value = convert_mg(knowledge, threshold + offset, "mg/dL", unit)
    conditions = [condition(PRE_ECLAMPSIA)] if obstetric else []
    advice = run(
        knowledge, snapshot(encounter=None, mg=[mg(knowledge, value, unit)], conditions=conditions)
    )
    assert ("hypermagnesemia-toxic" in fired(advice)) is fires
    if fires:
        f = finding(advice, "hypermagnesemia-toxic")
        assert (f.direction, f.indicator) == ("high", "critical")
        assert f.threshold is not None and f.threshold.ge == threshold
        assert bool(f.context.obstetric) is obstetric
        card = by_direction(advice)["high"]
        assert (card.lead, card.indicator) == ("hypermagnesemia-toxic", "critical")


@pytest.mark.parametrize("value", [5.0, 8.4])
def test_obstetric_range_is_not_toxic(knowledge: Knowledge, value: float) -> None:
    advice = run(
        knowledge,
        snapshot(encounter=None, mg=[mg(knowledge, value)], conditions=[condition(PRE_ECLAMPSIA)]),
    )
    assert "hypermagnesemia-toxic" not in fired(advice)


def _obstetric_rich(k: Knowledge, mg_value: float, obstetric: bool) -> m.ClinicalSnapshot:
    """Everything at once: ICU, cirrhosis, cisplatin, draft Mg order, eGFR 25, planned surgery."""
    conds = [condition(CIRRHOSIS), *([condition(PRE_ECLAMPSIA)] if obstetric else [])]
    return control(
        k,
        mg=[mg(k, mg_value, at=ICU + H)],
        egfr=[egfr(k, 25)],
        conditions=conds,
        medications=[DRAFT_MG, med(CISPLATIN)],
        procedures=[planned(LAP_COLECTOMY)],
    )


def test_obstetric_no_association_supplementation_or_order_rule(knowledge: Knowledge) -> None:
    without = fired(run(knowledge, _obstetric_rich(knowledge, 6.0, obstetric=False)))
    assert {"hypermagnesemia-toxic", "admission-u-shape", "icu-admission-high", "cirrhosis-high",
            "cisplatin-mg-preload", "laparoscopic-intraop-mg", "mg-order-unsafe"} <= without  # fmt: skip
    assert fired(run(knowledge, _obstetric_rich(knowledge, 6.0, obstetric=True))) == set()
    advice = run(knowledge, _obstetric_rich(knowledge, 9.6, obstetric=True))
    assert fired(advice) == {"hypermagnesemia-toxic"}
    assert finding(advice, "hypermagnesemia-toxic").context.obstetric is True


def test_obstetric_low_mg_only_monitoring_rules(knowledge: Knowledge) -> None:
    """Severe hypomagnesaemia is a monitoring rule: it still fires; nothing is suggested."""
    advice = run(knowledge, _obstetric_rich(knowledge, 1.0, obstetric=True))
    assert fired(advice) == {"severe-hypomagnesemia"}
    assert all(a.medication_suggestion is None for a in advice)


# --- laparoscopic-intraop-mg weight-based dose ---------------------------------------------------


def _lap(
    k: Knowledge, kg: float | None, at: datetime = NOW - D, unit: str = "kg"
) -> m.ClinicalSnapshot:
    weights = [] if kg is None else [m_weight(k, kg, at, unit)]
    return control(
        k,
        icu=None,
        mg=[mg(k, 2.0, at=NOW - 2 * H)],
        weight=weights,
        procedures=[planned(LAP_COLECTOMY)],
    )


def m_weight(k: Knowledge, value: float, at: datetime, unit: str) -> m.LabResult:
    w = weight(k, value, at)
    if unit == "kg":
        return w
    q = k.units["weight"]
    return m.LabResult(w.id, w.kind, q.to_canonical(value, unit), "kg", at, w.code, value, unit)


@pytest.mark.parametrize(
    ("kg", "unit", "grams", "bolus_min", "infusion_g_h"),
    [
        (70, "kg", 3.5, 24, 1.05),  # 3500/150 = 23.3: rounded up, never above 150 mg/min
        (40, "kg", 2.0, 15, 0.6),  # 2000/150 = 13.3 < 15 min
        (45, "kg", 2.25, 15, 0.68),  # 2250/150 = 15 min; 0.675 g/h rounded half up
        (60, "kg", 3.0, 20, 0.9),  # the 60 / 90 / 120 kg: 20 / 30 / 40 min
        (90, "kg", 4.5, 30, 1.35),
        (120, "kg", 6.0, 40, 1.8),
        (150, "kg", 7.5, 50, 2.25),
        (154.32358, "[lb_av]", 3.5, 24, 1.05),  # 70 kg in pounds
    ],
)
def test_laparoscopic_dose(
    knowledge: Knowledge, kg: float, unit: str, grams: float, bolus_min: float, infusion_g_h: float
) -> None:
    advice = run(knowledge, _lap(knowledge, kg, unit=unit))
    card = by_direction(advice)["prevention"]
    assert card.withheld == ()
    s = card.medication_suggestion
    assert s is not None and s.rule_id == "laparoscopic-intraop-mg" and s.dose is not None
    d = s.dose
    assert d.grams == pytest.approx(grams, rel=1e-6)
    assert d.over_minutes == bolus_min  # whole minutes, rounded up: never faster than 150 mg/min
    assert d.rate_mg_min is not None and d.rate_mg_min <= 150
    assert d.infusion_g_per_h == pytest.approx(infusion_g_h, rel=1e-6)
    assert (d.volume_ml, d.fluid, d.route) == (100, "0.9 % sodium chloride", "IV")
    assert d.weight_kg == pytest.approx(70 if unit != "kg" else kg, rel=1e-6)


@pytest.mark.parametrize(
    ("label", "kg", "at", "reason"),
    [
        ("35 kg", 35.0, NOW - D, "weight-out-of-range"),
        ("39.9 kg", 39.9, NOW - D, "weight-out-of-range"),
        ("150.1 kg", 150.1, NOW - D, "weight-out-of-range"),
        ("160 kg", 160.0, NOW - D, "weight-out-of-range"),
        ("70 kg 30 d 1 min ago", 70.0, NOW - 30 * D - MIN, "no-weight"),
        ("no weight", None, NOW - D, "no-weight"),
    ],
)
def test_laparoscopic_no_dose(
    knowledge: Knowledge, label: str, kg: float | None, at: datetime, reason: str
) -> None:
    advice = run(knowledge, _lap(knowledge, kg, at))
    f = finding(advice, "laparoscopic-intraop-mg")
    assert f.dose is None and f.no_dose_reason == reason
    assert all(a.medication_suggestion is None for a in advice)


def test_laparoscopic_weight_30_days_old_is_used(knowledge: Knowledge) -> None:
    f = finding(run(knowledge, _lap(knowledge, 70.0, NOW - 30 * D)), "laparoscopic-intraop-mg")
    assert f.dose is not None and f.dose.grams == pytest.approx(3.5)
