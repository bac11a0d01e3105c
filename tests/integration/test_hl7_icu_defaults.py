"""Acceptance (issue 8), HL7 v2: under ``make run`` defaults (no site mapping file), an ADT with
PV1-3 "MICU" and an ORU with serum Mg 1.5 mg/dL give the ICU repletion advice, end to end over
MLLP: ``cds-service mllp`` as a child process, an independent MLLP client, and the advisory
ORU^R01 at the HL7 destination."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds_service.store import dispose_engine, engine_for
from cds_service.store.events_models import AdviceIssued, IcuStayRow
from tests.hl7support import fixture, listener, msa
from tests.integration.test_mllp_outbound import recent, send
from tests.unit.mllp_receiver import Receiver

pytestmark = pytest.mark.integration
WEIGHT = b"OBX|4|NM|29463-7^Body weight^LN||70|kg^kilogram^UCUM||N|||F|||20240510080000\r"


def test_adt_micu_and_oru_mg_1_5_without_a_site_file_give_icu_repletion(tmp_path: Path) -> None:
    receiver = Receiver(["AA"])
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    now = datetime.now(UTC)
    admit = recent(fixture("adt_a01_icu.hl7"), now - timedelta(hours=10))
    admit = admit.replace(b"MRN2001", b"MRN1001").replace(b"V6001", b"V5001")
    assert b"PV1|1|I|MICU^" in admit
    result = fixture("oru_mg_low_icu.hl7").replace(b"||1.2|mg/dL", b"||1.5|mg/dL")
    result = recent(result.rstrip(b"\r") + b"\r" + WEIGHT, now - timedelta(hours=1))
    try:
        with listener(url, CDS_SITE_MAPPINGS="", CDS_SECRET="icu-defaults-secret-31", CDS_OUTBOUND="hl7",
                      CDS_HL7_OUTBOUND=f"127.0.0.1:{receiver.port}") as (proc, port):  # fmt: skip
            acks = asyncio.run(send(port, [admit, result]))
            assert [msa(a)[1] for a in acks] == ["AA", "AA"]
            deadline = time.monotonic() + 10
            while not any("Mg 1.5" in m for m in receiver.messages) and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.terminate()
            proc.wait(15)
        with Session(engine_for(url)) as session:
            stays = list(session.scalars(select(IcuStayRow)))
            advice = list(session.scalars(select(AdviceIssued)))
    finally:
        receiver.stop()
        dispose_engine(url)
    assert [s.unit for s in stays] == ["MICU"]  # PV1-3 "MICU" is an ICU with no site file
    low = [a for a in advice if "icu-hypomagnesemia-repletion" in a.rules]
    assert low and "withheld" not in low[0].detail
    advisories = [m for m in receiver.messages if "Mg 1.5" in m]
    assert advisories, f"no advisory reached the HL7 destination: {receiver.messages}"
    assert "5.9 g magnesium sulfate" in advisories[0]  # the repletion regimen, as the card says
