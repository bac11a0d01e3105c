"""Suspect results (evidence.md §1, delta checks) as the clinician reads the cards.

Every parameter of ``mappings/delta-checks.yaml`` at, just inside and just outside its edge;
the dilution and jump checks; refutation and confirmation by the repeat; what a suspect
latest result may and may not drive.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cds_service.clinical import model as m
from cds_service.rules.engine import evaluate
from cds_service.rules.model import Knowledge
from tests.unit.builders import (
    CISPLATIN,
    MG_SULFATE,
    MIN,
    NOW,
    D,
    H,
    creatinine,
    given,
    med,
    mg,
    run,
)
from tests.unit.suspect_support import (
    cards,
    diluted,
    icu_patient,
    no_suspect,
    read,
    resources,
    summaries,
    suspect_card,
)

SEC = timedelta(seconds=1)
T = NOW - H  # the draw under test


def _assert_suspect_low(found: list[dict[str, object]], value: str) -> None:
    """A suspect low Mg: the repeat is suggested, no magnesium, no low-Mg advice."""
    card = suspect_card(found)
    assert card["summary"].startswith(f"Suspect serum Mg {value}")  # type: ignore[union-attr]
    (order,) = resources(found, "ServiceRequest")
    assert order["code"]["coding"][0]["code"] == "19123-9"
    assert resources(found, "MedicationRequest") == []
    assert "IV magnesium" not in read(found) and "hypomagnesaemia" not in read(found)


# --- dilution: fall of 40 %, within 48 h, one draw within 5 min ------------------------------

FALL = [  # (case, Mg before -> now, creatinine before -> now, suspect)
    ("both-at-40%", (2.5, 1.5), (2.0, 1.2), True),
    ("mg-39.9%", (2.5, 1.5025), (2.0, 1.2), False),
    ("mg-40.4%", (2.5, 1.49), (2.0, 1.2), True),
    ("creatinine-39.9%", (2.5, 1.5), (2.0, 1.202), False),
    ("creatinine-40.5%", (2.5, 1.5), (2.0, 1.19), True),
]


@pytest.mark.parametrize(("mg_values", "cr_values", "suspect"), [c[1:] for c in FALL],
                         ids=[c[0] for c in FALL])  # fmt: skip
def test_dilution_fall_edge(
    knowledge: Knowledge, mg_values: tuple[float, float], cr_values: tuple[float, float],
    suspect: bool,
) -> None:  # fmt: skip
    snap = icu_patient(knowledge, **diluted(knowledge, T, mg_values, cr_values))
    found = cards(knowledge, snap)
    if suspect:
        _assert_suspect_low(found, f"{mg_values[1]:g} mg/dL")
        detail = suspect_card(found)["detail"]
        assert "possible dilution: sample drawn near an infusion" in suspect_card(found)["summary"]
        assert f"{mg_values[0]:g} mg/dL" in detail and "creatinine" in detail
    else:  # an ordinary low Mg in the ICU: the repletion trial's regimen is suggested
        assert no_suspect(found)
        assert len(resources(found, "MedicationRequest")) == 1


def test_dilution_at_40_percent_in_mmol_per_l(knowledge: Knowledge) -> None:
    labs = diluted(knowledge, T, (2.5, 1.5), (2.0, 1.2))
    labs["mg"] = [mg(knowledge, 2.5 / 2.4305, "mmol/L", T - 6 * H),
                  mg(knowledge, 1.5 / 2.4305, "mmol/L", T)]  # fmt: skip
    found = cards(knowledge, icu_patient(knowledge, **labs))
    # 1.5 / 2.4305 sent with all its decimals: shown to 3 (no 0.6171569635877392 on a card)
    assert suspect_card(found)["summary"].startswith("Suspect serum Mg 0.617 mmol/L")


@pytest.mark.parametrize(("offset", "suspect"), [
    (5 * MIN, True), (5 * MIN + SEC, False), (-5 * MIN, True), (-5 * MIN - SEC, False),
    (timedelta(0), True),
], ids=["creatinine-5min-later", "5min1s-later", "5min-earlier", "5min1s-earlier", "same-time"])  # fmt: skip
def test_dilution_same_draw_edge(knowledge: Knowledge, offset: timedelta, suspect: bool) -> None:
    labs = diluted(knowledge, T - 10 * MIN, (2.5, 1.5), (2.0, 1.2))
    labs["creatinine"][1] = creatinine(knowledge, 1.2, T - 10 * MIN + offset)
    found = cards(knowledge, icu_patient(knowledge, **labs))
    if suspect:
        _assert_suspect_low(found, "1.5 mg/dL")
        assert "within 5 min" in suspect_card(found)["detail"]
    else:
        assert no_suspect(found) and len(resources(found, "MedicationRequest")) == 1


@pytest.mark.parametrize(("before", "suspect"), [(48 * H, True), (48 * H + MIN, False)],
                         ids=["previous-48h-before", "previous-48h-1min-before"])  # fmt: skip
def test_dilution_previous_within_48h_edge(
    knowledge: Knowledge, before: timedelta, suspect: bool
) -> None:
    labs = diluted(knowledge, T, (2.5, 1.5), (2.0, 1.2), before=T - before)
    found = cards(knowledge, icu_patient(knowledge, **labs))
    if suspect:
        _assert_suspect_low(found, "1.5 mg/dL")
        assert "within 48 h" in suspect_card(found)["detail"]
    else:
        assert no_suspect(found) and len(resources(found, "MedicationRequest")) == 1


def test_dilution_needs_every_test_of_the_draw(knowledge: Knowledge) -> None:
    """Mg alone falls (no creatinine in the draw): an ordinary result, severe hypomagnesaemia."""
    found = cards(knowledge, icu_patient(knowledge, mg=[mg(knowledge, 2.4, at=T - 6 * H),
                                                        mg(knowledge, 0.9, at=T)]))  # fmt: skip
    assert no_suspect(found)
    assert any(s.startswith("Serum Mg 0.9 mg/dL (≤ 1.1 mg/dL): severe") for s in summaries(found))
    labs = diluted(knowledge, T, (2.4, 2.3), (2.5, 0.9))  # creatinine alone falls
    assert no_suspect(cards(knowledge, icu_patient(knowledge, **labs)))


# --- jump: 2.0 mg/dL within 24 h, no magnesium given -------------------------------------


@pytest.mark.parametrize(("value", "unit", "suspect"), [
    (4.0, "mg/dL", True), (3.99, "mg/dL", False), (4.01, "mg/dL", True),
    (4.0 / 2.4305, "mmol/L", True), (3.99 / 2.4305, "mmol/L", False),
], ids=["rise-2.0", "rise-1.99", "rise-2.01", "rise-2.0-in-mmol", "rise-1.99-in-mmol"])  # fmt: skip
def test_jump_rise_edge(knowledge: Knowledge, value: float, unit: str, suspect: bool) -> None:
    snap = icu_patient(knowledge, mg=[mg(knowledge, 2.0, at=T - 20 * H), mg(knowledge, value, unit, T)],
                       creatinine=[creatinine(knowledge, 0.9, T)])  # fmt: skip
    found = cards(knowledge, snap)
    if suspect:
        card = suspect_card(found)
        assert card["summary"].endswith(
            "possible contamination or spurious result. Repeat the sample"
        )
        assert "2.0 mg/dL (2024-05-09 15:00 UTC)" in card["detail"]  # the result before it
        assert "a rise of 2.0 mg/dL or more within 24 h" in card["detail"]
        assert "above the reference range" not in read(found)  # the suspect value drives nothing
        (order,) = resources(found, "ServiceRequest")
        assert order["code"]["coding"][0]["code"] == "19123-9"
    else:
        assert no_suspect(found)
        assert any("above the reference range" in s for s in summaries(found))


@pytest.mark.parametrize(("before", "suspect"), [(24 * H, True), (24 * H + MIN, False)],
                         ids=["previous-24h-before", "previous-24h-1min-before"])  # fmt: skip
def test_jump_previous_within_24h_edge(
    knowledge: Knowledge, before: timedelta, suspect: bool
) -> None:
    snap = icu_patient(knowledge, mg=[mg(knowledge, 2.0, at=T - before), mg(knowledge, 4.2, at=T)])
    found = cards(knowledge, snap)
    assert no_suspect(found) is not suspect
    assert any("above the reference range" in s for s in summaries(found)) is not suspect


MAGNESIUM = [  # (case, medication, suspect)
    ("administered-in-between", lambda: given(MG_SULFATE, T - 10 * H), False),
    ("administered-at-the-previous-result", lambda: given(MG_SULFATE, T - 20 * H), False),
    ("administered-before-the-previous-result", lambda: given(MG_SULFATE, T - 21 * H), True),
    ("active-order", lambda: med(MG_SULFATE, authored=NOW - 2 * D), False),
    ("active-order-written-after-the-result", lambda: med(MG_SULFATE, authored=T + 10 * MIN), True),
    ("draft-order-of-the-hook", lambda: med(MG_SULFATE, draft=True), True),
]


@pytest.mark.parametrize(
    ("make", "suspect"), [c[1:] for c in MAGNESIUM], ids=[c[0] for c in MAGNESIUM]
)
def test_jump_with_and_without_magnesium_given(
    knowledge: Knowledge, make: object, suspect: bool
) -> None:
    medication: m.Medication = make()  # type: ignore[operator]
    snap = icu_patient(knowledge, mg=[mg(knowledge, 2.2, at=T - 20 * H), mg(knowledge, 5.0, at=T)],
                       medications=[medication])  # fmt: skip
    found = cards(knowledge, snap)
    (toxic,) = [c for c in found if c["indicator"] == "critical"]
    if suspect:
        assert toxic["summary"].startswith("Confirm with a repeat sample; stop magnesium meanwhile")
        assert "possible contamination or spurious result" in suspect_card(found)["summary"]
    else:
        assert no_suspect(found)
        assert (
            toxic["summary"]
            == "Serum Mg 5.0 mg/dL: toxic range. Stop magnesium; check reflexes, breathing and ECG"
        )


# --- hypermagnesemia-toxic on a suspect value -------------------------------------------


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_toxic_still_fires_on_a_suspect_value_and_leads_with_the_repeat(
    knowledge: Knowledge, locale: str
) -> None:
    snap = icu_patient(knowledge, mg=[mg(knowledge, 2.4, at=T - 20 * H), mg(knowledge, 7.5, at=T)])
    found = cards(knowledge, snap, locale=locale)
    (toxic,) = [c for c in found if c["indicator"] == "critical"]
    ext = toxic["extension"]["magnesium-aki"]
    assert ext["rules"] == ["hypermagnesemia-toxic"] and ext["magnesium"]["value_mg_dl"] == 7.5
    lead = {"en": "Confirm with a repeat sample; stop magnesium meanwhile",
            "zh-CN": "请复查确认，其间停用镁剂"}[locale]  # fmt: skip
    value = {"en": "7.5 mg/dL", "zh-CN": "3.09 mmol/L"}[locale]  # mmol/L first in Chinese
    assert toxic["summary"].startswith(lead) and value in toxic["summary"]
    (todo,) = [p for p in toxic["detail"].split("\n\n") if p.startswith(("**What to do:**", "**处理建议："))]
    assert lead in todo  # the "What to do" leads with it
    assert len(found) == 2  # the toxic card and the repeat-sample card, nothing else
    assert resources(found, "MedicationRequest") == []


# --- resolution: the next result within 24 h, within 25 % of the value before -------------

REPEAT = [  # (case, repeat Mg after the jump 2.0 -> 4.5, refuted)
    ("25%-above", 2.5, True), ("25%-below", 1.5, True),
    ("25.5%-above", 2.51, False), ("25.5%-below", 1.49, False),
]  # fmt: skip


@pytest.mark.parametrize(("repeat", "refuted"), [c[1:] for c in REPEAT], ids=[c[0] for c in REPEAT])
def test_refuted_within_25_percent_edge(knowledge: Knowledge, repeat: float, refuted: bool) -> None:
    """The repeat within 25 % of the value before the jump (2.0) refutes it; else confirms it."""
    snap = icu_patient(knowledge, mg=[mg(knowledge, 2.0, at=T - 20 * H), mg(knowledge, 4.5, at=T - 2 * H),
                                      mg(knowledge, repeat, at=T)])  # fmt: skip
    found = cards(knowledge, snap)
    text = read(found)
    assert "Suspect " not in text
    if refuted:
        assert text.count("Excluded as spurious: serum Mg 4.5 mg/dL") == 1
        assert (
            f"the repeat, {repeat} mg/dL (2024-05-10 11:00 UTC), is within 25 % of the result before it, 2.0 mg/dL"
            in text
        )
        assert (
            "Serum Mg falling" not in text and "Serum Mg rising" not in text
        )  # 4.5 is not a value
    else:  # confirmed: 4.5 is an ordinary result again, and the trend lists it
        assert "spurious" not in text
        (trend,) = [c["summary"] + c["detail"] for c in found
                    if "Serum Mg falling" in c["summary"] + c["detail"]
                    or "Serum Mg rising" in c["summary"] + c["detail"]]  # fmt: skip
        assert "4.5 mg/dL (2024-05-10 09:00 UTC)" in trend


@pytest.mark.parametrize(("after", "resolved"), [(24 * H, True), (24 * H + MIN, False)],
                         ids=["repeat-24h-after", "repeat-24h-1min-after"])  # fmt: skip
def test_resolution_within_24h_edge(knowledge: Knowledge, after: timedelta, resolved: bool) -> None:
    labs = diluted(knowledge, T - after)
    labs["mg"].append(mg(knowledge, 2.5, at=T))
    labs["creatinine"].append(creatinine(knowledge, 2.6, T))
    found = cards(knowledge, icu_patient(knowledge, **labs))
    text = read(found)
    assert "Suspect " not in text  # the suspect results are no longer the newest
    assert ("Excluded as spurious" in text) is resolved
    # resolved or not, the diluted 0.9 is never used: no AKI from a 0.9 baseline
    assert "AKI stage" not in text


def test_suspect_confirmed_by_the_repeat_is_ordinary_again(knowledge: Knowledge) -> None:
    labs = diluted(knowledge, T - 2 * H)  # Mg 2.4 -> 0.9, creatinine 2.5 -> 0.9
    labs["mg"].append(mg(knowledge, 1.0, at=T))
    labs["creatinine"].append(creatinine(knowledge, 1.0, T))
    found = cards(knowledge, icu_patient(knowledge, **labs))
    assert no_suspect(found)
    low = next(c for c in found if c["summary"].startswith("Serum Mg 1.0 mg/dL (≤ 1.1 mg/dL): severe"))
    assert "Urgent repletion per local protocol" in low["detail"]
    assert "0.9 mg/dL (2024-05-10 09:00 UTC)" in low["detail"]  # the trend lists the confirmed 0.9


def test_a_suspect_result_stays_suspect_until_its_repeat_is_known(knowledge: Knowledge) -> None:
    """Results after ``now`` are not known yet: the repeat taken later refutes nothing now."""
    labs = diluted(knowledge, T)
    labs["mg"].append(mg(knowledge, 2.6, at=NOW + 2 * H))
    labs["creatinine"].append(creatinine(knowledge, 2.6, NOW + 2 * H))
    found = cards(knowledge, icu_patient(knowledge, **labs))
    _assert_suspect_low(found, "0.9 mg/dL")
    later = cards(knowledge, icu_patient(knowledge, **labs), NOW + 3 * H)
    assert "Suspect " not in read(later) and "Excluded as spurious" in read(later)


def test_spurious_note_is_said_once(knowledge: Knowledge) -> None:
    """At the refuting result's time; once a newer result of the test arrives, no longer."""
    labs = diluted(knowledge, T - 2 * H)
    labs["mg"] += [mg(knowledge, 2.6, at=T), mg(knowledge, 2.5, at=NOW + 4 * H)]
    labs["creatinine"] += [creatinine(knowledge, 2.6, T), creatinine(knowledge, 2.4, NOW + 4 * H)]
    snap = icu_patient(knowledge, **labs)
    at_refutation = cards(knowledge, snap)
    (note,) = [c["detail"] for c in at_refutation if "Excluded as spurious" in c["detail"]]
    assert note.count("Excluded as spurious") == 1
    assert "serum Mg 0.9 mg/dL (2024-05-10 09:00 UTC)" in note  # both in the one note
    assert "creatinine 0.9 mg/dL (2024-05-10 09:00 UTC)" in note
    assert "spurious" not in read(cards(knowledge, snap, NOW + 5 * H))


