"""KDIGO and NHS England AKI staging (evidence.md §3) with the real mappings/aki.yaml."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.clinical.aki import AkiStatus, assess_aki
from cds_service.clinical.fhir_extract import snapshots_from_bundle
from cds_service.rules.model import Knowledge

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
LOINC = m.Coding("http://loinc.org", "2160-0")
FHIR = Path(__file__).parents[1] / "fixtures" / "fhir"


def cr(*points: tuple[float, float], date_only: bool = False) -> list[m.LabResult]:
    """Creatinine results (hours before NOW, mg/dL)."""
    return [
        m.LabResult(f"Observation/c{i}", m.CREATININE, v, "mg/dL", NOW - timedelta(hours=h), LOINC,
                    v, "mg/dL", date_only=date_only)
        for i, (h, v) in enumerate(points)
    ]  # fmt: skip


def assess(knowledge: Knowledge, series: list[m.LabResult], **kw: Any) -> AkiStatus:
    return assess_aki(series, NOW, knowledge.aki, units=knowledge.units["creatinine"], **kw)


D = 24.0  # hours in a day, for readable series


@pytest.mark.parametrize(
    ("name", "series", "stage", "criterion", "baseline", "kind"),
    [
        ("0.3 rise in 48 h", cr((24, 1.0), (0, 1.3)), 1, "rise>=0.3 in 48h", 1.0, "lowest-7d"),
        ("0.3 rise despite float error", cr((24, 0.9), (0, 1.2)), 1, "rise>=0.3 in 48h", 0.9, "lowest-7d"),
        ("0.2 rise is not AKI", cr((24, 1.0), (0, 1.2)), 0, None, 1.0, "lowest-7d"),
        ("rise older than 48 h", cr((50, 1.0), (0, 1.3)), 0, None, 1.0, "lowest-7d"),
        ("ratio 1.6", cr((5 * D, 1.0), (0, 1.6)), 1, "ratio>=1.5", 1.0, "lowest-7d"),
        ("ratio 2.2", cr((5 * D, 1.0), (0, 2.2)), 2, "ratio>=2", 1.0, "lowest-7d"),
        ("ratio 3.1", cr((5 * D, 1.0), (0, 3.1)), 3, "ratio>=3", 1.0, "lowest-7d"),
        ("median 8-365 d", cr((100 * D, 0.9), (60 * D, 1.0), (30 * D, 0.8), (0, 1.9)), 2, "ratio>=2",
         0.9, "median-8-365d"),
        ("older than 365 d ignored", cr((400 * D, 0.5), (0, 1.0)), 0, None, None, None),
        ("stage 3 by >= 4.0 with acute rise", cr((24, 3.7), (0, 4.0)), 3,
         "creatinine>=4 with acute rise", 3.7, "lowest-7d"),
        ("stable 4.2 is not AKI", cr((24, 4.2), (0, 4.2)), 0, None, 4.2, "lowest-7d"),
    ],
)  # fmt: skip
def test_kdigo(
    knowledge: Knowledge, name: str, series: list[m.LabResult], stage: int, criterion: str | None,
    baseline: float | None, kind: str | None,
) -> None:  # fmt: skip
    status = assess(knowledge, series)
    assert status.stage == stage, name
    assert status.present is (stage > 0)
    if criterion:
        assert criterion in status.criteria
    assert status.baseline == (pytest.approx(baseline) if baseline is not None else None)
    assert status.baseline_kind == kind
    assert status.current is series[-1]


def test_ratio_and_rise_are_reported(knowledge: Knowledge) -> None:
    status = assess(knowledge, cr((30, 1.0), (0, 1.6)))
    assert status.ratio == pytest.approx(1.6)
    assert status.rise_48h == pytest.approx(0.6)
    assert status.criteria == ("ratio>=1.5", "rise>=0.3 in 48h")


def test_onset_is_the_first_value_meeting_kdigo_and_stage_the_peak(knowledge: Knowledge) -> None:
    series = cr((3 * D, 1.0), (2 * D, 1.6), (1 * D, 2.5), (0, 1.8))
    status = assess(knowledge, series)
    assert status.onset == series[1].time
    assert (status.stage, status.peak) == (2, series[2])
    assert status.current is series[-1]  # newest value, even though the peak was earlier


def test_values_after_now_are_ignored(knowledge: Knowledge) -> None:
    series = cr((24, 1.0), (0, 1.1), (-5, 3.0))
    status = assess(knowledge, series)
    assert status.stage == 0 and status.current is series[1]


def test_date_only_values_are_not_used_in_the_48h_window(knowledge: Knowledge) -> None:
    series = cr((24, 1.0), date_only=True) + cr((0, 1.3))
    status = assess(knowledge, series)
    assert status.rise_48h is None
    assert status.baseline == 1.0  # but count in the 7-day baseline
    assert status.stage == 0


@pytest.mark.parametrize(
    ("name", "series", "kdigo", "nhs"),
    [
        # NHS takes the higher of RV1 (lowest 0-7 d) and RV2 (median 8-365 d) ratios
        ("higher NHS ratio", cr((60 * D, 0.8), (30 * D, 0.8), (5 * D, 1.1), (0, 1.6)), 0, 2),
        # 4.0 mg/dL = 353.6 umol/L: KDIGO stage 3 (>= 4.0 with rise), NHS needs > 354 umol/L
        ("absolute threshold", cr((24, 3.7), (0, 4.0)), 3, 1),
        ("same stage", cr((5 * D, 1.0), (0, 2.2)), 2, 2),
        ("rise: KDIGO >= 26.5, NHS D > 26 umol/L", cr((24, 1.0), (0, 1.3)), 1, 1),
    ],
)
def test_nhs_england(
    knowledge: Knowledge, name: str, series: list[m.LabResult], kdigo: int, nhs: int
) -> None:
    status = assess(knowledge, series)
    assert (status.stage, status.nhs_stage) == (kdigo, nhs), name


def test_nhs_ratio_reported(knowledge: Knowledge) -> None:
    status = assess(knowledge, cr((60 * D, 0.8), (30 * D, 0.8), (5 * D, 1.1), (0, 1.6)))
    assert status.nhs_ratio == pytest.approx(2.0)
    assert status.nhs_criteria == ("ratio>=2",)


def test_coded_aki_without_creatinine(knowledge: Knowledge) -> None:
    onset = NOW - timedelta(days=2)
    cond = m.Condition(
        "c1", m.Concept((m.Coding("http://hl7.org/fhir/sid/icd-10-cm", "N17.9"),)), onset
    )
    status = assess(knowledge, [], coded_aki=[cond])
    assert (status.present, status.coded, status.stage, status.onset) == (True, True, 0, onset)


def test_coded_onset_wins_over_creatinine_onset(knowledge: Knowledge) -> None:
    onset = NOW - timedelta(days=4)
    cond = m.Condition("c1", m.Concept(), onset)
    status = assess(knowledge, cr((5 * D, 1.0), (0, 2.2)), coded_aki=[cond])
    assert (status.stage, status.onset) == (2, onset)


@pytest.mark.parametrize(("days_ago", "stage"), [(1, 3), (400, 0)])
def test_dialysis_started_in_the_episode(knowledge: Knowledge, days_ago: int, stage: int) -> None:
    status = assess(
        knowledge, cr((24, 1.0), (0, 1.1)), dialysis_started=NOW - timedelta(days=days_ago)
    )
    assert status.stage == stage
    assert ("dialysis" in status.criteria) is (stage == 3)


def test_no_creatinine_no_aki(knowledge: Knowledge) -> None:
    assert assess(knowledge, []) == AkiStatus()


def test_umol_thresholds_need_the_unit_table(knowledge: Knowledge) -> None:
    with pytest.raises(ValueError, match="units"):
        assess_aki(cr((24, 1.0), (0, 1.3)), NOW, knowledge.aki)


# --- MIMIC-III demo patient 10126: the implausible 138 mg/dL (ODbL, see fixtures README) ---


@pytest.fixture(scope="module")
def mimic(knowledge: Knowledge) -> m.ClinicalSnapshot:
    bundle = json.loads((FHIR / "mimic-iii-10126-creatinine.json").read_text())
    (snap,) = snapshots_from_bundle(bundle, knowledge)
    return snap


def test_mimic_138_is_excluded_at_extraction(mimic: m.ClinicalSnapshot) -> None:
    (bad,) = [x for x in mimic.excluded if x.reason_code == m.IMPLAUSIBLE]
    assert (bad.resource, bad.value_text) == ("Observation/labevents-6298735", "138")
    assert max(r.value for r in mimic.creatinine) < 30
    assert all("no-timezone" in r.time_flags for r in mimic.creatinine)  # MIMIC times are local


def test_mimic_138_does_not_stage_aki(knowledge: Knowledge, mimic: m.ClinicalSnapshot) -> None:
    at = datetime(2171, 7, 18, 2, 0, tzinfo=UTC)  # just after the 138 at 01:55
    units = knowledge.units["creatinine"]
    status = assess_aki(mimic.creatinine, at, knowledge.aki, units=units)
    assert status.current is not None and status.current.value == 2.0  # 19:06 the day before
    assert not any(c.startswith("creatinine>=") for c in status.criteria)
    # the neighbours of the 138 (2.0 before, 2.2 after) alone: no AKI
    near = [r for r in mimic.creatinine if datetime(2171, 7, 17, 19, tzinfo=UTC) <= r.time]
    near = [r for r in near if r.time <= datetime(2171, 7, 18, 4, tzinfo=UTC)]
    assert [r.value for r in near] == [2.0, 2.2]
    alone = assess_aki(near, datetime(2171, 7, 18, 4, tzinfo=UTC), knowledge.aki, units=units)
    assert (alone.stage, alone.present) == (0, False)
    # had it been kept, the 138 would have staged AKI 3 by itself
    kept = m.LabResult("Observation/labevents-6298735", m.CREATININE, 138.0, "mg/dL",
                       datetime(2171, 7, 18, 1, 55, tzinfo=UTC), LOINC, 138.0, "mg/dL")  # fmt: skip
    wrong = assess_aki([near[0], kept], at, knowledge.aki, units=units)
    assert wrong.stage == 3 and "creatinine>=4 with acute rise" in wrong.criteria
