"""HL7 v2 context as feeds send it: PV1-3 ICU names without a site file, medications given
(RXA in RAS^O17 / ORU^R01) in the store, and the specimen of a result (SPM-4, OBR-15)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from cds_service.clinical import model as m
from cds_service.events.ingest import Ingestor
from cds_service.store import dispose_engine
from cds_service.store.events_models import (
    AdministrationRow,
    AdviceIssued,
    IcuStayRow,
    LabResultRow,
)
from tests.hl7support import ARRIVAL, count, fixture, make_ingestor, msa, rows

WEIGHT = b"OBX|4|NM|29463-7^Body weight^LN||70|kg^kilogram^UCUM||N|||F|||20240510080000\r"


@pytest.fixture
def bare(db_url: str) -> Iterator[Ingestor]:
    """An Ingestor under ``make run`` defaults: no site mapping file."""
    ingestor = make_ingestor(db_url, CDS_SITE_MAPPINGS="")
    assert ingestor.deps.knowledge.site.source_file == ""
    yield ingestor
    dispose_engine(db_url)


def oru(mg: str = "1.5", control: str = "MSG-MG-LOW-1") -> bytes:
    """The low-Mg ORU (MICU in PV1-3, creatinine 0.9) with Mg ``mg`` and a body weight."""
    raw = fixture("oru_mg_low_icu.hl7").replace(b"||1.2|mg/dL", f"||{mg}|mg/dL".encode())
    return raw.replace(b"MSG-MG-LOW-1", control.encode()).rstrip(b"\r") + b"\r" + WEIGHT


def advice(ing: Ingestor) -> AdviceIssued:
    (row,) = [a for a in rows(ing, AdviceIssued) if a.direction == "low"]
    return row


def test_adt_micu_and_oru_mg_1_5_give_icu_repletion_without_a_site_file(bare: Ingestor) -> None:
    adt = fixture("adt_a01_icu.hl7").replace(b"MRN2001", b"MRN1001").replace(b"V6001", b"V5001")
    assert bare.handle(adt).code == "AA"
    (stay,) = rows(bare, IcuStayRow)
    assert stay.unit == "MICU" and stay.end is None
    out = bare.handle(oru("1.5"))
    assert out.code == "AA", out.ack
    low = advice(bare)
    assert {"icu-admission-low", "icu-hypomagnesemia-repletion"} <= set(low.rules)
    assert "withheld" not in low.detail  # adult, renal data and weight known: a dose is suggested
    assert "5.9 g" in low.detail["detail"]


@pytest.mark.parametrize("unit", [b"ICU 3 North", b"MICU-2", b"\xe9\x87\x8d\xe7\x97\x87\xe7\x9b\x91\xe6\x8a\xa4\xe5\xae\xa4"])
def test_pv1_3_icu_names_open_a_stay_from_the_result(bare: Ingestor, unit: bytes) -> None:
    raw = oru().replace(b"PV1|1|I|MICU^12^A", b"PV1|1|I|" + unit + b"^12^A")
    assert bare.handle(raw).code == "AA"
    (stay,) = rows(bare, IcuStayRow)
    assert stay.unit == unit.decode() and stay.source == "ORU PV1"


def test_step_down_unit_is_no_icu(bare: Ingestor) -> None:
    raw = oru().replace(b"PV1|1|I|MICU^12^A", b"PV1|1|I|Neuro Stepdown^12^A")
    assert bare.handle(raw).code == "AA"
    assert count(bare, IcuStayRow) == 0
    assert all("icu-hypomagnesemia-repletion" not in a.rules for a in rows(bare, AdviceIssued))


def test_ras_o17_magnesium_given_is_stored_and_withholds_the_next_suggestion(bare: Ingestor) -> None:
    ras = bare.handle(fixture("ras_o17_magnesium.hl7"))
    assert ras.code == "AA" and msa(ras.ack)[1:3] == ["AA", "MSG-RAS-MG-1"]
    (given,) = rows(bare, AdministrationRow)  # acetaminophen is in no value set: not kept
    assert (given.system, given.code, given.status, given.amount) == (
        "http://www.nlm.nih.gov/research/umls/rxnorm", "6585", "completed", "2 g"
    )
    assert given.time == datetime(2024, 5, 10, 6, tzinfo=UTC)
    assert count(bare, AdviceIssued) == 0  # a dose given is no trigger
    assert bare.handle(oru("1.5")).code == "AA"
    low = advice(bare)
    assert "icu-hypomagnesemia-repletion" in low.rules
    assert any("mg-active" in w["conditions"] for w in low.detail["withheld"])


def test_the_same_patient_without_the_dose_gets_the_suggestion(bare: Ingestor) -> None:
    assert bare.handle(oru("1.5")).code == "AA"
    assert "withheld" not in advice(bare).detail


@pytest.mark.parametrize(("status", "withheld"), [("RE", False), ("CP", True)])
def test_rxa_inside_an_oru_counts_and_a_refused_dose_does_not(
    bare: Ingestor, status: str, withheld: bool
) -> None:
    fields = ["RXA", "0", "1", "20240510070000", "", "6585^Magnesium Sulfate^RXNORM", "2", "g"]
    rxa = "|".join([*fields, *[""] * 12, status, "A"]).encode() + b"\r"
    assert bare.handle(oru("1.5") + rxa).code == "AA"
    (dose,) = rows(bare, AdministrationRow)
    assert dose.status == ("completed" if withheld else "not-done")
    assert ("withheld" in advice(bare).detail) is withheld


def test_rxa_delete_action_removes_the_dose(bare: Ingestor) -> None:
    bare.handle(fixture("ras_o17_magnesium.hl7"))
    undo = (
        fixture("ras_o17_magnesium.hl7")
        .replace(b"MSG-RAS-MG-1", b"MSG-RAS-MG-1-D")
        .replace(b"|CP|A\r", b"|CP|D\r")
    )
    assert bare.handle(undo).code == "AA"
    assert count(bare, AdministrationRow) == 0


@pytest.mark.parametrize("name", ["oru_mg_urine_spm.hl7", "oru_mg_urine_obr15_v23.hl7"])
def test_a_serum_code_on_a_urine_specimen_is_data_quality_only(bare: Ingestor, name: str) -> None:
    out = bare.handle(fixture(name))
    assert out.code == "AA", out.ack
    (result,) = rows(bare, LabResultRow)
    assert (result.kind, result.usable, result.reason_code) == (
        m.SERUM_MG, False, m.SPECIMEN_NOT_SERUM
    )
    assert result.specimen == "Urine"
    (card,) = rows(bare, AdviceIssued)
    assert card.rule_id == "mg-data-quality" and card.rules == ["mg-data-quality"]
    assert "not serum or plasma" in card.summary and "(Urine)" in card.summary


def test_an_ionized_result_on_whole_blood_is_usable(bare: Ingestor) -> None:
    raw = (
        fixture("oru_mg_urine_spm.hl7")
        .replace(b"19123-9^Magnesium [Mass/volume] in Serum or Plasma^LN||1.2|mg/dL", b"2600-5^Magnesium.ionized^LN||0.45|mmol/L")
        .replace(b"UR^Urine^HL70487", b"WB^Whole blood^HL70487")
    )
    assert bare.handle(raw).code == "AA"
    (result,) = rows(bare, LabResultRow)
    assert (result.kind, result.usable) == (m.IONIZED_MG, True)
    serum = fixture("oru_mg_urine_spm.hl7").replace(b"UR^Urine", b"WB^Whole blood").replace(
        b"MSG-MG-URINE-SPM", b"MSG-MG-WB-SPM"
    )
    assert bare.handle(serum).code == "AA"
    wb = [r for r in rows(bare, LabResultRow) if r.kind == m.SERUM_MG]
    assert [(r.usable, r.reason_code) for r in wb] == [(False, m.SPECIMEN_NOT_SERUM)]


def test_retention_purges_old_doses(bare: Ingestor) -> None:
    from datetime import timedelta

    from cds_service.events.retention import purge_events

    bare.handle(fixture("ras_o17_magnesium.hl7"))
    assert purge_events(bare.engine, 400, ARRIVAL)["medication_administration"] == 0
    assert purge_events(bare.engine, 400, ARRIVAL + timedelta(days=401))[
        "medication_administration"
    ] == 1
