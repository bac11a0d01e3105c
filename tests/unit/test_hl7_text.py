"""ER7 text: MSH sniffing, decoding by MSH-18, separators, escapes, TS/NM/SN values, the scan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from cds_service.clinical.fhir_labs import lab_table
from cds_service.events import hl7_scan as S
from cds_service.events.hl7_config import build_maps, load_hl7_maps
from cds_service.events.hl7_er7 import (
    NotHl7,
    Undecodable,
    decode,
    normalise,
    read_msh,
    sniff_msh,
    unescape,
)
from cds_service.events.hl7_values import parse_nm, parse_sn, parse_ts, ts_to_iso
from cds_service.rules.loader import MappingError
from cds_service.rules.model import Knowledge
from tests.hl7support import CORPUS, FIXTURES, ROOT, fixture

MAPS = load_hl7_maps(ROOT / "mappings" / "hl7v2.yaml")


def test_msh_fields_and_message_type() -> None:
    msh = sniff_msh(fixture("oru_mg_low_icu.hl7"))
    assert msh.get(3) == "LIS" and msh.get(4) == "GENHOSP"
    assert msh.control_id == "MSG-MG-LOW-1"
    assert msh.message_type == "ORU^R01"
    assert msh.version == "2.5.1"


@pytest.mark.parametrize(
    "payload", [b"", b"hello world", b"GET / HTTP/1.1\r\n\r\n", b"MSH", b"MSH|^~|x", b"MSHa^~\\&|"]
)
def test_not_hl7(payload: bytes) -> None:
    with pytest.raises(NotHl7):
        sniff_msh(payload)


def test_truncation_character_is_dropped_for_hl7apy() -> None:
    msh = read_msh("MSH|^~\\&#|A|B|C|D|20240101||ORU^R01|1|P|2.5.1")
    assert msh.seps.msh2 == "^~\\&" and msh.control_id == "1"


@pytest.mark.parametrize("sep", ["\r", "\n", "\r\n", "\n\r"])
def test_separators_normalised(sep: str) -> None:
    text = fixture("oru_mg_low_icu.hl7").decode().replace("\r", sep)
    assert normalise(text) == normalise(fixture("oru_mg_low_icu.hl7").decode())
    assert "\n" not in normalise(text)


def test_decode_by_msh18_and_undecodable_bytes() -> None:
    raw = fixture("oru_latin1_msh18.hl7")
    assert "Müller" in decode(raw, sniff_msh(raw), MAPS, "UTF-8")
    bad = fixture("oru_undecodable.hl7")
    with pytest.raises(Undecodable):
        decode(bad, sniff_msh(bad), MAPS, "UTF-8")
    assert "Müller" in decode(bad, sniff_msh(bad), MAPS, "latin-1")


def test_unescape() -> None:
    seps = read_msh("MSH|^~\\&|A").seps
    assert unescape("a\\T\\b\\S\\c\\F\\d\\R\\e\\E\\", seps) == "a&b^c|d~e\\"
    assert unescape("\\X41\\B", seps) == "AB"
    assert unescape("trailing\\", seps) == "trailing\\"


@pytest.mark.parametrize(
    ("value", "iso"),
    [
        ("20240510080000", "2024-05-10T08:00:00"),
        ("202405100800", "2024-05-10T08:00:00"),
        ("20240510", "2024-05-10"),
        ("20080818183002.1-0700", "2008-08-18T18:30:02.100000-07:00"),
        ("20141006064500+0700", "2014-10-06T06:45:00+07:00"),
        ("2024", None),
        ("202405", None),
        ("soon", None),
    ],
)
def test_ts(value: str, iso: str | None) -> None:
    assert ts_to_iso(value) == iso


def test_ts_without_zone_uses_site_zone_and_is_flagged() -> None:
    tz = timezone(timedelta(hours=8))
    at, no_zone = parse_ts("20240510080000", tz)
    assert at == datetime(2024, 5, 10, 8, tzinfo=tz) and no_zone
    at, no_zone = parse_ts("20240510080000+0000", tz)
    assert at == datetime(2024, 5, 10, 8, tzinfo=UTC) and not no_zone


def test_numbers() -> None:
    assert parse_nm(" 1.25 ") == 1.25 and parse_nm(".5") == 0.5 and parse_nm("-2") == -2
    assert parse_nm("abc") is None and parse_nm("1.2.3") is None and parse_nm("<1") is None
    assert parse_sn("<^1.0", "^") == (1.0, "<")
    assert parse_sn(">=^2", "^") == (2.0, ">=")
    assert parse_sn("^182", "^") == (182.0, None)
    assert parse_sn("=^1.5", "^") == (1.5, None)
    assert parse_sn("<0.10", "^") == (0.10, "<")
    assert parse_sn("^1^-^3", "^") is None and parse_sn("^1^:^128", "^") is None
    assert parse_sn("<>^1", "^") is None


def test_scan_finds_obx_of_interest(knowledge: Knowledge) -> None:
    table = lab_table(knowledge)

    def scan(name: str) -> S.Interest:
        text = normalise((FIXTURES / name).read_bytes().decode("utf-8"))
        segs = text.split("\r")
        return S.scan(segs, read_msh(segs[0]), MAPS, table)

    mg = scan("oru_mg_low_icu.hl7")
    assert mg.kind == S.ORU and len(mg.obx) == 2  # Mg and creatinine, not glucose
    assert scan("oru_local_code_mmol.hl7").kind == S.ORU  # 99LAB site code
    assert scan("oru_glucose_only.hl7").kind == S.IGNORE
    assert scan("adt_a01_icu.hl7") == S.Interest(S.ADT, "A01")
    assert scan("adt_a31_ignored.hl7").kind == S.IGNORE
    assert scan("orm_unsupported.hl7").kind == S.UNSUPPORTED


def test_corpus_scans_without_interest(knowledge: Knowledge) -> None:
    for path in sorted(CORPUS.glob("*.hl7")):
        text = normalise(path.read_bytes().decode("utf-8"))
        segs = text.split("\r")
        assert S.scan(segs, read_msh(segs[0]), MAPS, lab_table(knowledge)).kind == S.IGNORE


def test_real_mapping_file_loads() -> None:
    assert MAPS.system_uri("LN") == "http://loinc.org"
    assert MAPS.system_uri("i10") == "http://hl7.org/fhir/sid/icd-10-cm"
    assert MAPS.system_uri("99LAB") == "99LAB"
    assert MAPS.result_status["D"].action == "retract"
    assert MAPS.charsets["8859/1"] == "latin-1"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("coding_systems"), "coding_systems"),
        (
            lambda d: d["result_status"].update(Z={"status": "final", "action": "explode"}),
            "result_status.Z",
        ),
        (lambda d: d["charsets"].update(X="no-such-codec"), "charsets.X"),
        (lambda d: d["adt_events"].update(A99="teleport"), "adt_events.A99"),
        (lambda d: d["errors"].pop("internal"), "errors"),
    ],
)
def test_bad_mapping_names_file_and_field(change, message, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    data = yaml.safe_load((ROOT / "mappings" / "hl7v2.yaml").read_text())
    change(data)
    path = tmp_path / "hl7v2.yaml"
    with pytest.raises(MappingError, match=message) as err:
        build_maps(data, path)
    assert str(path) in str(err.value)
