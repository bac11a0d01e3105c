"""`cds-service purge`: one command applies CDS_RETENTION_DAYS to every table."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.cli import main
from cds_service.store import migrate, open_store


def test_purge_command_reports_every_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'cds.db'}"
    migrate(url)
    store = open_store(url, "k")
    store.record_cards("hook-1", "magnesium-aki-patient-view", "Patient/p1", [{
        "uuid": "00000000-0000-4000-8000-000000000001", "indicator": "warning",
        "source": {"topic": {"code": "admission-u-shape"}},
        "extension": {"magnesium-aki": {"rules": ["admission-u-shape"]}},
    }])  # fmt: skip
    monkeypatch.setenv("CDS_DATABASE_URL", url)
    monkeypatch.setenv("CDS_RETENTION_DAYS", "0")
    monkeypatch.setenv("CDS_SECRET", "k")
    assert main(["purge"]) == 0
    out = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert out["cds_card"] == "1"  # the card logged just now is older than 0 days
    assert {"hl7_message", "lab_result", "advice_issued", "outbox", "jwt_jti"} <= set(out)
    assert store.cards_for("hook-1") == []
