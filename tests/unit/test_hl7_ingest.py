"""Messages through the Ingestor into the store (SQLite and PostgreSQL): ACKs, results, advice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cds_service.events.ingest import Ingestor
from cds_service.store.events_models import AdviceIssued, Hl7Message, LabResultRow, OutboxRow
from tests.hl7support import (
    ARRIVAL,
    CORPUS,
    advice_rules,
    count,
    fixture,
    make_ingestor,
    msa,
    outbox_count,
    rows,
    segment,
)


def test_mg_low_in_icu_is_stored_and_advised(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_mg_low_icu.hl7"))
    assert out.code == "AA" and out.send and msa(out.ack)[1:3] == ["AA", "MSG-MG-LOW-1"]
    results = rows(ing, LabResultRow)
    assert [(r.kind, r.value, r.unit, r.status) for r in results] == [
        ("serum-mg", 1.2, "mg/dL", "final"),
        ("creatinine", 0.9, "mg/dL", "final"),
    ]  # glucose is not of interest
    assert results[0].time == datetime(2024, 5, 10, 8, tzinfo=UTC)
    assert results[0].time_flags == "no-timezone" and results[0].abnormal_flags == "L"
    assert "Welby" in results[0].orderer  # OBR-16 kept for the outbound recipient
    advice = rows(ing, AdviceIssued)
    assert len(advice) == 1 and advice[0].rule_id == "admission-u-shape"
    assert {"icu-admission-low", "icu-hypomagnesemia-repletion"} <= set(advice[0].rules)
    assert advice[0].trigger_result_id == results[0].id and not advice[0].late
    assert [(o.channel, o.status, o.kind) for o in rows(ing, OutboxRow)] == [
        ("hl7", "pending", "advice")
    ]
    msg = rows(ing, Hl7Message)[0]
    assert msg.status == "AA" and msg.raw and msg.interest and msg.ack == out.ack


def test_duplicate_gets_the_same_ack_and_one_advice(ing: Ingestor) -> None:
    first = ing.handle(fixture("oru_mg_low_icu.hl7"))
    again = ing.handle(fixture("oru_mg_low_icu.hl7").replace(b"\r", b"\n"))
    assert again.duplicate and again.ack == first.ack and again.ack_bytes == first.ack_bytes
    assert count(ing, AdviceIssued) == 1 and count(ing, LabResultRow) == 2
    assert count(ing, Hl7Message) == 1


def test_same_result_under_a_new_control_id_is_not_advised_twice(ing: Ingestor) -> None:
    ing.handle(fixture("oru_mg_low_icu.hl7"))
    ing.handle(fixture("oru_mg_low_icu.hl7").replace(b"MSG-MG-LOW-1", b"MSG-MG-LOW-1-RESENT"))
    assert count(ing, AdviceIssued) == 1 and count(ing, LabResultRow) == 2


def test_sn_comparator_decides_a_threshold(ing: Ingestor) -> None:
    ing.handle(fixture("oru_mg_sn_lessthan.hl7"))
    (result,) = rows(ing, LabResultRow)
    assert (result.comparator, result.value, result.original_text) == ("<", 1.0, "<^1.0")
    assert advice_rules(ing) == ["severe-hypomagnesemia"]


def test_bad_obx_is_ae_with_location(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_bad_obx.hl7"))
    assert out.code == "AE" and msa(out.ack)[1] == "AE"
    err = segment(out.ack, "ERR")
    assert err is not None and err[2] == "OBX^6^5" and err[3].startswith("102^")
    assert "abc" not in out.ack  # no field content in the error text
    stored = {r.kind: r for r in rows(ing, LabResultRow)}
    assert stored["serum-mg"].usable is False and stored["serum-mg"].reason_code == "non-numeric"
    assert stored["creatinine"].usable is True  # the good OBX is kept
    assert rows(ing, Hl7Message)[0].raw is not None


def test_unknown_result_status_is_ae(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_bad_status.hl7"))
    err = segment(out.ack, "ERR")
    assert (
        out.code == "AE" and err is not None and err[2] == "OBX^6^11" and err[3].startswith("103^")
    )


def test_correction_replaces_and_withdraws(ing: Ingestor) -> None:
    ing.handle(fixture("oru_mg_low_icu.hl7"))
    out = ing.handle(fixture("oru_correction_c.hl7"))
    assert out.code == "AA"
    mg = rows(ing, LabResultRow, LabResultRow.kind == "serum-mg")
    assert [(r.value, r.status, r.superseded) for r in mg] == [
        (1.2, "final", True),
        (2.0, "corrected", False),
    ]
    assert mg[0].superseded_by == mg[1].id
    (advice,) = rows(ing, AdviceIssued)
    assert advice.withdrawn and advice.withdrawn_at is not None
    kinds = sorted(o.kind for o in rows(ing, OutboxRow))
    assert kinds == ["advice", "withdrawal"]


def test_delete_retracts_and_withdraws(ing: Ingestor) -> None:
    ing.handle(fixture("oru_mg_low_icu.hl7"))
    ing.handle(fixture("oru_delete_d.hl7"))
    mg = rows(ing, LabResultRow, LabResultRow.kind == "serum-mg")
    assert len(mg) == 1 and mg[0].retracted
    assert rows(ing, AdviceIssued)[0].withdrawn
    assert count(ing, OutboxRow, OutboxRow.kind == "withdrawal") == 1


def test_no_unit_is_data_quality_only(ing: Ingestor) -> None:
    ing.handle(fixture("oru_no_unit.hl7"))
    (result,) = rows(ing, LabResultRow)
    assert result.reason_code == "unit-uncertain" and not result.usable
    assert advice_rules(ing) == ["mg-data-quality"]


def test_preliminary_result_fires_no_mg_rule(ing: Ingestor) -> None:
    ing.handle(fixture("oru_preliminary_p.hl7"))
    (result,) = rows(ing, LabResultRow)
    assert result.status == "preliminary" and result.reason_code == "status"
    assert "admission-u-shape" not in advice_rules(ing)


def test_training_message_is_evaluated_but_sends_nothing(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_training_T.hl7"))
    assert out.code == "AA" and segment(out.ack, "MSH")[10] == "T"  # type: ignore[index]
    advice = rows(ing, AdviceIssued)
    assert advice and all(a.test for a in advice)
    assert outbox_count(ing) == 0


def test_backlog_result_is_late_and_not_sent(db_url: str) -> None:
    ing = make_ingestor(db_url, clock=lambda: ARRIVAL + timedelta(days=3))
    ing.handle(fixture("oru_mg_low_icu.hl7"))
    advice = rows(ing, AdviceIssued)
    assert advice and all(a.late for a in advice)
    assert advice[0].evaluated_at == datetime(2024, 5, 10, 8, tzinfo=UTC)
    assert outbox_count(ing) == 0


def test_shadow_mode_records_but_sends_nothing(db_url: str) -> None:
    ing = make_ingestor(db_url, CDS_SHADOW="1")
    ing.handle(fixture("oru_mg_low_icu.hl7"))
    assert rows(ing, AdviceIssued)[0].shadow and outbox_count(ing) == 0


def test_local_code_in_mmol_and_emergency_visit(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_local_code_mmol.hl7"))
    (result,) = rows(ing, LabResultRow)
    assert out.code == "AA" and result.code_system == "99LAB" and result.original_unit == "mmol/L"
    assert result.value == pytest.approx(0.55 * 2.4305)
    assert advice_rules(ing) == ["admission-u-shape"]


def test_two_patients_in_one_message(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_two_patients.hl7"))
    assert out.code == "AA" and len({r.patient_id for r in rows(ing, LabResultRow)}) == 2
    assert len(out.advice) == 2


@pytest.mark.parametrize(
    ("name", "code", "raw_kept"),
    [("oru_glucose_only.hl7", "AA", False), ("adt_a31_ignored.hl7", "AA", False),
     ("orm_unsupported.hl7", "AR", True), ("oru_undecodable.hl7", "AE", True)],
)  # fmt: skip
def test_messages_not_applied(ing: Ingestor, name: str, code: str, raw_kept: bool) -> None:
    out = ing.handle(fixture(name))
    assert out.code == code and msa(out.ack)[2] == (fixture(name).split(b"|")[9].decode())
    (msg,) = rows(ing, Hl7Message)
    assert (msg.raw is not None) is raw_kept and count(ing, LabResultRow) == 0


def test_non_hl7_payload_is_ar(ing: Ingestor) -> None:
    out = ing.handle(b'{"resourceType": "Observation"}')
    assert out.code == "AR" and msa(out.ack)[1:3] == ["AR", ""]
    assert segment(out.ack, "MSH")[2] == "MG-AKI-CDS"  # type: ignore[index]


def test_latin1_by_msh18(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_latin1_msh18.hl7"))
    assert out.code == "AA" and out.codec == "latin-1"
    assert "Müller" in (rows(ing, Hl7Message)[0].raw or "")


def test_enhanced_mode_commit_ack(ing: Ingestor) -> None:
    out = ing.handle(fixture("oru_enhanced_al.hl7"))
    assert msa(out.ack)[1] == "CA" and out.send


def test_missing_control_id_and_missing_pid(ing: Ingestor) -> None:
    no_id = fixture("oru_mg_low_icu.hl7").replace(b"MSG-MG-LOW-1", b"")
    assert ing.handle(no_id).code == "AE"
    no_pid = b"\r".join(
        s for s in fixture("oru_mg_low_icu.hl7").split(b"\r") if not s.startswith(b"PID")
    )
    out = ing.handle(no_pid.replace(b"MSG-MG-LOW-1", b"MSG-NO-PID"))
    assert out.code == "AE" and (segment(out.ack, "ERR") or [""] * 4)[3].startswith("100^")
    assert count(ing, LabResultRow) == 0


def test_oversized_message_is_ar(db_url: str) -> None:
    ing = make_ingestor(db_url, CDS_MAX_BODY_BYTES="200")
    out = ing.handle(fixture("oru_mg_low_icu.hl7"))
    assert out.code == "AR" and msa(out.ack)[2] == "MSG-MG-LOW-1" and count(ing, LabResultRow) == 0


@pytest.mark.parametrize("sep", [b"\r", b"\n", b"\r\n"])
def test_corpus_is_acknowledged(ing: Ingestor, sep: bytes) -> None:
    for path in sorted(CORPUS.glob("*.hl7")):
        out = ing.handle(path.read_bytes().replace(b"\r\n", b"\r").replace(b"\r", sep))
        assert out.code == "AA", path.name
        assert msa(out.ack)[1] in ("AA", "CA")