# --- what a suspect latest result may drive ------------------------------------------------


def test_suspect_latest_drives_no_latest_value_rule(knowledge: Knowledge) -> None:
    """Severe, repletion, reference-range, trend and monitoring-gap stay silent; the gap counts the sample."""
    labs = diluted(knowledge, T, (1.5, 0.5), (1.0, 0.5))
    labs["mg"].insert(0, mg(knowledge, 1.6, at=T - 30 * H))
    found = cards(knowledge, icu_patient(knowledge, **labs))
    assert len(found) == 1
    _assert_suspect_low(found, "0.5 mg/dL")
    assert "No serum Mg" not in read(found) and "falling" not in read(found)


def test_suspect_latest_withholds_every_magnesium_suggestion(knowledge: Knowledge) -> None:
    """The gate condition "the latest serum Mg is suspect" holds alone (cisplatin preload)."""
    labs = diluted(knowledge, T, (2.2, 1.2), (1.0, 0.5))
    snap = icu_patient(knowledge, icu=None, medications=[med(CISPLATIN, draft=True)], **labs)
    found = cards(knowledge, snap)
    prevention = next(c for c in found if "Cisplatin ordered" in c["summary"])
    assert (
        "withheld by the safety gate: the latest serum Mg 1.2 mg/dL is suspect (repeat it first)"
        in prevention["detail"]
    )
    assert resources(found, "MedicationRequest") == []
    (order,) = resources(found, "ServiceRequest")
    assert order["code"]["coding"][0]["code"] == "19123-9"
    (advice,) = [a for a in run(knowledge, snap) if a.direction == "prevention"]
    assert advice.withheld and advice.withheld[0].conditions == ("mg-suspect",)


