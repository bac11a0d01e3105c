"""A 5-patient slice of the MIMIC-IV demo replayed as ADT + ORU over MLLP (bench/make_replay.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.make_replay import messages, mg_counts
from cds_service.events.mllp import MllpServer
from cds_service.events.mllp_frames import FrameReader, TooLarge, frame
from cds_service.events.service import build_ingestor
from cds_service.store import dispose_engine
from cds_service.store.events_models import (
    AdviceIssued,
    EncounterRow,
    IcuStayRow,
    LabResultRow,
    Patient,
)
from tests.hl7support import MIMIC, msa, settings_for

pytestmark = pytest.mark.integration
PATIENTS = 5


@pytest.mark.skipif(not MIMIC.exists(), reason="MIMIC-IV demo extract not present")
def test_five_patient_replay(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    ingestor = build_ingestor(settings_for(url, CDS_OUTBOUND=""))
    msgs = messages(PATIENTS)
    acks: list[str] = []

    async def main() -> None:
        server = MllpServer(ingestor, ("127.0.0.0/8",), max_bytes=1 << 20)
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(frame(m) for m in msgs))
        frames = FrameReader(1 << 20)
        while len(acks) < len(msgs):
            data = await asyncio.wait_for(reader.read(65536), 60)
            assert data, "connection closed early"
            acks.extend(f.decode() for f in frames.feed(data) if not isinstance(f, TooLarge))
        writer.close()
        await server.stop()

    asyncio.run(main())
    assert len(acks) == len(msgs)
    assert Counter(msa(a)[1] for a in acks) == {"AA": len(msgs)}
    assert [msa(a)[2] for a in acks] == [f"MIMIC-{n}" for n in range(1, len(msgs) + 1)]
    expected = mg_counts(PATIENTS)
    with Session(ingestor.engine) as session:
        got = dict(session.execute(
            select(Patient.id_value, func.count(LabResultRow.id))
            .join(LabResultRow, LabResultRow.patient_id == Patient.id)
            .where(LabResultRow.code == "19123-9").group_by(Patient.id_value)
        ).all())  # fmt: skip
        assert got == expected
        assert session.scalar(select(func.count()).select_from(EncounterRow)) > 0
        assert session.scalar(select(func.count()).select_from(IcuStayRow)) > 0
        assert session.scalar(select(func.count()).select_from(AdviceIssued)) > 0
    dispose_engine(url)
