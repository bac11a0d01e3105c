"""``cds-service evaluate --format text``: every card in full for a terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.test_cli import MIMIC, run, with_weight


def test_text_shows_summary_detail_suggestion_and_dose(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """MIMIC-IV 10002428 with a 70 kg weight at 20:00: the low card offers MgSO4 5.9 g/day."""
    src = with_weight(MIMIC / "10002428.json", 70, "2156-04-12T18:00:00Z", tmp_path)
    code, out, _ = run(capsys, str(src), "--now", "2156-04-12T20:00:00Z", "--format", "text")
    assert code == 0
    assert "  [warning] Admission Mg 1.4 mg/dL (< 1.5 mg/dL): associated with higher AKI risk" in out
    assert "rules: admission-u-shape, icu-admission-low, icu-hypomagnesemia-repletion" in out
    flat = " ".join(out.split())
    # the detail, as plain text: context, what to do, evidence with its link, the association caveat
    assert "earliest serum Mg from 12 h before to 24 h after admission" in flat
    assert "What to do: Consider magnesium 48 mEq (5.9 g magnesium sulfate) IV in 250 mL" in flat
    assert "Evidence: Barbosa 2016, randomized controlled trial, N=143" in flat
    assert "[49] <https://doi.org/10.1007/s00134-016-4276-9>" in flat
    assert "not proof of cause" in flat
    assert "**" not in out and "###" not in out and "](" not in out
    # the suggestion with its dose, read from the MedicationRequest
    assert "suggestion: Magnesium sulfate 5.9 g IV over 24 h, daily for 3 days (recommended)" in out
    assert "dose: 5.9 g at 4.1 mg/min IV for 3 d" in flat
