"""``cds-service outbox``: the delivery table (no patient identifiers) and ``--deliver``."""

from __future__ import annotations

import pytest

from cds_service.cli import main
from cds_service.store import Store
from tests.unit.mllp_receiver import Receiver
from tests.unit.test_outbound import seed


def test_outbox_lists_and_delivers(
    store: Store, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store, channels=("fhir", "hl7"))
    rcv = Receiver(["AA"])
    try:
        monkeypatch.setenv("CDS_DATABASE_URL", db_url)
        monkeypatch.setenv("CDS_OUTBOUND", "fhir,hl7")
        monkeypatch.setenv("CDS_HL7_OUTBOUND", f"127.0.0.1:{rcv.port}")
        assert main(["outbox"]) == 0
        listed = capsys.readouterr().out
        assert listed.splitlines()[0].split()[:4] == ["id", "channel", "kind", "status"]
        assert listed.count("pending") == 2 and "p1" not in listed
        assert main(["outbox", "--deliver"]) == 0  # hl7 is accepted; fhir has no CDS_FHIR_BASE
        out = capsys.readouterr().out
        assert "delivery pass:" in out and "pending=1" in out and "sent=1" in out
        assert "CDS_FHIR_BASE is not configured" in out
        assert main(["outbox", "--status", "sent"]) == 0
        sent = capsys.readouterr().out.splitlines()
        assert len(sent) == 3 and sent[1].split()[1:4] == ["hl7", "advice", "sent"]
        assert sent[2].startswith("advice recorded: 1 (pushed 1, repeat 0, not-pushed 0, held 0)")
    finally:
        rcv.stop()