def test_suspect_finding_carries_the_result(knowledge: Knowledge) -> None:
    """``context["suspect"]``: the suspect LabResult, on every mg-data-quality finding about one."""
    snap = icu_patient(knowledge, **diluted(knowledge, T))
    quality = [
        f
        for a in evaluate(knowledge, snap, NOW)
        for f in a.findings
        if f.rule_id == "mg-data-quality"
    ]
    assert [(f.context.suspect.kind, f.context.suspect.value) for f in quality if f.context.suspect] == [
        (m.SERUM_MG, 0.9),
        (m.CREATININE, 0.9),
    ]
    assert all(f.context.suspect is snap.serum_mg[-1] or f.context.suspect is snap.creatinine[-1]
               for f in quality)  # fmt: skip
    labs = diluted(knowledge, T - 2 * H)
    labs["mg"].append(mg(knowledge, 2.5, at=T))
    labs["creatinine"].append(creatinine(knowledge, 2.6, T))
    later = evaluate(knowledge, icu_patient(knowledge, **labs), NOW)
    notes = [f for a in later for f in a.findings if f.rule_id == "mg-data-quality"]
    assert len(notes) == 1 and notes[0].context.suspect is None and notes[0].context.spurious


# --- AKI: a suspect creatinine is never a KDIGO baseline or current value -------------------


