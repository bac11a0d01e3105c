"""FHIR extraction (evidence.md §1-§2) on real-shaped bundles and CDS Hooks requests."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from cds_service.clinical import model as m
from cds_service.clinical.fhir_extract import (
    snapshot_from_cds_request,
    snapshot_from_resources,
    snapshots_from_bundle,
)
from cds_service.rules.model import Knowledge

FHIR = Path(__file__).parents[1] / "fixtures" / "fhir"
BRUSSELS = ZoneInfo("Europe/Brussels")


def load(name: str) -> Any:
    return json.loads((FHIR / name).read_text(encoding="utf-8"))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def edge(knowledge: Knowledge) -> m.ClinicalSnapshot:
    (snap,) = snapshots_from_bundle(load("edge-cases-collection.json"), knowledge, tz=BRUSSELS)
    return snap


def results(snap: m.ClinicalSnapshot) -> dict[str, m.LabResult]:
    kinds = (m.SERUM_MG, m.IONIZED_MG, m.CREATININE, m.ALBUMIN, m.EGFR, m.WEIGHT)
    return {r.id: r for k in kinds for r in snap.series(k)}


# --- usable results -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rid", "kind", "value", "unit", "original"),
    [
        ("mg-mass", m.SERUM_MG, 1.9, "mg/dL", (1.9, "mg/dL")),
        ("mg-code-only", m.SERUM_MG, 2.4305, "mg/dL", (1.0, "mmol/L")),  # unit wins over 19123-9
        ("mg-meq", m.SERUM_MG, 1.6 * 1.21525, "mg/dL", (1.6, "mEq/L")),
        ("mg-less-than", m.SERUM_MG, 1.0, "mg/dL", (1.0, "mg/dL")),
        ("mg-no-tz", m.SERUM_MG, 2.0, "mg/dL", (2.0, "mg/dL")),
        ("mg-date-only", m.SERUM_MG, 2.1, "mg/dL", (2.1, "mg/dL")),
        ("mg-ionized", m.IONIZED_MG, 0.5 * 2.4305, "mg/dL", (0.5, "mmol/L")),
        ("creat-1", m.CREATININE, 1.1, "mg/dL", (1.1, "mg/dL")),
        ("creat-2", m.CREATININE, 150 / 88.4, "mg/dL", (150.0, "µmol/L")),
        ("albumin", m.ALBUMIN, 3.5, "g/dL", (35.0, "g/L")),
        ("weight", m.WEIGHT, 154 * 0.45359237, "kg", (154.0, "lb")),
        ("egfr-nonblack", m.EGFR, 55.0, "mL/min/1.73 m²", (55.0, "mL/min/1.73 m²")),
    ],
)
def test_usable_results_are_converted_to_the_canonical_unit(
    edge: m.ClinicalSnapshot,
    rid: str,
    kind: str,
    value: float,
    unit: str,
    original: tuple[float, str],
) -> None:
    r = results(edge)[f"Observation/{rid}"]
    assert (r.kind, r.unit) == (kind, unit)
    assert r.value == pytest.approx(value)
    assert (r.original_value, r.original_unit) == original


@pytest.mark.parametrize(
    ("rid", "field", "expected"),
    [
        ("mg-code-only", "time_source", "issued"),
        ("mg-code-only", "time_flags", frozenset({"issued"})),
        ("mg-code-only", "time", datetime(2024, 5, 1, 8, 0, tzinfo=UTC)),
        ("mg-no-tz", "time_flags", frozenset({"no-timezone"})),
        ("mg-no-tz", "time", datetime(2024, 5, 1, 14, 0, tzinfo=UTC)),  # 16:00 read in Brussels
        ("mg-date-only", "date_only", True),
        ("mg-date-only", "time", datetime(2024, 4, 28, tzinfo=BRUSSELS)),
        ("mg-less-than", "comparator", "<"),
        ("mg-mass", "comparator", None),
        ("mg-mass", "reference_range", "1.7-2.5 mg/dL"),
        ("mg-mass", "time_flags", frozenset()),
        ("mg-mass", "status", "final"),
    ],
)
def test_result_details(edge: m.ClinicalSnapshot, rid: str, field: str, expected: Any) -> None:
    assert getattr(results(edge)[f"Observation/{rid}"], field) == expected


def test_series_are_sorted_oldest_first(edge: m.ClinicalSnapshot) -> None:
    for kind in (m.SERUM_MG, m.CREATININE):
        times = [r.time for r in edge.series(kind)]
        assert times == sorted(times)
    assert edge.serum_mg[0].id == "Observation/mg-date-only"


def test_race_based_egfr_pair_keeps_the_lower(edge: m.ClinicalSnapshot) -> None:
    assert [r.value for r in edge.egfr] == [55.0]


# --- exclusions --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rid", "reason", "value_text"),
    [
        ("Observation/mg-no-unit", m.UNIT_UNCERTAIN, "1.8"),
        ("Observation/mg-unknown-unit", m.UNKNOWN_UNIT, "18"),
        ("Observation/mg-hemolyzed", m.NON_NUMERIC, "hemolyzed"),
        ("Observation/mg-absent", m.NON_NUMERIC, "Hemolyzed specimen"),
        ("Observation/mg-prelim", m.NOT_FINAL, "1.4"),
        ("Observation/mg-no-time", m.NO_TIME, "2.2"),
        ("Observation/mg-implausible", m.IMPLAUSIBLE, "25"),
        ("Observation/mg-urine-specimen", m.SPECIMEN_NOT_SERUM, "2"),
        ("Observation/mg-rbc", m.NON_SERUM, "2.45"),
        ("Observation/creat-implausible", m.IMPLAUSIBLE, "138"),
        ("Observation/bad-code", m.BAD_RESOURCE, None),
        ("Observation/bad-value", m.BAD_RESOURCE, None),
        ("str/?", m.BAD_RESOURCE, None),
    ],
)
def test_exclusions(
    edge: m.ClinicalSnapshot, rid: str, reason: str, value_text: str | None
) -> None:
    found = {x.resource: x for x in edge.excluded}
    assert found[rid].reason_code == reason
    assert found[rid].value_text == value_text
    assert found[rid].reason
    assert rid not in results(edge)


def test_excluded_records_kind_unit_and_time(edge: m.ClinicalSnapshot) -> None:
    x = next(e for e in edge.excluded if e.resource == "Observation/mg-prelim")
    assert (x.kind, x.unit, x.time) == (m.SERUM_MG, "mg/dL", utc("2024-05-01T09:00:00"))


def test_bad_resources_mid_bundle_are_counted_not_raised(edge: m.ClinicalSnapshot) -> None:
    assert sum(x.reason_code == m.BAD_RESOURCE for x in edge.excluded) == 3
    assert "Observation/weight" in results(edge)  # entries after them are still read


def test_unrelated_observations_are_ignored(edge: m.ClinicalSnapshot) -> None:
    assert all("sodium" not in x.resource for x in edge.excluded)


# --- context -------------------------------------------------------------------------


def test_patient_and_encounters(edge: m.ClinicalSnapshot) -> None:
    assert (edge.patient_id, edge.birth_date, edge.sex) == (
        "p1",
        datetime(1950, 4, 2).date(),
        "female",
    )
    assert [e.id for e in edge.encounters] == ["enc-0", "enc-1"]  # cancelled enc-x dropped
    assert edge.current_encounter_id == "enc-1"
    cur = edge.current_encounter
    assert cur is not None and cur.klass == "inpatient" and cur.start == utc("2024-05-01T08:00:00")
    assert [lp.is_icu for lp in cur.locations] == [False, True]


def test_icu_stay_from_location_period(edge: m.ClinicalSnapshot) -> None:
    assert edge.icu_stays == (
        m.IcuStay(utc("2024-05-01T12:00:00"), None, "Encounter.location", "enc-1"),
    )


def test_conditions_that_count(edge: m.ClinicalSnapshot) -> None:
    conds = {c.id: c for c in edge.conditions}
    assert set(conds) == {"cond-aki", "cond-nostatus"}
    assert conds["cond-aki"].onset == utc("2024-05-02T06:00:00")
    assert conds["cond-aki"].recorded == utc("2024-05-02T07:00:00")
    assert conds["cond-nostatus"].onset == datetime(2020, 1, 1, tzinfo=BRUSSELS)


@pytest.mark.parametrize(
    ("pid", "status", "planned", "source", "start", "end"),
    [
        (
            "proc-cabg",
            "completed",
            False,
            "Procedure",
            "2024-04-29T08:00:00",
            "2024-04-29T13:30:00",
        ),
        ("proc-prep", "preparation", True, "Procedure", None, None),
        (
            "proc-dt",
            "in-progress",
            False,
            "Procedure",
            "2024-05-01T15:00:00",
            "2024-05-01T15:00:00",
        ),
        ("sr-pci", "active", True, "ServiceRequest", "2024-05-03T09:00:00", "2024-05-03T09:00:00"),
    ],
)
def test_procedures(
    edge: m.ClinicalSnapshot, pid: str, status: str, planned: bool, source: str,
    start: str | None, end: str | None,
) -> None:  # fmt: skip
    p = {x.id: x for x in edge.procedures}[pid]
    assert (p.status, p.planned, p.source) == (status, planned, source)
    assert p.start == (utc(start) if start else None)
    assert p.end == (utc(end) if end else None)


def test_procedures_that_do_not_count(edge: m.ClinicalSnapshot) -> None:
    ids = {p.id for p in edge.procedures}
    assert not ids & {"proc-notdone", "sr-done"}


@pytest.mark.parametrize(
    ("mid", "source", "code", "text"),
    [
        ("mr-cis", "MedicationRequest", "309311", None),  # contained Medication
        ("ma-mg", "MedicationAdministration", "6585", None),  # Medication in the bundle
        ("ms-ppi", "MedicationStatement", None, "omeprazole 20 mg capsule"),
    ],
)
def test_medications(
    edge: m.ClinicalSnapshot, mid: str, source: str, code: str | None, text: str | None
) -> None:
    med = {x.id: x for x in edge.medications}[mid]
    assert med.source == source and not med.draft
    assert (med.concept.codings[0].code if med.concept.codings else None) == code
    assert med.concept.text == text


def test_medication_times_and_stopped_orders(edge: m.ClinicalSnapshot) -> None:
    meds = {x.id: x for x in edge.medications}
    assert "mr-stopped" not in meds
    assert meds["ma-mg"].time == utc("2024-05-01T15:30:00")
    assert meds["mr-cis"].authored == utc("2024-05-01T09:30:00")


def test_newest_time(edge: m.ClinicalSnapshot) -> None:
    assert edge.newest_time == utc("2024-05-02T07:00:00")  # the AKI condition's recordedDate


# --- real bundles (hl7-be lab, CC0) ------------------------------------------------------


def test_macsys_serum_mg_and_red_cell_mg(knowledge: Knowledge) -> None:
    (snap,) = snapshots_from_bundle(load("hl7-be-macsys-mg-rbc.json"), knowledge)
    assert snap.patient_id == "7167869"
    (mg,) = snap.serum_mg
    assert mg.code.code == "2601-3"
    assert mg.value == pytest.approx(2.163, abs=0.001)
    assert (mg.original_value, mg.original_unit) == (0.89, "mmol/L")
    assert mg.reference_range == "0.66-1.07 mmol/L"
    assert mg.specimen == "Serum"
    (rbc,) = [x for x in snap.excluded if x.reason_code == m.NON_SERUM]
    assert rbc.resource == "Observation/Observation.2.0.0.8" and rbc.value_text == "2.45"
    assert [c.value for c in snap.creatinine] == [0.8]


def test_mips_code_only_unit_and_issued_time(knowledge: Knowledge) -> None:
    (snap,) = snapshots_from_bundle(load("hl7-be-mips-mg-code-only-unit.json"), knowledge)
    assert (snap.patient_id, snap.sex) == ("405636", "female")
    (mg,) = snap.serum_mg
    assert mg.value == pytest.approx(2.43, abs=0.001)
    assert (mg.time_source, mg.time_flags) == ("issued", frozenset({"issued"}))
    assert mg.time == datetime(2022, 3, 16, 9, 35, 10, tzinfo=UTC)
    (creat,) = [x for x in snap.excluded if x.kind == m.CREATININE]
    assert (creat.reason_code, creat.value_text) == (m.NOT_FINAL, "volgt")
    assert snap.procedures == ()  # lab orders without a code are not planned procedures


# --- grouping by patient ------------------------------------------------------------------


def test_transaction_bundle_is_split_per_patient(knowledge: Knowledge) -> None:
    snaps = {
        s.patient_id: s
        for s in snapshots_from_bundle(load("two-patients-transaction.json"), knowledge)
    }
    assert set(snaps) == {"pa", "pb"}
    assert [r.id for r in snaps["pa"].serum_mg] == ["Observation/mg-a"]
    assert [r.id for r in snaps["pb"].serum_mg] == ["Observation/mg-b2", "Observation/mg-b"]
    assert snaps["pb"].encounters[0].klass == "emergency"
    assert snaps["pb"].current_encounter_id == "enc-b"
    # an Observation without subject cannot be placed when there are two patients
    assert all("mg-nosubject" not in r.id for s in snaps.values() for r in s.serum_mg)


def test_unreferenced_resources_go_to_the_only_patient(knowledge: Knowledge) -> None:
    bundle = load("two-patients-transaction.json")
    bundle["entry"] = [
        e for e in bundle["entry"] if e["resource"].get("id") in ("pa", "mg-nosubject")
    ]
    (snap,) = snapshots_from_bundle(bundle, knowledge)
    assert [r.id for r in snap.serum_mg] == ["Observation/mg-nosubject"]


def test_not_a_bundle_raises(knowledge: Knowledge) -> None:
    with pytest.raises(ValueError, match="Bundle"):
        snapshots_from_bundle({"resourceType": "Patient", "id": "x"}, knowledge)


# --- CDS Hooks ------------------------------------------------------------------------------


def test_order_select_uses_selected_drafts_and_prefetch(knowledge: Knowledge) -> None:
    snap = snapshot_from_cds_request(load("cds-order-select.json"), knowledge)
    assert (snap.patient_id, snap.current_encounter_id) == ("p9", "enc-9")
    # draft-cis is not among the selections
    assert [(x.id, x.draft) for x in snap.medications] == [("draft-mg", True)]
    (pci,) = snap.procedures
    assert (pci.id, pci.planned, pci.source) == ("draft-pci", True, "draft-order")
    assert [r.id for r in snap.serum_mg] == ["Observation/mg-9"]
    assert [(x.resource, x.reason_code) for x in snap.excluded] == [
        ("Observation/mg-other", m.OTHER_PATIENT)
    ]
    # an OperationOutcome is missing data; a null prefetch key ("conditions") is no data
    assert snap.missing == frozenset({"medications"})


def test_order_select_without_selections_takes_every_draft(knowledge: Knowledge) -> None:
    request = load("cds-order-select.json")
    del request["context"]["selections"]
    snap = snapshot_from_cds_request(request, knowledge)
    assert {x.id for x in snap.medications} == {"draft-mg", "draft-cis"}


def test_result_review_results_and_prefetch_are_merged_once(knowledge: Knowledge) -> None:
    snap = snapshot_from_cds_request(load("cds-result-review.json"), knowledge)
    assert [r.id for r in snap.serum_mg] == ["Observation/mg-9", "Observation/mg-new"]
    assert snap.serum_mg[1].value == pytest.approx(0.6 * 2.4305)


@pytest.mark.parametrize(
    "junk",
    [
        None,
        42,
        "Observation",
        {"resourceType": 5},
        {"id": "no-type"},
        {"resourceType": "Observation", "id": 7},
        {"resourceType": "Observation", "id": "o", "code": {"coding": "19123-9"}},
        {
            "resourceType": "Observation",
            "id": "o",
            "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
            "effectiveDateTime": 20240501,
            "valueQuantity": {"value": 1.0, "unit": "mg/dL"},
            "status": "final",
        },
        {"resourceType": "Encounter", "id": "e", "period": "yesterday"},
        {"resourceType": "Condition", "id": "c", "clinicalStatus": ["active"]},
        {
            "resourceType": "MedicationRequest",
            "id": "r",
            "status": "active",
            "medicationReference": "Medication/x",
        },
        {"resourceType": "Bundle", "entry": {"resource": {}}},
        {"resourceType": "Bundle", "entry": [None, 3, {"resource": None}]},
    ],
)
def test_junk_never_raises(knowledge: Knowledge, junk: Any) -> None:
    snap = snapshot_from_resources([junk], knowledge, patient_id="p")
    assert snap.patient_id == "p"
    assert snap.serum_mg == ()
    assert all(x.reason_code == m.BAD_RESOURCE for x in snap.excluded)


def test_cds_request_with_junk_context(knowledge: Knowledge) -> None:
    snap = snapshot_from_cds_request({"context": "x", "prefetch": ["y"]}, knowledge)
    assert snap.patient_id == ""


# --- current encounter --------------------------------------------------------------------

IMP = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}


def enc(eid: str, status: str, start: str, end: str | None = None, **extra: Any) -> dict[str, Any]:
    period = {"start": start} | ({"end": end} if end else {})
    return {"resourceType": "Encounter", "id": eid, "status": status, "class": IMP,
            "subject": {"reference": "Patient/p"}, "period": period, **extra}  # fmt: skip


MG = {"resourceType": "Observation", "id": "mg", "status": "final", "subject": {"reference": "Patient/p"},
      "code": {"coding": [{"system": "http://loinc.org", "code": "19123-9"}]},
      "effectiveDateTime": "2024-03-10T08:00:00Z", "valueQuantity": {"value": 2.0, "unit": "mg/dL"}}  # fmt: skip


@pytest.mark.parametrize(
    ("encounters", "kwargs", "expected"),
    [
        ([enc("a", "finished", "2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z"),
          enc("b", "in-progress", "2024-03-01T00:00:00Z")], {}, "b"),
        ([enc("a", "finished", "2024-03-01T00:00:00Z", "2024-03-20T00:00:00Z")],
         {"encounter_id": "given"}, "given"),
        ([enc("a", "finished", "2024-03-01T00:00:00Z", "2024-03-20T00:00:00Z"),
          enc("b", "finished", "2024-04-01T00:00:00Z", "2024-04-03T00:00:00Z")],
         {"now": datetime(2024, 3, 10, 12, tzinfo=UTC)}, "a"),
        ([enc("a", "finished", "2024-03-01T00:00:00Z", "2024-03-20T00:00:00Z"),
          enc("b", "finished", "2024-02-01T00:00:00Z", "2024-02-03T00:00:00Z")], {}, "a"),
        # ended before the newest Mg result: not current
        ([enc("a", "finished", "2024-03-01T00:00:00Z", "2024-03-05T00:00:00Z")], {}, None),
        # an ICU sub-encounter (partOf) is never the current encounter
        ([enc("hosp", "in-progress", "2024-03-01T00:00:00Z"),
          enc("icu", "in-progress", "2024-03-02T00:00:00Z", partOf={"reference": "Encounter/hosp"})],
         {}, "hosp"),
    ],
)  # fmt: skip
def test_current_encounter(
    knowledge: Knowledge,
    encounters: list[dict[str, Any]],
    kwargs: dict[str, Any],
    expected: str | None,
) -> None:
    snap = snapshot_from_resources([*encounters, MG], knowledge, patient_id="p", **kwargs)
    assert snap.current_encounter_id == expected


def test_icu_encounter_by_site_unit_name(knowledge: Knowledge) -> None:
    icu = enc("icu", "in-progress", "2024-03-02T00:00:00Z", partOf={"reference": "Encounter/hosp"},
              location=[{"location": {"reference": "Location/l1", "display": "MICU"}}])  # fmt: skip
    snap = snapshot_from_resources(
        [enc("hosp", "in-progress", "2024-03-01T00:00:00Z"), icu], knowledge, patient_id="p"
    )
    assert snap.icu_stays == (m.IcuStay(utc("2024-03-02T00:00:00"), None, "Encounter", "hosp"),)
