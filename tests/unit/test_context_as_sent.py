"""Context as EHRs send it, from FHIR to cards: no encounterId, Locations by reference, planned
procedures, magnesium given, and the specimen of a result (evidence.md §1-2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.clinical.fhir_extract import snapshot_from_cds_request, snapshot_from_resources
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.rules.engine import evaluate
from cds_service.rules.model import Knowledge
from tests.integration.hooks_support import MAPPINGS, coding

NOW = datetime(2024, 5, 4, 12, tzinfo=UTC)
ROLE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def at(hours: float) -> str:
    return (NOW - timedelta(hours=hours)).isoformat()


def enc(rid: str, status: str, klass: str, start: float, end: float | None = None,
        **extra: Any) -> dict[str, Any]:  # fmt: skip
    period = {"start": at(start)} | ({"end": at(end)} if end is not None else {})
    return {"resourceType": "Encounter", "id": rid, "status": status,
            "class": {"system": ACT, "code": klass}, "subject": {"reference": "Patient/p"},
            "period": period, **extra}  # fmt: skip


def loc(rid: str, name: str | None = None, role: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"resourceType": "Location", "id": rid}
    if name:
        res["name"] = name
    if role:
        res["type"] = [{"coding": [{"system": ROLE, "code": role}]}]
    return res


def obs(rid: str, value_set: str, value: float, unit: str, hours: float, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "id": rid, "status": "final",
            "code": {"coding": [coding(value_set)]}, "subject": {"reference": "Patient/p"},
            "effectiveDateTime": at(hours),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            **extra}  # fmt: skip


PATIENT = {"resourceType": "Patient", "id": "p", "gender": "female", "birthDate": "1960-04-02"}


def safe_labs(mg: float = 1.5) -> list[dict[str, Any]]:
    """Adult labs that open the gate: Mg, creatinine, eGFR, weight (all recent)."""
    return [obs("mg", "serum-magnesium-mass", mg, "mg/dL", 2), obs("cr", "creatinine", 0.9, "mg/dL", 2),
            obs("egfr", "egfr", 75, "mL/min/{1.73_m2}", 2), obs("wt", "body-weight", 70, "kg", 20)]  # fmt: skip


def snap(knowledge: Knowledge, *resources: dict[str, Any], encounter_id: str | None = None) -> m.ClinicalSnapshot:
    return snapshot_from_resources([PATIENT, *resources], knowledge, patient_id="p",
                                   encounter_id=encounter_id, now=NOW)  # fmt: skip


def rules(knowledge: Knowledge, s: m.ClinicalSnapshot) -> set[str]:
    return {r for a in evaluate(knowledge, s, NOW) for r in a.rules}


# --- the current encounter without encounterId --------------------------------------------------


def test_in_progress_inpatient_wins_over_a_finished_one_and_an_ambulatory_visit(
    knowledge: Knowledge,
) -> None:
    s = snap(knowledge,
             enc("old", "finished", "IMP", 24 * 40, 24 * 35),
             enc("clinic", "in-progress", "AMB", 3),
             enc("stay", "in-progress", "IMP", 30))  # fmt: skip
    assert s.current_encounter_id == "stay"


def test_of_several_in_progress_admissions_the_latest_started_is_current(
    knowledge: Knowledge,
) -> None:
    s = snap(knowledge, enc("forgotten", "in-progress", "IMP", 24 * 90),
             enc("stay", "in-progress", "EMER", 10))  # fmt: skip
    assert s.current_encounter_id == "stay"
    assert snap(knowledge, enc("forgotten", "in-progress", "IMP", 24 * 90),
                enc("stay", "in-progress", "EMER", 10), encounter_id="forgotten"
                ).current_encounter_id == "forgotten"  # fmt: skip


def test_an_icu_sub_encounter_is_never_current_but_its_stay_counts(knowledge: Knowledge) -> None:
    icu = enc("icu", "in-progress", "IMP", 6, partOf={"reference": "Encounter/stay"},
              location=[{"location": {"reference": "Location/l7"}}])  # fmt: skip
    s = snap(knowledge, enc("stay", "in-progress", "IMP", 30), icu, loc("l7", role="ICU"))
    assert s.current_encounter_id == "stay"
    assert [(x.encounter_id, x.start) for x in s.icu_stays] == [("stay", NOW - timedelta(hours=6))]


# --- ICU from Locations by reference -------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "icu"),
    [
        (loc("l1", role="ICU"), True),
        (loc("l1", role="PEDICU"), True),
        (loc("l1", name="MICU-2"), True),
        (loc("l1", name="ICU 3 North"), True),
        (loc("l1", name="重症监护室"), True),
        ({**loc("l1"), "type": [{"text": "Intensive Care Unit"}]}, True),
        ({**loc("l1"), "identifier": [{"value": "CVICU"}]}, True),
        (loc("l1", name="PACU"), False),
        (loc("l1", name="Neuro Stepdown"), False),
        (loc("l1", name="4 North"), False),
    ],
)
def test_a_location_named_by_reference_only(knowledge: Knowledge, location: dict[str, Any], icu: bool) -> None:
    stay = enc("stay", "in-progress", "IMP", 30,
               location=[{"location": {"reference": "Location/l1"}, "period": {"start": at(20)}}])  # fmt: skip
    s = snap(knowledge, stay, location, *safe_labs())
    assert bool(s.icu_stays) is icu
    assert ("icu-hypomagnesemia-repletion" in rules(knowledge, s)) is icu


def test_without_the_location_resource_only_a_display_name_helps(knowledge: Knowledge) -> None:
    bare = enc("stay", "in-progress", "IMP", 30,
               location=[{"location": {"reference": "Location/l1"}, "period": {"start": at(20)}}])  # fmt: skip
    assert snap(knowledge, bare, *safe_labs()).icu_stays == ()
    named = enc("stay", "in-progress", "IMP", 30,
                location=[{"location": {"reference": "Location/l1", "display": "SICU bed 4"},
                           "period": {"start": at(20)}}])  # fmt: skip
    assert snap(knowledge, named, *safe_labs()).icu_stays != ()


# --- planned procedures and magnesium given -------------------------------------------------------


def test_an_active_service_request_for_pci_fires_contrast_u_shape(knowledge: Knowledge) -> None:
    pci = {"resourceType": "ServiceRequest", "id": "sr", "status": "active", "intent": "order",
           "code": {"coding": [coding("pci-angiography")]}, "subject": {"reference": "Patient/p"}}  # fmt: skip
    labs = safe_labs(mg=2.0)  # below 0.91 mmol/L (2.21 mg/dL)
    assert "contrast-u-shape" in rules(knowledge, snap(knowledge, pci, *labs))
    assert "contrast-u-shape" not in rules(knowledge, snap(knowledge, {**pci, "status": "completed"}, *labs))
    prep = {"resourceType": "Procedure", "id": "pr", "status": "preparation",
            "code": {"coding": [coding("pci-angiography")]}, "subject": {"reference": "Patient/p"}}  # fmt: skip
    assert "contrast-u-shape" in rules(knowledge, snap(knowledge, prep, *labs))


def test_magnesium_given_two_hours_ago_withholds_the_suggestion(knowledge: Knowledge) -> None:
    icu = enc("stay", "in-progress", "IMP", 30, location=[{"location": {"reference": "Location/l1"}}])
    dose = {"resourceType": "MedicationAdministration", "id": "ma", "status": "completed",
            "medicationCodeableConcept": {"text": "Magnesium sulfate 2 g in 50 mL IV"},
            "subject": {"reference": "Patient/p"}, "effectivePeriod": {"start": at(2.5), "end": at(2)}}  # fmt: skip
    base = [icu, loc("l1", role="ICU"), *safe_labs()]
    given = evaluate(knowledge, snap(knowledge, *base, dose), NOW)
    (low,) = [a for a in given if a.direction == "low"]
    assert "icu-hypomagnesemia-repletion" in low.rules and low.medication_suggestion is None
    assert any("mg-active" in w.conditions for w in low.withheld)
    (fresh,) = [a for a in evaluate(knowledge, snap(knowledge, *base), NOW) if a.direction == "low"]
    assert fresh.medication_suggestion is not None and not fresh.withheld
    old = {**dose, "effectivePeriod": {"start": at(30), "end": at(29)}}
    (later,) = [a for a in evaluate(knowledge, snap(knowledge, *base, old), NOW) if a.direction == "low"]
    assert later.medication_suggestion is not None  # given more than 24 h ago


# --- the specimen decides -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("locale", "words"),
    [("en", ["Magnesium result not used", "not serum or plasma", "(Urine)"]),
     ("zh-CN", ["镁检测结果未被使用", "并非血清/血浆", "（Urine）"])],
)  # fmt: skip
def test_a_serum_code_on_urine_feeds_no_rule_and_the_data_quality_card_says_why(
    knowledge: Knowledge, locale: str, words: list[str]
) -> None:
    urine = obs("mg-u", "serum-magnesium-mass", 1.2, "mg/dL", 1,
                specimen={"reference": "#s"}, contained=[{"resourceType": "Specimen", "id": "s", "type": {"text": "Urine"}}])  # fmt: skip
    request = {"hook": "patient-view", "context": {"patientId": "p"},
               "prefetch": {"patient": PATIENT, "magnesium": {"resourceType": "Bundle", "type": "searchset",
                                                              "entry": [{"resource": urine}]}}}  # fmt: skip
    s = snapshot_from_cds_request(request, knowledge, now=NOW)
    assert s.serum_mg == ()
    advice = evaluate(knowledge, s, NOW)
    assert [a.rules for a in advice if a.direction != "monitoring"] == []
    cards = CardRenderer(knowledge, OrderCodes(MAPPINGS / "orders.yaml")).cards(advice, s, locale, NOW)
    (card,) = [c for c in cards if c["source"]["topic"]["code"] == "mg-data-quality"]
    assert all(w in card["summary"] for w in words), card["summary"]
    assert len(card["summary"]) < 140
