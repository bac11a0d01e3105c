"""A 5-patient slice of the MIMIC-IV demo replayed as ADT + ORU over MLLP (bench/make_replay.py)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bench.burden import burden_report, markdown
from bench.make_replay import messages, mg_counts
from cds_service.events.ingest import Ingestor
from cds_service.events.mllp import MllpServer
from cds_service.events.mllp_frames import FrameReader, TooLarge, frame
from cds_service.events.service import build_ingestor
from cds_service.store import dispose_engine
from cds_service.store.events_models import (
    AdviceIssued,
    EncounterRow,
    IcuStayRow,
    LabResultRow,
    OutboxRow,
    Patient,
)
from tests.hl7support import MIMIC, msa, settings_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not MIMIC.exists(), reason="MIMIC-IV demo extract not present"),
]
PATIENTS = 5


@dataclass
class Replay:
    """The slice after the replay: the ingestor (its store) and the ACKs."""

    ingestor: Ingestor
    messages: list[bytes]
    acks: list[str]


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    """The slice sent pipelined over MLLP, advice queued on the hl7 channel (not delivered)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('replay') / 'replay.db'}"
    ingestor = build_ingestor(settings_for(url, CDS_OUTBOUND="hl7"))
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
    yield Replay(ingestor, msgs, acks)
    dispose_engine(url)


def test_five_patient_replay(replay: Replay) -> None:
    ingestor, msgs, acks = replay.ingestor, replay.messages, replay.acks
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


def test_burden_report_is_computed_from_the_store(replay: Replay) -> None:
    """The alert-burden report by rule (bench/burden.py): its rows, totals and rates."""
    engine, knowledge = replay.ingestor.engine, replay.ingestor.deps.knowledge
    report = burden_report(engine, knowledge)
    with Session(engine) as session:
        recorded = dict(session.execute(
            select(AdviceIssued.rule_id, func.count()).group_by(AdviceIssued.rule_id)).all())  # fmt: skip
        queued = session.scalar(select(func.count(func.distinct(OutboxRow.advice_id))))
        mg = session.scalar(select(func.count()).where(LabResultRow.kind == "serum-mg"))
    assert report.patients == PATIENTS and report.patient_days > 0
    assert {r.rule: r.recorded for r in report.rules} == recorded
    assert all(r.recorded == sum(r.by_status.values()) for r in report.rules)
    assert report.pushed == queued and 0 < report.pushed < report.recorded
    assert {r.rule for r in report.rules if r.by_status.get("not-pushed")} <= {
        "reference-range", "monitoring-gap", "mg-trend", "mg-data-quality"}  # fmt: skip
    by_rule = {r.rule: r for r in report.rules}
    assert by_rule["reference-range"].candidates == mg  # the serum Mg results it reads
    assert all(n <= report.pushed for _, n in report.what_if)
    text = markdown(report)
    assert f"**{report.pushed:,}**" in text and "after / 100 patient-days" in text
    assert f"| `aki-kdigo` | {by_rule['aki-kdigo'].candidates:,} |" in text
    # computed from the store: a pushed advice recorded as a repeat lowers the count by one
    lead = next(r.rule for r in report.rules if r.pushed)
    with Session(engine) as session, session.begin():
        first = session.scalar(select(AdviceIssued.id).where(
            AdviceIssued.rule_id == lead, AdviceIssued.push_status == "pushed").limit(1))  # fmt: skip
        session.execute(update(AdviceIssued).where(AdviceIssued.id == first).values(push_status="repeat"))
    again = burden_report(engine, knowledge)
    assert {r.rule: r.pushed for r in again.rules}[lead] == by_rule[lead].pushed - 1
    assert again.pushed == report.pushed - 1 and again.patient_days == report.patient_days
