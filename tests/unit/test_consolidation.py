"""Card consolidation (evidence.md §6): one Advice per direction, its lead, its indicator,
all its rules, one magnesium medication suggestion per response, reference-range as fallback."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.rules.model import Advice, Knowledge
from tests.unit.builders import (
    CIRRHOSIS,
    CISPLATIN,
    COVID,
    LAP_COLECTOMY,
    NOW,
    PANCREATITIS,
    PIP_TAZO,
    PRE_ECLAMPSIA,
    SEPSIS,
    TBI,
    VANCOMYCIN,
    D,
    H,
    by_direction,
    condition,
    creatinine,
    egfr,
    excluded_mg,
    fired,
    med,
    mg,
    planned,
    run,
    safe_labs,
    snapshot,
    weight,
)

ICU = NOW - 10 * H

# evidence.md §4, table order
TABLE_ORDER = [
    "admission-u-shape", "contrast-u-shape", "icu-admission-low", "icu-admission-high",
    "cardiac-surgery-postop-high", "emergency-admission-high", "cirrhosis-high", "covid-stay-median-high",
    "pediatric-icu-corrected-high", "cardiac-surgery-preop-ionized-low", "cardiac-surgery-preop-low",
    "pancreatitis-low", "tbi-low", "malignancy-low", "aki-recovery-low", "csa-aki-persistent-low",
    "reference-range",
    "cisplatin-mg-preload", "laparoscopic-intraop-mg", "cardiac-surgery-intraop-mg",
    "icu-hypomagnesemia-repletion", "vanco-pip-tazo-mg", "sepsis-mg", "drug-induced-hypomagnesemia",
    "severe-hypomagnesemia", "monitoring-gap", "mg-trend", "mg-data-quality", "aki-kdigo",
    "mg-order-unsafe", "hypermagnesemia-toxic",
]  # fmt: skip

# evidence.md §6: the card each rule belongs to ("by-threshold": low or high by the arm that fired)
DIRECTIONS = {
    "low": ["icu-admission-low", "cardiac-surgery-preop-ionized-low", "cardiac-surgery-preop-low",
            "pancreatitis-low", "tbi-low", "malignancy-low", "aki-recovery-low", "csa-aki-persistent-low",
            "severe-hypomagnesemia", "drug-induced-hypomagnesemia", "icu-hypomagnesemia-repletion"],
    "high": ["icu-admission-high", "cardiac-surgery-postop-high", "emergency-admission-high", "cirrhosis-high",
             "covid-stay-median-high", "pediatric-icu-corrected-high", "hypermagnesemia-toxic"],
    "by-threshold": ["admission-u-shape", "contrast-u-shape", "mg-trend"],
    "prevention": ["cisplatin-mg-preload", "laparoscopic-intraop-mg", "cardiac-surgery-intraop-mg",
                   "vanco-pip-tazo-mg", "sepsis-mg"],
    "safety": ["mg-order-unsafe"],
    "monitoring": ["monitoring-gap", "reference-range", "mg-data-quality"],
    "aki": ["aki-kdigo"],
}  # fmt: skip


def test_rule_table_order(knowledge: Knowledge) -> None:
    assert [r.id for r in sorted(knowledge.rules, key=lambda r: r.order)] == TABLE_ORDER
    assert len(TABLE_ORDER) == 31


@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
def test_rule_directions(knowledge: Knowledge, direction: str) -> None:
    assert sorted(r.id for r in knowledge.rules if r.direction == direction) == sorted(
        DIRECTIONS[direction]
    )


def icu_adult(k: Knowledge, mg_value: float, **over: Any) -> m.ClinicalSnapshot:
    kw: dict[str, Any] = {"age": 50, "encounter": "inpatient", "admitted": ICU, "icu": ICU,
                          "mg": [mg(k, mg_value, at=NOW - 2 * H)], **safe_labs(k), **over}  # fmt: skip
    return snapshot(**kw)


def _check_card_invariants(advice: list[Advice]) -> None:
    """One Advice per direction; each lists all its rules; indicator is the highest; lead first."""
    order = {"info": 0, "warning": 1, "critical": 2}
    assert len({a.direction for a in advice}) == len(advice)
    for a in advice:
        assert {f.direction for f in a.findings} == {a.direction}
        assert set(a.rules) == {f.rule_id for f in a.findings}
        assert a.rules[0] == a.lead
        assert a.indicator == max((f.indicator for f in a.findings), key=order.__getitem__)
    assert sum(a.medication_suggestion is not None for a in advice) <= 1


def test_lead_highest_indicator_first(knowledge: Knowledge) -> None:
    """Mg 0.9: severe-hypomagnesemia is critical (< 1.0) and leads before specific warning rules."""
    advice = run(knowledge, icu_adult(knowledge, 0.9))
    _check_card_invariants(advice)
    low = by_direction(advice)["low"]
    assert set(low.rules) == {"admission-u-shape", "icu-admission-low", "severe-hypomagnesemia"}
    assert (low.lead, low.indicator) == ("severe-hypomagnesemia", "critical")


def test_lead_specific_population_before_anyone(knowledge: Knowledge) -> None:
    """Mg 1.05: severe-hypomagnesemia is only a warning; the specific rules lead (table order)."""
    advice = run(knowledge, icu_adult(knowledge, 1.05))
    _check_card_invariants(advice)
    low = by_direction(advice)["low"]
    assert set(low.rules) == {"admission-u-shape", "icu-admission-low", "severe-hypomagnesemia"}
    assert (low.lead, low.indicator) == ("admission-u-shape", "warning")
    assert low.rules[-1] == "severe-hypomagnesemia"


def test_specific_before_anyone_overrides_table_order(knowledge: Knowledge) -> None:
    """Monitoring card: monitoring-gap (a context) leads reference-range (anyone, earlier in the table).

    Vancomycin with piperacillin/tazobactam outside the ICU: a monitoring context (no serum Mg
    in 72 h) and no rule of the low direction, so reference-range fires on the Mg of 80 h ago.
    """
    snap = snapshot(
        encounter=None,
        mg=[mg(knowledge, 1.65, at=NOW - 80 * H)],
        medications=[med(VANCOMYCIN), med(PIP_TAZO)],
    )
    advice = run(knowledge, snap)
    _check_card_invariants(advice)
    cards = by_direction(advice)
    assert set(cards) == {"monitoring"}
    assert cards["monitoring"].rules == ("monitoring-gap", "reference-range")
    assert (cards["monitoring"].lead, cards["monitoring"].indicator) == ("monitoring-gap", "info")


def test_lead_by_table_order(knowledge: Knowledge) -> None:
    """Equal indicators and specific populations: the earlier rule in the table leads."""
    snap = snapshot(encounter="inpatient", admitted=NOW - D, mg=[mg(knowledge, 1.2, at=NOW - D + H)],
                    conditions=[condition(TBI), condition(PANCREATITIS)])  # fmt: skip
    advice = run(knowledge, snap)
    _check_card_invariants(advice)
    low = by_direction(advice)["low"]
    assert low.rules == ("admission-u-shape", "pancreatitis-low", "tbi-low")
    assert low.lead == "admission-u-shape"
    snap = snapshot(encounter="inpatient", age=15, admitted=NOW - D, mg=[mg(knowledge, 1.2, at=NOW - D + H)],
                    conditions=[condition(TBI), condition(PANCREATITIS)])  # fmt: skip
    low = by_direction(run(knowledge, snap))["low"]
    assert low.rules == ("pancreatitis-low", "tbi-low")  # a child: no admission-u-shape


def test_high_card_indicator_is_the_highest(knowledge: Knowledge) -> None:
    """Emergency admission Mg 2.8 with cirrhosis and COVID: info and warning rules on one card."""
    snap = snapshot(encounter="emergency", admitted=NOW - D, mg=[mg(knowledge, 2.8, at=NOW - D + H)],
                    conditions=[condition(CIRRHOSIS), condition(COVID)])  # fmt: skip
    advice = run(knowledge, snap)
    _check_card_invariants(advice)
    high = by_direction(advice)["high"]
    assert high.rules == ("admission-u-shape", "cirrhosis-high", "emergency-admission-high")
    assert (high.lead, high.indicator) == ("admission-u-shape", "warning")
    assert high.magnesium is not None and high.magnesium.value == 2.8


def test_toxic_leads_the_high_card(knowledge: Knowledge) -> None:
    snap = snapshot(encounter=None, mg=[mg(knowledge, 5.0)], conditions=[condition(CIRRHOSIS)])
    advice = run(knowledge, snap)
    _check_card_invariants(advice)
    cards = by_direction(advice)
    assert cards["high"].rules == ("hypermagnesemia-toxic", "cirrhosis-high")
    assert (cards["high"].lead, cards["high"].indicator) == ("hypermagnesemia-toxic", "critical")
    assert set(cards) == {"high"}  # an association rule fired: no reference-range


def test_info_only_card(knowledge: Knowledge) -> None:
    snap = snapshot(
        encounter=None,
        mg=[mg(knowledge, 1.5)],
        procedures=[planned(LAP_COLECTOMY)],
        **safe_labs(knowledge),
    )
    advice = run(knowledge, snap)
    _check_card_invariants(advice)
    cards = by_direction(advice)
    assert (cards["prevention"].lead, cards["prevention"].indicator) == (
        "laparoscopic-intraop-mg",
        "info",
    )


# --- one magnesium medication suggestion per response --------------------------------------------


def test_one_medication_suggestion_per_response(knowledge: Knowledge) -> None:
    """ICU repletion (low, warning), cisplatin (prevention, warning), sepsis and vanco/pip-tazo (info)."""
    snap = icu_adult(knowledge, 1.5, conditions=[condition(SEPSIS)],
                     medications=[med(CISPLATIN, draft=True), med(VANCOMYCIN), med(PIP_TAZO)])  # fmt: skip
    advice = run(knowledge, snap)
    _check_card_invariants(advice)
    cards = by_direction(advice)
    assert {
        "icu-hypomagnesemia-repletion",
        "cisplatin-mg-preload",
        "sepsis-mg",
        "vanco-pip-tazo-mg",
    } <= fired(advice)
    suggested = [
        a.medication_suggestion.rule_id for a in advice if a.medication_suggestion is not None
    ]
    assert suggested == ["icu-hypomagnesemia-repletion"]
    assert cards["prevention"].lead == "cisplatin-mg-preload"
    assert cards["prevention"].medication_suggestion is None and cards["prevention"].withheld == ()


def test_the_card_suggests_its_highest_ranked_medication(knowledge: Knowledge) -> None:
    snap = icu_adult(
        knowledge, 2.0, conditions=[condition(SEPSIS)], medications=[med(CISPLATIN, draft=True)]
    )
    advice = run(knowledge, snap)
    _check_card_invariants(advice)
    card = by_direction(advice)["prevention"]
    assert card.rules == ("cisplatin-mg-preload", "sepsis-mg")
    assert (
        card.medication_suggestion is not None
        and card.medication_suggestion.rule_id == "cisplatin-mg-preload"
    )


def test_a_lead_without_a_dose_passes_the_suggestion_on(knowledge: Knowledge) -> None:
    """laparoscopic-intraop-mg leads but 160 kg is outside its dosing range: sepsis-mg's dose is suggested."""
    labs = {"creatinine": [creatinine(knowledge, 0.9)], "egfr": [egfr(knowledge, 75)]}
    snap = icu_adult(
        knowledge,
        2.0,
        **labs,
        weight=[weight(knowledge, 160)],
        conditions=[condition(SEPSIS)],
        procedures=[planned(LAP_COLECTOMY)],
    )
    advice = run(knowledge, snap)
    card = by_direction(advice)["prevention"]
    assert card.lead == "laparoscopic-intraop-mg"
    assert (
        card.medication_suggestion is not None and card.medication_suggestion.rule_id == "sepsis-mg"
    )
    snap = icu_adult(knowledge, 2.0, conditions=[condition(SEPSIS)], procedures=[planned(LAP_COLECTOMY)],
                     weight=[weight(knowledge, 70)])  # fmt: skip
    card = by_direction(run(knowledge, snap))["prevention"]
    assert (
        card.medication_suggestion is not None
        and card.medication_suggestion.rule_id == "laparoscopic-intraop-mg"
    )


