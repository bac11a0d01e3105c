"""ADT events in the store: admission, ICU transfer, discharge, cancel, merge, DG1 and PR1."""

from __future__ import annotations

from datetime import UTC, datetime

from cds_service.events.ingest import Ingestor
from cds_service.store.events_models import (
    AdviceIssued,
    AdvicePush,
    DiagnosisRow,
    EncounterRow,
    IcuStayRow,
    LabResultRow,
    Patient,
    ProcedureRow,
)
from tests.hl7support import advice_rules, count, fixture, rows


def test_admission_to_icu_with_diagnoses_and_procedure(ing: Ingestor) -> None:
    assert ing.handle(fixture("adt_a01_icu.hl7")).code == "AA"
    (enc,) = rows(ing, EncounterRow)
    assert (enc.klass, enc.status, enc.unit) == ("inpatient", "in-progress", "MICU")
    assert enc.start == datetime(2024, 5, 9, 18, tzinfo=UTC) and enc.visit_hash
    (stay,) = rows(ing, IcuStayRow)
    assert stay.start == enc.start and stay.end is None
    dx = {(d.system, d.code) for d in rows(ing, DiagnosisRow)}
    assert ("http://hl7.org/fhir/sid/icd-10-cm", "A41.9") in dx
    (px,) = rows(ing, ProcedureRow)
    assert px.system == "http://www.cms.gov/Medicare/Coding/ICD10" and px.start is not None
    assert set(advice_rules(ing)) >= {"sepsis-mg", "monitoring-gap"}  # sepsis in ICU, no Mg yet


def test_resent_admission_adds_nothing(ing: Ingestor) -> None:
    ing.handle(fixture("adt_a01_icu.hl7"))
    ing.handle(fixture("adt_a01_icu.hl7").replace(b"MSG-A01-1", b"MSG-A01-1b"))
    assert count(ing, EncounterRow) == 1 and count(ing, IcuStayRow) == 1
    assert count(ing, DiagnosisRow) == 2 and count(ing, ProcedureRow) == 1
    assert count(ing, AdviceIssued) == 2


def test_transfer_to_icu_then_discharge(ing: Ingestor) -> None:
    ing.handle(fixture("adt_a04_register_ed.hl7"))
    (enc,) = rows(ing, EncounterRow)
    assert enc.klass == "emergency" and count(ing, IcuStayRow) == 0
    ing.handle(fixture("adt_a02_to_icu.hl7"))
    (stay,) = rows(ing, IcuStayRow)
    assert stay.unit == "SICU" and stay.start == datetime(2024, 5, 10, 5, 55, tzinfo=UTC)
    assert rows(ing, EncounterRow)[0].klass == "inpatient"
    assert "monitoring-gap" in advice_rules(ing)
    ing.handle(fixture("adt_a03_discharge.hl7"))
    (enc,) = rows(ing, EncounterRow)
    assert enc.status == "finished" and enc.end == datetime(2024, 5, 12, 9, 55, tzinfo=UTC)
    assert rows(ing, IcuStayRow)[0].end == enc.end


def test_cancel_admission(ing: Ingestor) -> None:
    ing.handle(fixture("adt_a01_icu.hl7"))
    ing.handle(fixture("adt_a11_cancel.hl7"))
    assert rows(ing, EncounterRow)[0].status == "cancelled" and count(ing, IcuStayRow) == 0


def test_cancel_discharge_reopens(ing: Ingestor) -> None:
    for name in ("adt_a04_register_ed.hl7", "adt_a02_to_icu.hl7", "adt_a03_discharge.hl7"):
        ing.handle(fixture(name))
    a13 = fixture("adt_a03_discharge.hl7").replace(b"ADT^A03^ADT_A03", b"ADT^A13^ADT_A01")
    assert ing.handle(a13.replace(b"MSG-A03-1", b"MSG-A13-1")).code == "AA"
    (enc,) = rows(ing, EncounterRow)
    assert enc.status == "in-progress" and enc.end is None and rows(ing, IcuStayRow)[0].end is None


def test_merge_moves_history_to_the_survivor(ing: Ingestor) -> None:
    ing.handle(fixture("oru_mg_sn_lessthan.hl7"))  # MRN1002
    assert ing.handle(fixture("adt_a40_merge.hl7")).code == "AA"  # MRN1002 -> MRN3001
    patients = rows(ing, Patient)
    old = next(p for p in patients if p.id_value == "MRN1002")
    new = next(p for p in patients if p.id_value == "MRN3001")
    assert old.merged_into == new.id
    assert {r.patient_id for r in rows(ing, LabResultRow)} == {new.id}
    assert {a.patient_id for a in rows(ing, AdviceIssued)} == {new.id}
    assert {k.patient_id for k in rows(ing, AdvicePush)} == {new.id}  # what was pushed, too
    # a later result under the old identifier joins the survivor
    late = fixture("oru_mg_sn_lessthan.hl7").replace(b"MSG-MG-SN-1", b"MSG-MG-SN-2")
    ing.handle(late.replace(b"20240510080000", b"20240510090000"))
    assert {r.patient_id for r in rows(ing, LabResultRow)} == {new.id}


def test_merge_before_the_old_record_exists(ing: Ingestor) -> None:
    ing.handle(fixture("adt_a40_merge.hl7"))
    ing.handle(fixture("oru_mg_sn_lessthan.hl7"))
    new = next(p for p in rows(ing, Patient) if p.id_value == "MRN3001")
    assert {r.patient_id for r in rows(ing, LabResultRow)} == {new.id}


def test_result_after_icu_transfer_uses_the_icu_stay(ing: Ingestor) -> None:
    ing.handle(fixture("adt_a04_register_ed.hl7"))
    ing.handle(fixture("adt_a02_to_icu.hl7"))
    oru = fixture("oru_mg_low_icu.hl7").replace(b"MRN1001", b"MRN2002")
    oru = oru.replace(
        b"MICU^12^A^GENHOSP||||||||||||||||V5001", b"SICU^7^A^GENHOSP||||||||||||||||V6002"
    )
    assert ing.handle(oru).code == "AA"
    assert count(ing, IcuStayRow) == 1  # the ORU's PV1 found the open stay
    assert "icu-admission-low" in rows(ing, AdviceIssued)[-1].rules
