"""MLLP framing fed byte by byte, and ACK construction (original and enhanced modes)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_service.events.hl7_ack import AckError, ack_wanted, build_ack, is_enhanced
from cds_service.events.hl7_er7 import read_msh
from cds_service.events.mllp_frames import END, START, FrameReader, TooLarge, frame

NOW = datetime(2024, 5, 10, 9, 30, tzinfo=UTC)
MSG = b"MSH|^~\\&|LIS|LAB|CDS|HOSP|20240510||ORU^R01|C1|P|2.5.1\rPID|1||1^^^H^MR"


def test_one_frame_split_at_every_byte() -> None:
    data = frame(MSG)
    for cut in range(1, len(data)):
        reader = FrameReader(1000)
        assert reader.feed(data[:cut]) + reader.feed(data[cut:]) == [MSG]


def test_end_marker_split_between_reads() -> None:
    reader = FrameReader(1000)
    assert reader.feed(START + MSG + b"\x1c") == []
    assert reader.feed(b"\r") == [MSG]


def test_coalesced_frames_and_garbage_between() -> None:
    reader = FrameReader(1000)
    data = b"noise\r\n" + frame(b"A") + b"\x00\xff junk" + frame(b"B") + b"\n" + frame(b"C")
    assert reader.feed(data) == [b"A", b"B", b"C"]
    assert reader.skipped == len(b"noise\r\n") + len(b"\x00\xff junk") + 1


def test_restart_inside_unfinished_frame() -> None:
    reader = FrameReader(1000)
    assert reader.feed(START + b"half a mess" + START + b"whole" + END) == [b"whole"]


def test_too_large() -> None:
    reader = FrameReader(10)
    out = reader.feed(START + b"x" * 11)
    assert len(out) == 1 and isinstance(out[0], TooLarge)
    reader = FrameReader(10)
    out = reader.feed(frame(b"y" * 11))
    assert isinstance(out[0], TooLarge) and out[0].head.startswith(b"y")


def test_original_mode_ack_swaps_apps_and_keeps_version() -> None:
    msh = read_msh(MSG.decode().split("\r")[0])
    ack = build_ack(msh, "AA", NOW)
    header, msa = (s.split("|") for s in ack.split("\r"))
    assert header[2:6] == ["CDS", "HOSP", "LIS", "LAB"]
    assert (
        header[8] == "ACK^R01^ACK"
        and header[9] != "C1"
        and header[10] == "P"
        and header[11] == "2.5.1"
    )
    assert msa == ["MSA", "AA", "C1"]
    assert build_ack(msh, "AA", NOW).split("\r")[0].split("|")[9] != header[9]  # new control id


def test_error_segment_has_code_severity_and_text() -> None:
    msh = read_msh(MSG.decode().split("\r")[0])
    ack = build_ack(msh, "AE", NOW, [AckError("102", "OBX^6^5", "OBX-5 is not a valid NM value")])
    err = ack.split("\r")[2].split("|")
    assert err[0] == "ERR" and err[2] == "OBX^6^5" and err[3] == "102^Data type error^HL70357"
    assert err[4] == "E" and err[8] == "OBX-5 is not a valid NM value"


def test_old_versions_also_get_err1_and_msa3() -> None:
    msh = read_msh("MSH|^~\\&|LIS|LAB|CDS|HOSP|20240510||ORU^R01|C1|P|2.3")
    ack = build_ack(msh, "AE", NOW, [AckError("101", "PID^2^3", "PID-3 missing")])
    assert ack.split("\r")[1] == "MSA|AE|C1|PID-3 missing"
    assert ack.split("\r")[2].split("|")[1] == "PID^2^3^101&Required field missing&HL70357"


def test_not_hl7_gets_our_msh_and_empty_msa2() -> None:
    ack = build_ack(None, "AR", NOW, [AckError("200", "", "not an HL7 v2 message")])
    header, msa, err = (s.split("|") for s in ack.split("\r"))
    assert header[2] == "MG-AKI-CDS" and msa == ["MSA", "AR", ""] and err[3].startswith("200^")


def test_error_text_is_escaped() -> None:
    msh = read_msh(MSG.decode().split("\r")[0])
    ack = build_ack(msh, "AE", NOW, [AckError("207", "", "a|b^c")])
    assert ack.split("\r")[2].split("|")[8] == "a\\F\\b\\S\\c"


@pytest.mark.parametrize(
    ("mode", "code", "sent", "msa1"),
    [("AL", "AA", True, "CA"), ("AL", "AE", True, "CE"), ("AL", "AR", True, "CR"),
     ("NE", "AA", False, "CA"), ("NE", "AE", False, "CE"),
     ("ER", "AA", False, "CA"), ("ER", "AE", True, "CE"),
     ("SU", "AA", True, "CA"), ("SU", "AR", False, "CR")],
)  # fmt: skip
def test_enhanced_mode(mode: str, code: str, sent: bool, msa1: str) -> None:
    msh = read_msh(f"MSH|^~\\&|LIS|LAB|CDS|HOSP|20240510||ORU^R01|C1|P|2.5.1|||{mode}|NE")
    assert is_enhanced(msh)
    assert ack_wanted(msh, code) is sent
    assert build_ack(msh, code, NOW).split("\r")[1].split("|")[1] == msa1


def test_original_mode_always_acknowledges() -> None:
    msh = read_msh("MSH|^~\\&|LIS|LAB|CDS|HOSP|20240510||ORU^R01|C1|P|2.5.1")
    assert not is_enhanced(msh) and all(ack_wanted(msh, c) for c in ("AA", "AE", "AR"))