# --- reference-range only when no rule of the low or high direction fires (evidence.md §4) ------


@pytest.mark.parametrize(
    ("label", "build", "reference_range"),
    [
        ("Mg 1.6, no context", lambda k: snapshot(encounter=None, mg=[mg(k, 1.6)]), True),
        ("Mg 2.6, no context", lambda k: snapshot(encounter=None, mg=[mg(k, 2.6)]), True),
        ("Mg 2.0, no context", lambda k: snapshot(encounter=None, mg=[mg(k, 2.0)]), False),
        ("admission Mg 1.4: admission-u-shape fires",
         lambda k: snapshot(encounter="inpatient", admitted=NOW - D, mg=[mg(k, 1.4, at=NOW - D + H)]), False),
        ("Mg 1.0: severe-hypomagnesemia (low direction) fires",
         lambda k: snapshot(encounter=None, mg=[mg(k, 1.0)]), False),
        ("Mg 1.6 on omeprazole: drug-induced (low direction) fires",
         lambda k: snapshot(encounter=None, mg=[mg(k, 1.6)], medications=[med(("http://www.nlm.nih.gov/research/umls/rxnorm", "7646", "omeprazole"))]), False),
        ("Mg 5.0: hypermagnesemia-toxic (high direction) fires",
         lambda k: snapshot(encounter=None, mg=[mg(k, 5.0)]), False),
        ("Mg 1.6 with cirrhosis (cirrhosis-high does not fire)",
         lambda k: snapshot(encounter=None, mg=[mg(k, 1.6)], conditions=[condition(CIRRHOSIS)]), True),
        ("Mg 2.6 with cirrhosis (cirrhosis-high fires)",
         lambda k: snapshot(encounter=None, mg=[mg(k, 2.6)], conditions=[condition(CIRRHOSIS)]), False),
        ("Mg 1.6 with pre-eclampsia", lambda k: snapshot(encounter=None, mg=[mg(k, 1.6)], conditions=[condition(PRE_ECLAMPSIA)]), False),
        ("only a data-quality result", lambda k: snapshot(encounter=None, excluded=[excluded_mg(m.IMPLAUSIBLE, "25", "mg/dL")]), False),
    ],
)  # fmt: skip
def test_reference_range_is_a_fallback(
    knowledge: Knowledge, label: str, build: Any, reference_range: bool
) -> None:
    advice = run(knowledge, build(knowledge))
    _check_card_invariants(advice)
    assert ("reference-range" in fired(advice)) is reference_range
    if reference_range:
        card = by_direction(advice)["monitoring"]
        assert "reference-range" in card.rules


def test_reference_range_exact_cards(knowledge: Knowledge) -> None:
    """Mg 1.0: the severe card alone; no "no more specific rule applies" card beside it."""
    advice = run(knowledge, snapshot(encounter=None, mg=[mg(knowledge, 1.0)]))
    cards = by_direction(advice)
    assert set(cards) == {"low"}
    assert (cards["low"].lead, cards["low"].indicator) == ("severe-hypomagnesemia", "warning")
    advice = run(knowledge, snapshot(encounter=None, mg=[mg(knowledge, 1.6)]))
    assert {a.direction: a.rules for a in advice} == {"monitoring": ("reference-range",)}


def test_data_quality_findings_list_the_rule_once(knowledge: Knowledge) -> None:
    excluded = [excluded_mg(m.UNIT_UNCERTAIN, "1.2"), excluded_mg(m.NON_NUMERIC, "hemolyzed")]
    (card,) = run(knowledge, snapshot(encounter=None, excluded=excluded))
    assert card.rules == ("mg-data-quality",) and len(card.findings) == 2
