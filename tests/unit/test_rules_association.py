"""Acceptance tests of the association rules (evidence.md §4, first table) and their measures (§2).

For each rule: every threshold just below, at and just above in mg/dL, mmol/L and
mEq/L (the boundary converted exactly, compared unrounded); inside and outside
every window; each population in and out; comparator and date-only results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.rules.model import Knowledge
from tests.unit.builders import (
    AKI,
    ANGIOGRAPHY_CPT,
    APPENDECTOMY,
    CABG,
    CABG_CPT,
    CIRRHOSIS,
    CIRRHOSIS_SCT,
    COVID,
    HYPERTENSION,
    IN_SITU,
    MALIGNANCY,
    MIN,
    NOW,
    PANCREATITIS,
    PCI,
    TBI,
    D,
    H,
    albumin,
    born,
    boundary_cases,
    condition,
    convert_mg,
    creatinine,
    finding,
    fired,
    ionized,
    mg,
    performed,
    planned,
    run,
    snapshot,
)

ADMIT = NOW - 2 * D  # admission (current encounter start)
ICU = NOW - 30 * H  # ICU start
POSTOP_END = NOW - 3 * D  # cardiac surgery end (post-operative rules)
PCI_START = NOW - 1 * D  # PCI start
ONSET = NOW - 2 * D  # AKI onset (coded N17.9)
CSA_END = NOW - 4 * D  # cardiac surgery end (AKI after cardiac surgery)


@dataclass(frozen=True)
class Scenario:
    """A context in which one rule's population holds, and where its measure's Mg goes."""

    at: datetime
    context: Callable[[Knowledge], dict[str, Any]]
    series: str = "mg"
    albumin_at_sample: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, k: Knowledge, value: float, unit: str = "mg/dL", *, at: datetime | None = None,
              comparator: str | None = None, date_only: bool = False,
              **over: Any) -> m.ClinicalSnapshot:  # fmt: skip
        when = at if at is not None else self.at
        kw = {**self.context(k), **over}
        if self.series == "mg":
            result = mg(k, value, unit, when, comparator=comparator, date_only=date_only)
            kw["mg"] = [*kw.get("mg", []), result]
        else:
            kw["ionized"] = [*kw.get("ionized", []), ionized(k, value, unit, when)]
        if self.albumin_at_sample and "albumin" not in over:
            kw["albumin"] = [albumin(k, 4.0, when)]
        return snapshot(**kw)


def _cabg(end: datetime) -> m.Procedure:
    return performed(CABG, end - 4 * H, end)


SCENARIOS: dict[str, Scenario] = {
    "admission-u-shape": Scenario(ADMIT + H, lambda k: {"encounter": "inpatient", "admitted": ADMIT}),
    "contrast-u-shape": Scenario(
        PCI_START - D, lambda k: {"encounter": None, "procedures": [performed(PCI, PCI_START, PCI_START + H)]}
    ),
    "icu-admission-low": Scenario(ICU + H, lambda k: {"encounter": "inpatient", "admitted": ICU, "icu": ICU}),
    "icu-admission-high": Scenario(ICU + H, lambda k: {"encounter": "inpatient", "admitted": ICU, "icu": ICU}),
    "cardiac-surgery-postop-high": Scenario(
        POSTOP_END + 2 * H, lambda k: {"encounter": None, "procedures": [_cabg(POSTOP_END)]}
    ),
    "emergency-admission-high": Scenario(ADMIT + H, lambda k: {"encounter": "emergency", "admitted": ADMIT}),
    "cirrhosis-high": Scenario(NOW - H, lambda k: {"encounter": None, "conditions": [condition(CIRRHOSIS)]}),
    "covid-stay-median-high": Scenario(
        NOW - H, lambda k: {"encounter": "inpatient", "admitted": ADMIT, "conditions": [condition(COVID)]}
    ),
    "pediatric-icu-corrected-high": Scenario(
        ICU + H, lambda k: {"encounter": "inpatient", "admitted": ICU, "icu": ICU, "age": 6},
        albumin_at_sample=True,
    ),
    "cardiac-surgery-preop-ionized-low": Scenario(
        NOW - D, lambda k: {"encounter": None, "procedures": [planned(CABG)]}, series="ionized"
    ),
    "cardiac-surgery-preop-low": Scenario(
        NOW - D, lambda k: {"encounter": None, "age": 75, "procedures": [planned(CABG)]}
    ),
    "pancreatitis-low": Scenario(
        ADMIT + H, lambda k: {"encounter": "inpatient", "admitted": ADMIT, "conditions": [condition(PANCREATITIS)]}
    ),
    "tbi-low": Scenario(
        ADMIT + H, lambda k: {"encounter": "emergency", "admitted": ADMIT, "conditions": [condition(TBI)]}
    ),
    "malignancy-low": Scenario(
        ADMIT + H, lambda k: {"encounter": "inpatient", "admitted": ADMIT, "conditions": [condition(MALIGNANCY)]}
    ),
    "aki-recovery-low": Scenario(
        ONSET + 2 * H, lambda k: {"encounter": None, "conditions": [condition(AKI, onset=ONSET)]}
    ),
    "csa-aki-persistent-low": Scenario(
        CSA_END + 6 * H,
        lambda k: {"encounter": None, "procedures": [_cabg(CSA_END)],
                   "conditions": [condition(AKI, onset=CSA_END + D)]},
    ),
    "reference-range": Scenario(NOW - H, lambda k: {"encounter": None}),
}  # fmt: skip

# evidence.md §4: (operator, threshold, unit, finding direction) per rule, and the indicator.
THRESHOLDS: dict[str, tuple[str, list[tuple[str, float, str, str]]]] = {
    "admission-u-shape": ("warning", [("lt", 1.5, "mg/dL", "low"), ("gt", 2.3, "mg/dL", "high")]),
    "contrast-u-shape": ("info", [("lt", 0.91, "mmol/L", "low"), ("gt", 1.07, "mmol/L", "high")]),
    "icu-admission-low": ("warning", [("lt", 1.6, "mg/dL", "low")]),
    "icu-admission-high": ("info", [("gt", 2.4, "mg/dL", "high")]),
    "cardiac-surgery-postop-high": ("warning", [("ge", 2.3, "mg/dL", "high")]),
    "emergency-admission-high": ("info", [("gt", 2.5, "mg/dL", "high")]),
    "cirrhosis-high": ("warning", [("ge", 2.4, "mg/dL", "high")]),
    "covid-stay-median-high": ("warning", [("gt", 2.4, "mg/dL", "high")]),
    "pediatric-icu-corrected-high": ("warning", [("gt", 2.3, "mg/dL", "high")]),
    "cardiac-surgery-preop-ionized-low": ("warning", [("lt", 1.09, "mg/dL", "low")]),
    "cardiac-surgery-preop-low": ("info", [("lt", 1.7, "mg/dL", "low")]),
    "pancreatitis-low": ("warning", [("lt", 0.755, "mmol/L", "low")]),
    "tbi-low": ("warning", [("lt", 1.5, "mg/dL", "low")]),
    "malignancy-low": ("warning", [("le", 1.6, "mg/dL", "low")]),
    "aki-recovery-low": ("warning", [("lt", 1.8, "mg/dL", "low")]),
    "csa-aki-persistent-low": ("warning", [("lt", 1.9, "mg/dL", "low")]),
    # reference-range: the card direction is "monitoring" (evidence.md §6)
    "reference-range": ("info", [("lt", 1.7, "mg/dL", "monitoring"), ("gt", 2.5, "mg/dL", "monitoring")]),
}  # fmt: skip

# A value (mg/dL) with which each rule fires in its scenario.
FIRES_AT = {
    "admission-u-shape": 1.2,
    "contrast-u-shape": 1.8,
    "icu-admission-low": 1.2,
    "icu-admission-high": 2.8,
    "cardiac-surgery-postop-high": 2.8,
    "emergency-admission-high": 2.8,
    "cirrhosis-high": 2.6,
    "covid-stay-median-high": 2.8,
    "pediatric-icu-corrected-high": 2.8,
    "cardiac-surgery-preop-ionized-low": 0.9,
    "cardiac-surgery-preop-low": 1.5,
    "pancreatitis-low": 1.5,
    "tbi-low": 1.2,
    "malignancy-low": 1.4,
    "aki-recovery-low": 1.5,
    "csa-aki-persistent-low": 1.5,
    "reference-range": 1.5,
}


def test_every_association_rule_is_covered(knowledge: Knowledge) -> None:
    association = {r.id for r in knowledge.rules if r.category == "association"}
    assert association == set(SCENARIOS) == set(THRESHOLDS) == set(FIRES_AT)
    assert len(association) == 17


BOUNDARY = [
    pytest.param(rule, op, thr, unit, direction, pos, in_unit, off, fires,
                 id=f"{rule}-{op}{thr:g}{unit}-{pos}-in-{in_unit}")
    for rule, (_, arms) in THRESHOLDS.items()
    for op, thr, unit, direction in arms
    for pos, in_unit, off, fires in boundary_cases(op, thr, unit)
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "op", "threshold", "unit", "direction", "pos", "in_unit", "offset", "fires"), BOUNDARY
)
def test_threshold_boundaries(
    knowledge: Knowledge, rule: str, op: str, threshold: float, unit: str, direction: str,
    pos: str, in_unit: str, offset: float, fires: bool,
) -> None:  # fmt: skip
    value = convert_mg(knowledge, threshold + offset, unit, in_unit)
    advice = run(knowledge, SCENARIOS[rule].build(knowledge, value, in_unit))
    if not fires:
        assert rule not in fired(advice)
        return
    f = finding(advice, rule)
    assert f.direction == direction
    assert f.indicator == THRESHOLDS[rule][0]
    assert f.threshold is not None and f.threshold.unit == unit
    assert getattr(f.threshold, op) == threshold
    if "median" not in f.values[0].flags:  # a median is stated in the canonical unit
        assert f.values[0].original_unit == in_unit
        assert f.values[0].original_value == value


def test_reference_range_direction_of_the_arm(knowledge: Knowledge) -> None:
    """reference-range puts both arms on the monitoring card; the bound says which arm fired."""
    low = finding(
        run(knowledge, SCENARIOS["reference-range"].build(knowledge, 1.6)), "reference-range"
    )
    high = finding(
        run(knowledge, SCENARIOS["reference-range"].build(knowledge, 2.6)), "reference-range"
    )
    assert low.threshold is not None and low.threshold.lt == 1.7
    assert high.threshold is not None and high.threshold.gt == 2.5


# --- timing windows (evidence.md §2: every window closed) ------------------------------------

WINDOWS = [
    # admission Mg: [admission - 12 h, admission + 24 h]
    ("admission-u-shape", "admission -12 h", ADMIT - 12 * H, True),
    ("admission-u-shape", "admission -12 h -1 min", ADMIT - 12 * H - MIN, False),
    ("admission-u-shape", "admission +24 h", ADMIT + 24 * H, True),
    ("admission-u-shape", "admission +24 h +1 min", ADMIT + 24 * H + MIN, False),
    ("emergency-admission-high", "admission -12 h", ADMIT - 12 * H, True),
    ("emergency-admission-high", "admission +24 h +1 min", ADMIT + 24 * H + MIN, False),
    ("pancreatitis-low", "admission +24 h", ADMIT + 24 * H, True),
    ("pancreatitis-low", "admission -12 h -1 min", ADMIT - 12 * H - MIN, False),
    ("tbi-low", "admission -12 h", ADMIT - 12 * H, True),
    ("tbi-low", "admission +24 h +1 min", ADMIT + 24 * H + MIN, False),
    ("malignancy-low", "admission +24 h", ADMIT + 24 * H, True),
    ("malignancy-low", "admission -12 h -1 min", ADMIT - 12 * H - MIN, False),
    # ICU-admission Mg: [ICU start - 6 h, ICU start + 24 h]
    ("icu-admission-low", "ICU start -6 h", ICU - 6 * H, True),
    ("icu-admission-low", "ICU start -6 h -1 min", ICU - 6 * H - MIN, False),
    ("icu-admission-low", "ICU start +24 h", ICU + 24 * H, True),
    ("icu-admission-low", "ICU start +24 h +1 min", ICU + 24 * H + MIN, False),
    ("icu-admission-high", "ICU start -6 h", ICU - 6 * H, True),
    ("icu-admission-high", "ICU start +24 h +1 min", ICU + 24 * H + MIN, False),
    ("pediatric-icu-corrected-high", "ICU start +24 h", ICU + 24 * H, True),
    ("pediatric-icu-corrected-high", "ICU start -6 h -1 min", ICU - 6 * H - MIN, False),
    # post-operative Mg: [surgery end, surgery end + 24 h]
    ("cardiac-surgery-postop-high", "surgery end", POSTOP_END, True),
    ("cardiac-surgery-postop-high", "surgery end -1 min", POSTOP_END - MIN, False),
    ("cardiac-surgery-postop-high", "surgery end +24 h", POSTOP_END + 24 * H, True),
    ("cardiac-surgery-postop-high", "surgery end +24 h +1 min", POSTOP_END + 24 * H + MIN, False),
    # post-operative low Mg: [surgery end, surgery end + 48 h]
    ("csa-aki-persistent-low", "surgery end", CSA_END, True),
    ("csa-aki-persistent-low", "surgery end -1 min", CSA_END - MIN, False),
    ("csa-aki-persistent-low", "surgery end +48 h", CSA_END + 48 * H, True),
    ("csa-aki-persistent-low", "surgery end +48 h +1 min", CSA_END + 48 * H + MIN, False),
    # pre-procedure Mg: [procedure start - 7 d, procedure start]
    ("contrast-u-shape", "procedure start", PCI_START, True),
    ("contrast-u-shape", "procedure start +1 min", PCI_START + MIN, False),
    ("contrast-u-shape", "procedure start -7 d", PCI_START - 7 * D, True),
    ("contrast-u-shape", "procedure start -7 d -1 min", PCI_START - 7 * D - MIN, False),
    # pre-operative Mg, planned surgery: [now - 7 d, now]
    ("cardiac-surgery-preop-low", "now -7 d (planned)", NOW - 7 * D, True),
    ("cardiac-surgery-preop-low", "now -7 d -1 min (planned)", NOW - 7 * D - MIN, False),
    ("cardiac-surgery-preop-low", "now (planned)", NOW, True),
    ("cardiac-surgery-preop-low", "after now (planned)", NOW + MIN, False),
    ("cardiac-surgery-preop-ionized-low", "now -7 d (planned)", NOW - 7 * D, True),
    ("cardiac-surgery-preop-ionized-low", "now -7 d -1 min (planned)", NOW - 7 * D - MIN, False),
    # Mg at AKI diagnosis: [onset - 24 h, onset + 24 h]
    ("aki-recovery-low", "onset -24 h", ONSET - 24 * H, True),
    ("aki-recovery-low", "onset -24 h -1 min", ONSET - 24 * H - MIN, False),
    ("aki-recovery-low", "onset +24 h", ONSET + 24 * H, True),
    ("aki-recovery-low", "onset +24 h +1 min", ONSET + 24 * H + MIN, False),
    # latest serum Mg: last 7 days (the encounter starts 2 d ago here)
    ("cirrhosis-high", "now -7 d", NOW - 7 * D, True),
    ("cirrhosis-high", "now -7 d -1 min", NOW - 7 * D - MIN, False),
    ("cirrhosis-high", "now", NOW, True),
    ("cirrhosis-high", "after now", NOW + MIN, False),
    ("reference-range", "now -7 d", NOW - 7 * D, True),
    ("reference-range", "now -7 d -1 min", NOW - 7 * D - MIN, False),
    # stay median: the current encounter's results
    ("covid-stay-median-high", "encounter start", ADMIT, True),
    ("covid-stay-median-high", "encounter start -1 min", ADMIT - MIN, False),
]


@pytest.mark.parametrize(
    ("rule", "label", "at", "fires"), WINDOWS, ids=[f"{w[0]}-{w[1]}" for w in WINDOWS]
)
def test_windows(knowledge: Knowledge, rule: str, label: str, at: datetime, fires: bool) -> None:
    advice = run(knowledge, SCENARIOS[rule].build(knowledge, FIRES_AT[rule], at=at))
    assert (rule in fired(advice)) is fires


def test_pre_operative_window_of_a_performed_surgery(knowledge: Knowledge) -> None:
    """Performed surgery: [surgery start - 7 d, surgery start] (ionized and serum rules)."""
    start = NOW - 2 * D
    proc = performed(CABG, start, start + 4 * H)
    for rule, age in (("cardiac-surgery-preop-ionized-low", 50), ("cardiac-surgery-preop-low", 75)):
        sc = SCENARIOS[rule]
        for at, fires in (
            (start, True),
            (start + MIN, False),
            (start - 7 * D, True),
            (start - 7 * D - MIN, False),
        ):
            advice = run(
                knowledge, sc.build(knowledge, FIRES_AT[rule], at=at, procedures=[proc], age=age)
            )
            assert (rule in fired(advice)) is fires, (rule, at)


def test_latest_mg_reaches_back_to_the_encounter_start(knowledge: Knowledge) -> None:
    """latest serum Mg: since the encounter start or 7 days, whichever reaches further back."""
    admitted = NOW - 10 * D
    sc = SCENARIOS["cirrhosis-high"]
    for at, fires in ((admitted, True), (admitted - MIN, False), (NOW - 9 * D, True)):
        advice = run(
            knowledge, sc.build(knowledge, 2.6, at=at, encounter="inpatient", admitted=admitted)
        )
        assert ("cirrhosis-high" in fired(advice)) is fires, at


def test_earliest_admission_mg_is_the_measure(knowledge: Knowledge) -> None:
    """admission Mg is the earliest in the window: a later low value does not count."""
    sc = SCENARIOS["admission-u-shape"]
    later_low = mg(knowledge, 1.2, at=ADMIT + 10 * H)
    assert "admission-u-shape" not in fired(
        run(knowledge, sc.build(knowledge, 2.0, at=ADMIT, mg=[later_low]))
    )
    early_low = mg(knowledge, 1.2, at=ADMIT - 2 * H)
    f = finding(
        run(knowledge, sc.build(knowledge, 2.0, at=ADMIT + 3 * H, mg=[early_low])),
        "admission-u-shape",
    )
    assert f.values[0].time == ADMIT - 2 * H and f.values[0].value == 1.2


def test_earliest_icu_admission_mg_is_the_measure(knowledge: Knowledge) -> None:
    sc = SCENARIOS["icu-admission-low"]
    later_low = mg(knowledge, 1.2, at=ICU + 5 * H)
    advice = run(knowledge, sc.build(knowledge, 2.0, at=ICU - H, mg=[later_low]))
    assert "icu-admission-low" not in fired(advice)


def test_earliest_post_operative_mg_is_the_measure(knowledge: Knowledge) -> None:
    sc = SCENARIOS["cardiac-surgery-postop-high"]
    later_high = mg(knowledge, 2.9, at=POSTOP_END + 10 * H)
    assert "cardiac-surgery-postop-high" not in fired(
        run(knowledge, sc.build(knowledge, 2.1, at=POSTOP_END + H, mg=[later_high]))
    )


def test_lowest_post_operative_mg_is_the_measure(knowledge: Knowledge) -> None:
    sc = SCENARIOS["csa-aki-persistent-low"]
    low = mg(knowledge, 1.8, at=CSA_END + 40 * H)
    f = finding(
        run(knowledge, sc.build(knowledge, 2.2, at=CSA_END + H, mg=[low])), "csa-aki-persistent-low"
    )
    assert f.values[0].value == 1.8


def test_latest_pre_operative_mg_is_the_measure(knowledge: Knowledge) -> None:
    sc = SCENARIOS["cardiac-surgery-preop-low"]
    older_low = mg(knowledge, 1.5, at=NOW - 5 * D)
    assert "cardiac-surgery-preop-low" not in fired(
        run(knowledge, sc.build(knowledge, 2.0, at=NOW - D, mg=[older_low]))
    )
    newer_low = mg(knowledge, 1.5, at=NOW - H)
    assert "cardiac-surgery-preop-low" in fired(
        run(knowledge, sc.build(knowledge, 2.0, at=NOW - D, mg=[newer_low]))
    )


def test_nearest_mg_to_aki_onset_is_the_measure(knowledge: Knowledge) -> None:
    sc = SCENARIOS["aki-recovery-low"]
    farther_low = mg(knowledge, 1.5, at=ONSET + 3 * H)
    assert "aki-recovery-low" not in fired(
        run(knowledge, sc.build(knowledge, 2.0, at=ONSET - 2 * H, mg=[farther_low]))
    )
    nearer_low = mg(knowledge, 1.5, at=ONSET + H)
    assert "aki-recovery-low" in fired(
        run(knowledge, sc.build(knowledge, 2.0, at=ONSET - 2 * H, mg=[nearer_low]))
    )


def test_aki_onset_from_creatinine(knowledge: Knowledge) -> None:
    """Without a coded N17, onset is the first creatinine meeting KDIGO."""
    sc = SCENARIOS["aki-recovery-low"]
    crs = [creatinine(knowledge, 1.0, ONSET - D), creatinine(knowledge, 1.6, ONSET)]
    advice = run(
        knowledge, sc.build(knowledge, 1.5, at=ONSET + 24 * H, conditions=[], creatinine=crs)
    )
    assert "aki-recovery-low" in fired(advice)
    advice = run(
        knowledge, sc.build(knowledge, 1.5, at=ONSET + 24 * H + MIN, conditions=[], creatinine=crs)
    )
    assert "aki-recovery-low" not in fired(advice)


@pytest.mark.parametrize(
    ("values", "fires"),
    [
        ([2.2, 2.5, 2.6], True),  # median 2.5
        ([2.2, 2.3, 2.6], False),  # median 2.3
        ([2.3, 2.5], False),  # median 2.4: not > 2.4
        ([2.3, 2.6], True),  # median 2.45
        ([2.6], True),
    ],
)
def test_stay_median(knowledge: Knowledge, values: list[float], fires: bool) -> None:
    sc = SCENARIOS["covid-stay-median-high"]
    results = [mg(knowledge, v, at=ADMIT + i * 6 * H) for i, v in enumerate(values[1:], 1)]
    advice = run(knowledge, sc.build(knowledge, values[0], at=ADMIT + MIN, mg=results))
    assert ("covid-stay-median-high" in fired(advice)) is fires
    if fires:
        f = finding(advice, "covid-stay-median-high")
        assert f.context.n == len(values)


def test_stay_median_excludes_results_before_the_encounter(knowledge: Knowledge) -> None:
    sc = SCENARIOS["covid-stay-median-high"]
    before = [mg(knowledge, 3.5, at=ADMIT - H), mg(knowledge, 3.5, at=ADMIT - 2 * H)]
    advice = run(knowledge, sc.build(knowledge, 2.2, at=ADMIT + H, mg=before))
    assert "covid-stay-median-high" not in fired(advice)


@pytest.mark.parametrize(
    ("albumin_g_dl", "measured", "fires"),
    [
        (3.0, 2.2, True),  # 2.2 + 0.1215 × 1.0 = 2.32
        (3.0, 2.17, False),  # 2.29
        (5.0, 2.4, False),  # 2.28
        (4.0, 2.31, True),
    ],
)
def test_pediatric_albumin_correction(
    knowledge: Knowledge, albumin_g_dl: float, measured: float, fires: bool
) -> None:
    sc = SCENARIOS["pediatric-icu-corrected-high"]
    snap = sc.build(knowledge, measured, albumin=[albumin(knowledge, albumin_g_dl, sc.at + 2 * H)])
    advice = run(knowledge, snap)
    assert ("pediatric-icu-corrected-high" in fired(advice)) is fires
    if fires:
        v = finding(advice, "pediatric-icu-corrected-high").values[0]
        assert v.corrected_from == pytest.approx(measured)
        assert v.value == pytest.approx(measured + 0.121525 * (4.0 - albumin_g_dl))


@pytest.mark.parametrize(
    ("label", "albumin_at", "unit", "fires"),
    [
        ("no albumin", None, "g/dL", False),
        ("albumin 24 h after", ICU + H + 24 * H, "g/dL", True),
        ("albumin 24 h before", ICU + H - 24 * H, "g/dL", True),
        ("albumin 24 h 1 min after", ICU + H + 24 * H + MIN, "g/dL", False),
        ("albumin 24 h 1 min before", ICU + H - 24 * H - MIN, "g/dL", False),
        ("albumin in g/L", ICU + 2 * H, "g/L", True),
    ],
)
def test_pediatric_needs_albumin_within_24h(
    knowledge: Knowledge, label: str, albumin_at: datetime | None, unit: str, fires: bool
) -> None:
    sc = SCENARIOS["pediatric-icu-corrected-high"]
    alb = (
        []
        if albumin_at is None
        else [albumin(knowledge, 30.0 if unit == "g/L" else 3.0, albumin_at, unit)]
    )
    advice = run(knowledge, sc.build(knowledge, 2.2, albumin=alb))
    assert ("pediatric-icu-corrected-high" in fired(advice)) is fires


# --- populations ---------------------------------------------------------------------------

A = SCENARIOS["admission-u-shape"].at
I_AT = SCENARIOS["icu-admission-low"].at
P_AT = SCENARIOS["cardiac-surgery-postop-high"].at
PRE = SCENARIOS["cardiac-surgery-preop-low"].at

POPULATIONS: list[tuple[str, str, Callable[[Knowledge], dict[str, Any]], bool]] = [
    # adult = 18 years or older at the time of the Mg sample
    ("admission-u-shape", "18 at the sample", lambda k: {"birth": born(18, at=A)}, True),
    ("admission-u-shape", "17 at the sample (18 by now)", lambda k: {"birth": born(18, days=-1, at=A)}, False),
    ("admission-u-shape", "emergency encounter", lambda k: {"encounter": "emergency"}, True),
    ("admission-u-shape", "ambulatory encounter", lambda k: {"encounter": "ambulatory"}, False),
    ("admission-u-shape", "no encounter", lambda k: {"encounter": None}, False),
    ("admission-u-shape", "no birth date", lambda k: {"age": None}, False),
    ("contrast-u-shape", "PCI (CPT angiography) performed 7 d ago",
     lambda k: {"procedures": [performed(ANGIOGRAPHY_CPT, NOW - 7 * D - H, NOW - 7 * D)], "at": NOW - 8 * D}, True),
    ("contrast-u-shape", "PCI performed 8 d ago",
     lambda k: {"procedures": [performed(PCI, NOW - 8 * D - H, NOW - 8 * D)], "at": NOW - 9 * D}, False),
    ("contrast-u-shape", "PCI in progress",
     lambda k: {"procedures": [performed(PCI, NOW - 2 * H, None, status="in-progress")]}, True),
    ("contrast-u-shape", "PCI planned (draft order)", lambda k: {"procedures": [planned(PCI)]}, True),
    ("contrast-u-shape", "PCI planned (active ServiceRequest)",
     lambda k: {"procedures": [planned(PCI, draft=False)]}, True),
    ("contrast-u-shape", "no PCI", lambda k: {"procedures": [performed(APPENDECTOMY, PCI_START, PCI_START + H)]}, False),
    ("contrast-u-shape", "child (no age limit)", lambda k: {"age": 10}, True),
    ("icu-admission-low", "18 at the sample", lambda k: {"birth": born(18, at=I_AT)}, True),
    ("icu-admission-low", "17 at the sample", lambda k: {"birth": born(18, days=-1, at=I_AT)}, False),
    ("icu-admission-low", "no ICU stay", lambda k: {"icu": None}, False),
    ("icu-admission-high", "17 at the sample", lambda k: {"age": 17}, False),
    ("icu-admission-high", "no ICU stay", lambda k: {"icu": None}, False),
    ("cardiac-surgery-postop-high", "17 at the sample", lambda k: {"birth": born(18, days=-1, at=P_AT)}, False),
    ("cardiac-surgery-postop-high", "18 at the sample", lambda k: {"birth": born(18, at=P_AT)}, True),
    ("cardiac-surgery-postop-high", "CABG (CPT) ended 7 d ago",
     lambda k: {"procedures": [performed(CABG_CPT, NOW - 7 * D - 4 * H, NOW - 7 * D)], "at": NOW - 7 * D + H}, True),
    ("cardiac-surgery-postop-high", "CABG ended 7 d 1 min ago",
     lambda k: {"procedures": [_cabg(NOW - 7 * D - MIN)], "at": NOW - 7 * D + H}, False),
    ("cardiac-surgery-postop-high", "CABG planned only", lambda k: {"procedures": [planned(CABG)]}, False),
    ("cardiac-surgery-postop-high", "non-cardiac surgery",
     lambda k: {"procedures": [performed(APPENDECTOMY, POSTOP_END - H, POSTOP_END)]}, False),
    ("emergency-admission-high", "inpatient encounter", lambda k: {"encounter": "inpatient"}, False),
    ("emergency-admission-high", "child (no age limit)", lambda k: {"age": 10}, True),
    ("cirrhosis-high", "SNOMED cirrhosis", lambda k: {"conditions": [condition(CIRRHOSIS_SCT)]}, True),
    ("cirrhosis-high", "no cirrhosis", lambda k: {"conditions": [condition(HYPERTENSION)]}, False),
    ("cirrhosis-high", "cirrhosis coded after now", lambda k: {"conditions": [condition(CIRRHOSIS, onset=NOW + H)]}, False),
    ("cirrhosis-high", "17 at the sample", lambda k: {"birth": born(18, days=-1, at=NOW - H)}, False),
    ("cirrhosis-high", "18 at the sample", lambda k: {"birth": born(18, at=NOW - H)}, True),
    ("covid-stay-median-high", "emergency encounter", lambda k: {"encounter": "emergency"}, False),
    ("covid-stay-median-high", "no COVID-19", lambda k: {"conditions": []}, False),
    ("pediatric-icu-corrected-high", "3 months exactly", lambda k: {"birth": born(months=3, at=I_AT)}, False),
    ("pediatric-icu-corrected-high", "3 months and 1 day", lambda k: {"birth": born(months=3, days=1, at=I_AT)}, True),
    ("pediatric-icu-corrected-high", "17 years", lambda k: {"birth": born(18, days=-1, at=I_AT)}, True),
    ("pediatric-icu-corrected-high", "18 years", lambda k: {"birth": born(18, at=I_AT)}, False),
    ("pediatric-icu-corrected-high", "no ICU stay", lambda k: {"icu": None}, False),
    ("cardiac-surgery-preop-ionized-low", "17 at the sample", lambda k: {"birth": born(18, days=-1, at=PRE)}, False),
    ("cardiac-surgery-preop-ionized-low", "18 at the sample", lambda k: {"birth": born(18, at=PRE)}, True),
    ("cardiac-surgery-preop-ionized-low", "CABG performed, ended 7 d ago",
     lambda k: {"procedures": [_cabg(NOW - 7 * D)], "at": NOW - 8 * D}, True),
    ("cardiac-surgery-preop-ionized-low", "CABG performed, ended 8 d ago",
     lambda k: {"procedures": [_cabg(NOW - 8 * D)], "at": NOW - 9 * D}, False),
    ("cardiac-surgery-preop-ionized-low", "CABG in progress",
     lambda k: {"procedures": [performed(CABG, NOW - H, None, status="in-progress")]}, True),
    ("cardiac-surgery-preop-ionized-low", "no cardiac surgery", lambda k: {"procedures": [planned(APPENDECTOMY)]}, False),
    ("cardiac-surgery-preop-low", "69 at the sample", lambda k: {"birth": born(70, days=-1, at=PRE)}, False),
    ("cardiac-surgery-preop-low", "70 at the sample", lambda k: {"birth": born(70, at=PRE)}, True),
    ("cardiac-surgery-preop-low", "CABG performed, ended 7 d ago",
     lambda k: {"procedures": [_cabg(NOW - 7 * D)], "at": NOW - 8 * D}, True),
    ("cardiac-surgery-preop-low", "CABG performed, ended 8 d ago",
     lambda k: {"procedures": [_cabg(NOW - 8 * D)], "at": NOW - 9 * D}, False),
    ("cardiac-surgery-preop-low", "no cardiac surgery", lambda k: {"procedures": []}, False),
    ("pancreatitis-low", "no pancreatitis", lambda k: {"conditions": [condition(HYPERTENSION)]}, False),
    ("pancreatitis-low", "no admission (ambulatory)", lambda k: {"encounter": "ambulatory"}, False),
    ("tbi-low", "no TBI", lambda k: {"conditions": []}, False),
    ("tbi-low", "child (no age limit)", lambda k: {"age": 12}, True),
    ("malignancy-low", "carcinoma in situ (D05) is not C00-C96", lambda k: {"conditions": [condition(IN_SITU)]}, False),
    ("aki-recovery-low", "no AKI", lambda k: {"conditions": []}, False),
    ("csa-aki-persistent-low", "AKI onset 7 d after surgery end",
     lambda k: {"procedures": [_cabg(NOW - 8 * D)], "conditions": [condition(AKI, onset=NOW - D)],
                "at": NOW - 8 * D + H}, True),
    ("csa-aki-persistent-low", "AKI onset 7 d 1 min after surgery end",
     lambda k: {"procedures": [_cabg(NOW - 8 * D - MIN)], "conditions": [condition(AKI, onset=NOW - D)],
                "at": NOW - 8 * D + H}, False),
    ("csa-aki-persistent-low", "AKI onset before surgery",
     lambda k: {"conditions": [condition(AKI, onset=CSA_END - 5 * H)]}, False),
    ("csa-aki-persistent-low", "no AKI", lambda k: {"conditions": []}, False),
    ("csa-aki-persistent-low", "non-cardiac surgery",
     lambda k: {"procedures": [performed(APPENDECTOMY, CSA_END - H, CSA_END)]}, False),
    ("reference-range", "anyone: a child without encounter", lambda k: {"age": 5}, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "label", "over", "fires"), POPULATIONS, ids=[f"{p[0]}-{p[1]}" for p in POPULATIONS]
)
def test_populations(
    knowledge: Knowledge,
    rule: str,
    label: str,
    over: Callable[[Knowledge], dict[str, Any]],
    fires: bool,
) -> None:
    kw = over(knowledge)
    at = kw.pop("at", None)
    advice = run(knowledge, SCENARIOS[rule].build(knowledge, FIRES_AT[rule], at=at, **kw))
    assert (rule in fired(advice)) is fires


# --- comparators and date-only results -----------------------------------------------------

COMPARATORS = [
    ("tbi-low", "<", 1.0, "mg/dL", True),  # "<1.0" satisfies "< 1.5"
    ("tbi-low", "<", 1.5, "mg/dL", True),  # "<1.5" satisfies "< 1.5"
    ("tbi-low", "<=", 1.5, "mg/dL", False),  # "≤1.5" does not decide "< 1.5"
    ("tbi-low", "<", 1.6, "mg/dL", False),
    ("tbi-low", ">", 1.0, "mg/dL", False),
    ("tbi-low", "<", 0.4, "mmol/L", True),  # < 0.97 mg/dL
    ("reference-range", "<", 2.0, "mg/dL", False),  # "<2.0" does not decide "< 1.7"
    ("cardiac-surgery-preop-low", "<", 2.0, "mg/dL", False),
    ("cardiac-surgery-preop-low", "<", 1.7, "mg/dL", True),
    ("malignancy-low", "<", 1.7, "mg/dL", False),  # "<1.7" does not decide "≤ 1.6"
    ("malignancy-low", "<=", 1.6, "mg/dL", True),
    ("malignancy-low", "<", 1.6, "mg/dL", True),
    ("emergency-admission-high", ">", 2.5, "mg/dL", True),  # ">2.5" satisfies "> 2.5"
    ("emergency-admission-high", ">=", 2.5, "mg/dL", False),
    ("emergency-admission-high", ">", 2.4, "mg/dL", False),
    ("cirrhosis-high", ">=", 2.4, "mg/dL", True),  # "≥2.4" satisfies "≥ 2.4"
    ("cirrhosis-high", ">", 2.3, "mg/dL", False),
    ("cirrhosis-high", "<", 3.0, "mg/dL", False),
    ("contrast-u-shape", "<", 0.9, "mmol/L", True),
    ("contrast-u-shape", "<", 1.0, "mmol/L", False),
    ("contrast-u-shape", ">", 1.07, "mmol/L", True),
]


@pytest.mark.parametrize(("rule", "comparator", "value", "unit", "fires"), COMPARATORS)
def test_comparator_results(
    knowledge: Knowledge, rule: str, comparator: str, value: float, unit: str, fires: bool
) -> None:
    advice = run(knowledge, SCENARIOS[rule].build(knowledge, value, unit, comparator=comparator))
    assert (rule in fired(advice)) is fires


def test_admission_u_shape_comparator_decides_one_arm_only(knowledge: Knowledge) -> None:
    f = finding(
        run(knowledge, SCENARIOS["admission-u-shape"].build(knowledge, 1.0, comparator="<")),
        "admission-u-shape",
    )
    assert f.direction == "low"
    f = finding(
        run(knowledge, SCENARIOS["admission-u-shape"].build(knowledge, 3.0, comparator=">")),
        "admission-u-shape",
    )
    assert f.direction == "high"


MIDNIGHT = datetime.combine((NOW - D).date(), datetime.min.time(), tzinfo=NOW.tzinfo)

DATE_ONLY = [
    # hour-level windows: a date-only result is not used
    ("admission-u-shape", ADMIT.replace(hour=0, minute=0), False),
    ("icu-admission-low", ICU.replace(hour=0, minute=0), False),
    ("aki-recovery-low", ONSET.replace(hour=0, minute=0), False),
    ("cardiac-surgery-postop-high", POSTOP_END.replace(hour=0, minute=0) + D, False),
    ("csa-aki-persistent-low", CSA_END.replace(hour=0, minute=0) + D, False),
    # windows of 7 days or longer: used
    ("contrast-u-shape", MIDNIGHT - D, True),
    ("cardiac-surgery-preop-low", MIDNIGHT, True),
    ("cirrhosis-high", MIDNIGHT, True),
    ("reference-range", MIDNIGHT, True),
]


@pytest.mark.parametrize(("rule", "at", "fires"), DATE_ONLY, ids=[d[0] for d in DATE_ONLY])
def test_date_only_results(knowledge: Knowledge, rule: str, at: datetime, fires: bool) -> None:
    sc = SCENARIOS[rule]
    advice = run(knowledge, sc.build(knowledge, FIRES_AT[rule], at=at, date_only=True))
    assert (rule in fired(advice)) is fires
    # the same value with a time is used in every one of these windows
    assert rule in fired(run(knowledge, sc.build(knowledge, FIRES_AT[rule], at=at)))


def test_cardiac_postop_band(knowledge: Knowledge) -> None:
    sc = SCENARIOS["cardiac-surgery-postop-high"]
    assert (
        finding(run(knowledge, sc.build(knowledge, 2.3)), "cardiac-surgery-postop-high").band
        == "≥ 2.3 and < 2.7 mg/dL"
    )
    assert (
        finding(run(knowledge, sc.build(knowledge, 2.69)), "cardiac-surgery-postop-high").band
        == "≥ 2.3 and < 2.7 mg/dL"
    )
    assert (
        finding(run(knowledge, sc.build(knowledge, 2.7)), "cardiac-surgery-postop-high").band
        == "≥ 2.7 mg/dL"
    )
    value = convert_mg(knowledge, 2.7, "mg/dL", "mmol/L")
    f = finding(run(knowledge, sc.build(knowledge, value, "mmol/L")), "cardiac-surgery-postop-high")
    assert f.band == "≥ 2.7 mg/dL"


def test_whole_blood_or_ionized_never_feed_serum_rules(knowledge: Knowledge) -> None:
    """Ionized Mg never feeds serum rules; serum Mg never feeds the ionized rule."""
    snap = snapshot(encounter="inpatient", admitted=ADMIT, ionized=[ionized(knowledge, 0.3, "mmol/L", ADMIT + H)],
                    procedures=[planned(CABG)])  # fmt: skip
    advice = run(knowledge, snap)
    assert "admission-u-shape" not in fired(advice)
    assert "reference-range" not in fired(advice)
    assert "cardiac-surgery-preop-ionized-low" in fired(advice)
    snap = SCENARIOS["cardiac-surgery-preop-low"].build(knowledge, 0.3, "mmol/L", age=50)
    assert "cardiac-surgery-preop-ionized-low" not in fired(run(knowledge, snap))


def test_unit_table_is_the_spec(knowledge: Knowledge) -> None:
    """evidence.md §1: 1 mmol/L = 2.4305 mg/dL; 1 mEq/L = 1.21525 mg/dL; the spellings accepted."""
    q = knowledge.units["magnesium"]
    assert q.canonical == "mg/dL"
    for unit, factor in (("mg/dL", 1.0), ("mg/dl", 1.0), ("mmol/L", 2.4305), ("mmol/l", 2.4305),
                         ("meq/L", 1.21525), ("mEq/L", 1.21525), ("mEq/l", 1.21525)):  # fmt: skip
        assert q.to_canonical(1.0, unit) == factor
