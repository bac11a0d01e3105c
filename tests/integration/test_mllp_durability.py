"""Durability: ``kill -9`` the listener mid-stream; every message ACKed AA was stored and applied."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import Session

from cds_service.events.mllp_frames import FrameReader, TooLarge, frame
from cds_service.store.events_models import AdviceIssued, Hl7Message, LabResultRow
from tests.hl7support import fixture, listener, msa

pytestmark = pytest.mark.integration
TOTAL = 150


def message(n: int) -> bytes:
    raw = fixture("oru_mg_low_icu.hl7").replace(b"MSG-MG-LOW-1", f"DUR-{n}".encode())
    return raw.replace(b"MRN1001", f"DUR{n:04d}".encode())


async def stream(port: int, kill_after: int | None, proc: subprocess.Popen[str]) -> list[str]:
    """Send every message at once; collect ACKs (killing the listener after ``kill_after``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(frame(message(n)) for n in range(TOTAL)))
    await writer.drain()
    frames, acks = FrameReader(1 << 20), []
    while len(acks) < TOTAL:
        try:
            data = await asyncio.wait_for(reader.read(65536), 60)
        except ConnectionError:
            break
        if not data:
            break
        acks += [f.decode() for f in frames.feed(data) if not isinstance(f, TooLarge)]
        if kill_after is not None and len(acks) >= kill_after and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    writer.close()
    return acks


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'durable.db'}"
    with listener(url, CDS_SECRET="durability", CDS_OUTBOUND="hl7") as (proc, port):
        acks = asyncio.run(stream(port, 20, proc))
        proc.wait(10)
    acked = [msa(a)[2] for a in acks if msa(a)[1] == "AA"]
    assert 20 <= len(acked) < TOTAL, "the listener was killed mid-stream"
    engine = create_engine(url)
    with Session(engine) as session:
        for control_id in acked:
            row = session.scalar(select(Hl7Message).where(Hl7Message.control_id == control_id))
            assert row is not None and row.status == "AA", control_id
            results = session.scalar(select(func.count()).where(LabResultRow.message_id == row.id))
            assert results == 2, control_id  # Mg and creatinine applied
            assert session.scalar(select(func.count()).where(AdviceIssued.message_id == row.id))
    engine.dispose()
    with listener(url, CDS_SECRET="durability", CDS_OUTBOUND="hl7") as (
        proc,
        port,
    ):  # the sender re-sends everything not acknowledged
        again = asyncio.run(stream(port, None, proc))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert len(again) == TOTAL and all(msa(a)[1] == "AA" for a in again)
    before = {msa(a)[2]: a for a in acks}
    assert all(a == before[msa(a)[2]] for a in again if msa(a)[2] in before)  # same ACK again
    engine = create_engine(url)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Hl7Message)) == TOTAL
        assert session.scalar(select(func.count()).select_from(LabResultRow)) == 2 * TOTAL
    engine.dispose()
