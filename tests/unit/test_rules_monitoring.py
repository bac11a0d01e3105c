"""Acceptance tests of the monitoring, data and AKI rules (evidence.md §4, third table)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.rules.model import Knowledge
from tests.unit.builders import (
    CABG,
    CIRRHOSIS,
    CISPLATIN,
    MIN,
    NOW,
    PCI,
    PIP_TAZO,
    VANCOMYCIN,
    D,
    H,
    boundary_cases,
    by_direction,
    condition,
    convert_mg,
    creatinine,
    excluded_mg,
    finding,
    findings,
    fired,
    ionized,
    med,
    mg,
    observed,
    performed,
    planned,
    run,
    snapshot,
)

# --- severe-hypomagnesemia ------------------------------------------------------------------

SEVERE = [
    pytest.param(op, thr, pos, unit, off, holds, id=f"{op}{thr:g}-{pos}-in-{unit}")
    for op, thr in (("le", 1.1), ("lt", 1.0))
    for pos, unit, off, holds in boundary_cases(op, thr, "mg/dL")
]


@pytest.mark.parametrize(("op", "threshold", "pos", "unit", "offset", "holds"), SEVERE)
def test_severe_hypomagnesemia_boundaries(
    knowledge: Knowledge, op: str, threshold: float, pos: str, unit: str, offset: float, holds: bool
) -> None:
    """Fires at latest Mg ≤ 1.1 mg/dL; critical when < 1.0, else warning."""
    value = convert_mg(knowledge, threshold + offset, "mg/dL", unit)
    advice = run(knowledge, snapshot(encounter=None, mg=[mg(knowledge, value, unit)]))
    if op == "le":
        assert ("severe-hypomagnesemia" in fired(advice)) is holds
        if holds:
            assert finding(advice, "severe-hypomagnesemia").direction == "low"
    else:  # every value around 1.0 is ≤ 1.1: the rule fires; the indicator says < 1.0 or not
        f = finding(advice, "severe-hypomagnesemia")
        assert f.indicator == ("critical" if holds else "warning")


@pytest.mark.parametrize(
    ("label", "over", "at", "fires"),
    [
        ("child, no encounter (anyone)", {"age": 4}, NOW - H, True),
        ("no birth date", {"age": None}, NOW - H, True),
        ("latest Mg 7 d ago", {}, NOW - 7 * D, True),
        ("latest Mg 7 d 1 min ago", {}, NOW - 7 * D - MIN, False),
    ],
)
def test_severe_hypomagnesemia_anyone_latest_mg(
    knowledge: Knowledge, label: str, over: dict[str, Any], at: datetime, fires: bool
) -> None:
    advice = run(knowledge, snapshot(encounter=None, mg=[mg(knowledge, 0.9, at=at)], **over))
    assert ("severe-hypomagnesemia" in fired(advice)) is fires


@pytest.mark.parametrize(
    ("comparator", "value", "indicator"),
    [
        ("<", 1.0, "critical"),
        ("<", 1.1, "warning"),
        ("<=", 1.1, "warning"),
        ("<", 1.2, None),
        ("<=", 1.0, "warning"),
    ],
)
def test_severe_hypomagnesemia_comparators(
    knowledge: Knowledge, comparator: str, value: float, indicator: str | None
) -> None:
    advice = run(
        knowledge, snapshot(encounter=None, mg=[mg(knowledge, value, comparator=comparator)])
    )
    if indicator is None:
        assert "severe-hypomagnesemia" not in fired(advice)
    else:
        assert finding(advice, "severe-hypomagnesemia").indicator == indicator


# --- monitoring-gap --------------------------------------------------------------------------

ICU = NOW - 3 * D
SURGERY_END = NOW - 10 * H

GAP: list[tuple[str, Callable[[Knowledge], dict[str, Any]], str | None]] = [
    # ICU stay: 24 h
    ("ICU, no Mg at all", lambda k: {"icu": ICU}, "icu"),
    ("ICU, Mg 24 h ago", lambda k: {"icu": ICU, "mg": [mg(k, 2.0, at=NOW - 24 * H)]}, None),
    ("ICU, Mg 24 h 1 min ago", lambda k: {"icu": ICU, "mg": [mg(k, 2.0, at=NOW - 24 * H - MIN)]}, "icu"),
    ("ICU, Mg today dated without time", lambda k: {"icu": ICU, "mg": [mg(k, 2.0, at=NOW.replace(hour=0), date_only=True)]}, "icu"),
    ("ICU, only an ionized Mg", lambda k: {"icu": ICU, "ionized": [ionized(k, 0.5, at=NOW - H)]}, "icu"),
    # cardiac surgery ended within 24 h: since surgery end
    ("CABG ended 10 h ago, no Mg", lambda k: {"procedures": [performed(CABG, SURGERY_END - 4 * H, SURGERY_END)]}, "cardiac-surgery-ended"),
    ("CABG ended 10 h ago, Mg at surgery end",
     lambda k: {"procedures": [performed(CABG, SURGERY_END - 4 * H, SURGERY_END)], "mg": [mg(k, 2.0, at=SURGERY_END)]}, None),
    ("CABG ended 10 h ago, Mg 1 min before surgery end",
     lambda k: {"procedures": [performed(CABG, SURGERY_END - 4 * H, SURGERY_END)], "mg": [mg(k, 2.0, at=SURGERY_END - MIN)]},
     "cardiac-surgery-ended"),
    ("CABG ended 24 h ago, no Mg", lambda k: {"procedures": [performed(CABG, NOW - 28 * H, NOW - 24 * H)]}, "cardiac-surgery-ended"),
    ("CABG ended 24 h 1 min ago, no Mg", lambda k: {"procedures": [performed(CABG, NOW - 28 * H, NOW - 24 * H - MIN)]}, None),
    ("ICU monitored, but no Mg since CABG ended",
     lambda k: {"icu": ICU, "procedures": [performed(CABG, SURGERY_END - 4 * H, SURGERY_END)],
                "mg": [mg(k, 2.0, at=SURGERY_END - 5 * H)]}, "cardiac-surgery-ended"),
    # planned high-risk: 72 h
    ("cisplatin draft order, no Mg", lambda k: {"medications": [med(CISPLATIN, draft=True)]}, "planned-high-risk"),
    ("cisplatin active, Mg 72 h ago", lambda k: {"medications": [med(CISPLATIN)], "mg": [mg(k, 2.0, at=NOW - 72 * H)]}, None),
    ("cisplatin active, Mg 72 h 1 min ago",
     lambda k: {"medications": [med(CISPLATIN)], "mg": [mg(k, 2.0, at=NOW - 72 * H - MIN)]}, "planned-high-risk"),
    ("PCI planned, no Mg", lambda k: {"procedures": [planned(PCI)]}, "planned-high-risk"),
    ("PCI performed 2 h ago, no Mg (not planned)", lambda k: {"procedures": [performed(PCI, NOW - 3 * H, NOW - 2 * H)]}, None),
    ("cardiac surgery planned, no Mg", lambda k: {"procedures": [planned(CABG)]}, "planned-high-risk"),
    ("vancomycin with pip/tazo, no Mg", lambda k: {"medications": [med(VANCOMYCIN), med(PIP_TAZO, draft=True)]}, "planned-high-risk"),
    ("vancomycin alone, no Mg", lambda k: {"medications": [med(VANCOMYCIN)]}, None),
    # no monitoring context
    ("ward patient without a context, no Mg", lambda k: {}, None),
]  # fmt: skip


@pytest.mark.parametrize(("label", "over", "context"), GAP, ids=[g[0] for g in GAP])
def test_monitoring_gap(
    knowledge: Knowledge,
    label: str,
    over: Callable[[Knowledge], dict[str, Any]],
    context: str | None,
) -> None:
    kw: dict[str, Any] = {"encounter": "inpatient", "admitted": NOW - 4 * D, **over(knowledge)}
    advice = run(knowledge, snapshot(**kw))
    if context is None:
        assert "monitoring-gap" not in fired(advice)
        return
    f = finding(advice, "monitoring-gap")
    assert (f.direction, f.indicator) == ("monitoring", "info")
    assert f.context.monitoring_context == context
    assert f.suggestion is not None and f.suggestion["kind"] == "lab-order"
    assert f.suggestion["code"] == {"system": "http://loinc.org", "code": "19123-9",
                                    "display": "Magnesium [Mass/volume] in Serum or Plasma"}  # fmt: skip
    card = by_direction(advice)["monitoring"]
    assert card.lab_suggestion is not None and card.lab_suggestion.rule_id == "monitoring-gap"


# --- mg-trend --------------------------------------------------------------------------------

TREND = [
    # (values oldest first, mg/dL, at -60 h, -30 h, -1 h), expected direction
    ([2.1, 1.9, 1.69], "low"),  # drop 0.41
    ([2.09, 1.9, 1.69], "low"),  # drop 0.40 exactly
    ([2.08, 1.9, 1.69], None),  # drop 0.39
    ([2.2, 2.0, 1.7], None),  # latest 1.7 is not < 1.7
    ([1.8, 2.3, 1.6], "low"),  # highest earlier is the middle one
    ([1.9, 2.1, 2.31], "high"),  # rise 0.41
    ([1.91, 2.1, 2.31], "high"),  # rise 0.40 exactly
    ([1.92, 2.1, 2.31], None),  # rise 0.39
    ([1.8, 2.0, 2.3], None),  # latest 2.3 is not > 2.3
    ([2.5, 1.9, 2.4], "high"),  # lowest earlier is the middle one
    ([2.0, 2.0, 2.0], None),
]


@pytest.mark.parametrize("unit", ["mg/dL", "mmol/L", "mEq/L"])
@pytest.mark.parametrize(("values", "direction"), TREND)
def test_mg_trend(
    knowledge: Knowledge, values: list[float], direction: str | None, unit: str
) -> None:
    times = (NOW - 60 * H, NOW - 30 * H, NOW - H)
    results = [
        mg(knowledge, convert_mg(knowledge, v, "mg/dL", unit), unit, t)
        for v, t in zip(values, times, strict=True)
    ]
    advice = run(knowledge, snapshot(encounter=None, mg=results))
    if direction is None:
        assert "mg-trend" not in fired(advice)
        return
    f = finding(advice, "mg-trend")
    assert (f.direction, f.indicator) == (direction, "info")
    assert f.context.trend == ("falling" if direction == "low" else "rising")
    assert [v.time for v in f.values] == list(times)
    assert f.suggestion is not None and f.suggestion["kind"] == "lab-order"


@pytest.mark.parametrize(
    ("label", "first_at", "fires"),
    [
        ("three values in 72 h", NOW - 72 * H, True),
        ("oldest 72 h 1 min ago: two values", NOW - 72 * H - MIN, False),
    ],
)
def test_mg_trend_window(knowledge: Knowledge, label: str, first_at: datetime, fires: bool) -> None:
    results = [
        mg(knowledge, 2.2, at=first_at),
        mg(knowledge, 2.0, at=NOW - 30 * H),
        mg(knowledge, 1.6, at=NOW - H),
    ]
    assert ("mg-trend" in fired(run(knowledge, snapshot(encounter=None, mg=results)))) is fires


def test_mg_trend_needs_three_numeric_values(knowledge: Knowledge) -> None:
    two = [mg(knowledge, 2.2, at=NOW - 30 * H), mg(knowledge, 1.6, at=NOW - H)]
    assert "mg-trend" not in fired(run(knowledge, snapshot(encounter=None, mg=two)))
    censored = [mg(knowledge, 2.4, at=NOW - 50 * H, comparator=">"), *two]
    assert "mg-trend" not in fired(run(knowledge, snapshot(encounter=None, mg=censored)))
    older_highest = [mg(knowledge, 3.0, at=NOW - 80 * H), mg(knowledge, 1.9, at=NOW - 50 * H), *two]
    f = finding(run(knowledge, snapshot(encounter=None, mg=older_highest)), "mg-trend")
    assert len(f.values) == 3  # only the 72-hour window


# --- mg-data-quality -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "obs", "reason"),
    [
        ("no unit sent", {"value": 1.2, "unit": None}, m.UNIT_UNCERTAIN),
        ("implausible 25 mg/dL", {"value": 25.0}, m.IMPLAUSIBLE),
        ("implausible 0.03 mmol/L", {"value": 0.03, "unit": "mmol/L"}, m.IMPLAUSIBLE),
        ("non-numeric 'hemolyzed'", {"value_string": "hemolyzed"}, m.NON_NUMERIC),
    ],
)
def test_data_quality_results_produce_only_the_data_quality_card(
    knowledge: Knowledge, label: str, obs: dict[str, Any], reason: str
) -> None:
    """An adult with cirrhosis: the excluded value would otherwise feed several rules; none fires."""
    ex = observed(knowledge, **obs)
    assert isinstance(ex, m.Excluded) and ex.reason_code == reason
    snap = snapshot(encounter=None, conditions=[condition(CIRRHOSIS)], excluded=[ex])
    advice = run(knowledge, snap)
    assert fired(advice) == {"mg-data-quality"}
    f = finding(advice, "mg-data-quality")
    assert (f.direction, f.indicator) == ("monitoring", "info")
    assert f.context.excluded is ex


def test_data_quality_one_finding_per_result_on_one_card(knowledge: Knowledge) -> None:
    excluded = [
        excluded_mg(m.UNIT_UNCERTAIN, "1.2"),
        excluded_mg(m.IMPLAUSIBLE, "25", "mg/dL"),
        excluded_mg(m.NON_NUMERIC, "hemolyzed"),
        excluded_mg(m.NOT_FINAL, "1.0", "mg/dL"),  # not a data-quality reason
        excluded_mg(m.NON_SERUM, "3.0", "mg/dL"),  # not a data-quality reason
        excluded_mg(m.IMPLAUSIBLE, "30", "mg/dL", at=NOW + H),  # after now
    ]
    advice = run(knowledge, snapshot(encounter=None, excluded=excluded))
    assert len(advice) == 1
    card = advice[0]
    assert (card.direction, card.lead, card.rules) == (
        "monitoring",
        "mg-data-quality",
        ("mg-data-quality",),
    )
    assert [f.context.excluded for f in card.findings] == excluded[:3]


def test_usable_result_next_to_an_excluded_one(knowledge: Knowledge) -> None:
    """The usable result feeds the rules; the excluded one only the data-quality card."""
    ex = observed(knowledge, value=9.0, unit=None)
    ok = observed(knowledge, value=1.5, unit="mg/dL", at=NOW - 2 * H)
    assert isinstance(ok, m.LabResult) and isinstance(ex, m.Excluded)
    advice = run(knowledge, snapshot(encounter=None, mg=[ok], excluded=[ex]))
    assert fired(advice) == {"mg-data-quality", "reference-range"}
    assert "hypermagnesemia-toxic" not in fired(advice)


# --- aki-kdigo -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("points", "stage", "indicator"),
    [
        ([(72, 1.0), (1, 1.29)], None, None),
        ([(24, 1.0), (1, 1.3)], 1, "warning"),  # 0.3 rise in 48 h
        ([(72, 1.0), (1, 1.5)], 1, "warning"),  # ratio 1.5
        ([(72, 1.0), (1, 2.0)], 2, "warning"),
        ([(72, 1.0), (1, 3.0)], 3, "critical"),
        ([(72, 88.4), (1, 265.2)], 3, "critical"),  # µmol/L: 1.0 -> 3.0 mg/dL
    ],
)
def test_aki_kdigo(
    knowledge: Knowledge, points: list[tuple[int, float]], stage: int | None, indicator: str | None
) -> None:
    unit = "umol/L" if points[0][1] > 50 else "mg/dL"
    crs = [creatinine(knowledge, v, NOW - h * H, unit) for h, v in points]
    advice = run(knowledge, snapshot(encounter=None, creatinine=crs))
    if stage is None:
        assert "aki-kdigo" not in fired(advice)
        return
    f = finding(advice, "aki-kdigo")
    assert (f.direction, f.indicator) == ("aki", indicator)
    assert f.context.aki.stage == stage
    card = by_direction(advice)["aki"]
    assert card.aki_stage == stage and card.lead == "aki-kdigo"


def test_coded_aki_without_creatinine_does_not_fire_kdigo(knowledge: Knowledge) -> None:
    from tests.unit.builders import AKI

    advice = run(knowledge, snapshot(encounter=None, conditions=[condition(AKI, onset=NOW - D)]))
    assert findings(advice, "aki-kdigo") == []