def test_suspect_creatinine_is_not_the_current_value(knowledge: Knowledge) -> None:
    labs = diluted(knowledge, T, (2.2, 0.9), (2.5, 0.9))
    labs["creatinine"].insert(0, creatinine(knowledge, 1.0, NOW - 5 * D))
    found = cards(knowledge, icu_patient(knowledge, **labs))
    (aki,) = [c for c in found if c["summary"].startswith("AKI stage")]
    assert aki["summary"].startswith("AKI stage 2 (KDIGO): creatinine 2.5 mg/dL")
    assert "Baseline: 1.0 mg/dL (88 µmol/L), the lowest in the 7 days before" in aki["detail"]
    assert "0.9" not in aki["detail"]


def test_unresolved_suspect_creatinine_is_never_a_baseline(knowledge: Knowledge) -> None:
    """Never repeated within 24 h: it stays suspect, so 2.7 is judged against 2.5, not 0.9."""
    labs = diluted(knowledge, T - 25 * H)  # creatinine 2.5 -> 0.9, Mg 2.4 -> 0.9
    labs["mg"].append(mg(knowledge, 2.3, at=T))
    labs["creatinine"].append(creatinine(knowledge, 2.7, T))
    found = cards(knowledge, icu_patient(knowledge, **labs))
    assert "AKI stage" not in read(found) and no_suspect(found)


def test_issue_case_at_engine_level(knowledge: Knowledge) -> None:
    """Mg 2.4 -> 0.9 and creatinine 2.5 -> 0.9 in one draw, back to 2.8 / 2.7 two hours later."""
    labs = diluted(knowledge, T - 2 * H)
    at_draw = cards(knowledge, icu_patient(knowledge, **labs), T - 2 * H + 5 * MIN)
    _assert_suspect_low(at_draw, "0.9 mg/dL")
    assert all(c["indicator"] != "critical" for c in at_draw) and "Urgent repletion" not in read(
        at_draw
    )
    labs["mg"].append(mg(knowledge, 2.8, at=T))
    labs["creatinine"].append(creatinine(knowledge, 2.7, T))
    after: list[dict[str, object]] = cards(knowledge, icu_patient(knowledge, **labs))
    assert "AKI stage" not in read(after)
    assert sum(c["detail"].count("Excluded as spurious") for c in after) == 1
