"""End to end over MLLP: a low Mg result in the ICU goes in, an advisory ORU^R01 comes out.

`cds-service mllp` runs as a child process with CDS_OUTBOUND=hl7; its delivery loop is
kicked by new advice and sends the advisory message to a local MLLP receiver.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cds_service.events.mllp_frames import FrameReader, frame
from tests.hl7support import fixture, listener, msa
from tests.unit.mllp_receiver import Receiver

pytestmark = pytest.mark.integration


def recent(raw: bytes, when: datetime) -> bytes:
    """The fixture with its 2024 timestamps moved to ``when`` (so the result is not late)."""
    stamp = when.strftime("%Y%m%d%H%M").encode()
    return re.sub(rb"202405(09|10)\d{4}", stamp, raw)


async def send(port: int, messages: list[bytes]) -> list[str]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    frames, acks = FrameReader(1 << 20), []
    for message in messages:
        writer.write(frame(message))
        await writer.drain()
        while True:
            got = [f.decode() for f in frames.feed(await asyncio.wait_for(reader.read(65536), 30))]
            if got:
                acks += got
                break
    writer.close()
    return acks


def test_low_mg_in_icu_sends_an_advisory_oru(tmp_path: Path) -> None:
    receiver = Receiver(["AA"])
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    try:
        with listener(url, CDS_SECRET="outbound", CDS_OUTBOUND="hl7",
                      CDS_HL7_OUTBOUND=f"127.0.0.1:{receiver.port}") as (proc, port):  # fmt: skip
            now = datetime.now(UTC)
            admit = recent(fixture("adt_a01_icu.hl7"), now - timedelta(hours=10))
            admit = admit.replace(b"MRN2001", b"MRN1001")  # the same patient as the result
            result = recent(fixture("oru_mg_low_icu.hl7"), now - timedelta(hours=1))
            acks = asyncio.run(send(port, [admit, result]))
            assert [msa(a)[1] for a in acks] == ["AA", "AA"]
            deadline = time.monotonic() + 10  # under the 15 s delivery period: the kick sends it
            while not any("Mg 1.2" in m for m in receiver.messages) and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.terminate()
            proc.wait(15)
    finally:
        receiver.stop()
    low = [m for m in receiver.messages if "Mg 1.2" in m]
    assert low, f"no advisory about the Mg result reached the HL7 destination: {receiver.messages}"
    segments = low[0].split("\r")
    assert segments[0].split("|")[8].startswith("ORU^R01")
    assert segments[1].startswith("PID|") and "MRN1001" in segments[1]  # the stored identifier
    assert any(re.match(r"OBX\|\d+\|TX\|", seg) for seg in segments)
    assert all("MRN" not in m or "MRN1001" in m for m in receiver.messages)
