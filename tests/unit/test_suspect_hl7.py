"""Suspect results over HL7 v2: ORU^R01 sequences through the Ingestor and the patient store.

The clinician reads the advice the store issues (pushed as an advisory ORU / Communication)
and, over ``POST /hl7v2`` with JSON, the same advice as cards: both are checked here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cds_service.events.ingest import Ingestor
from cds_service.events.messages import Outcome
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.store import dispose_engine
from cds_service.store.events_models import AdviceIssued
from tests.hl7support import ROOT, make_ingestor, msa, rows
from tests.unit.suspect_support import EDGES, assert_reads

DAY = datetime(2024, 5, 10, tzinfo=UTC)


def oru(control_id: str, at: datetime, mg: float | None, creatinine: float | None = None) -> bytes:
    """An ORU^R01 for the ICU patient: serum Mg and/or creatinine collected at ``at`` (UTC)."""
    ts = at.strftime("%Y%m%d%H%M%S") + "+0000"
    segments = [
        f"MSH|^~\\&|LIS|GENHOSP|CDS|GENHOSP|{ts}||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        "PID|1||MRN4242^^^GENHOSP^MR||Testpatient^Bea||19600101|F",
        "PV1|1|I|MICU^3^A^GENHOSP||||||||||||||||V4242|||||||||||||||||||||||||20240508080000+0000",
        f"OBR|1|ORD-{control_id}^CPOE|FIL-{control_id}^LIS|80048^Basic metabolic panel^C4|||{ts}",
    ]
    if mg is not None:
        segments.append(
            f"OBX|1|NM|19123-9^Magnesium [Mass/volume] in Serum or Plasma^LN||{mg}|mg/dL|1.7-2.5||||F|||{ts}"
        )
    if creatinine is not None:
        segments.append(
            f"OBX|2|NM|2160-0^Creatinine [Mass/volume] in Serum or Plasma^LN||{creatinine}|mg/dL|0.6-1.2||||F|||{ts}"
        )
    return "\r".join(segments).encode() + b"\r"


def send(ing: Ingestor, message: bytes, arrival: datetime) -> list[dict[str, Any]]:
    """Ingest one message arriving at ``arrival``; the cards of the advice it issued."""
    ing.clock = lambda: arrival
    out: Outcome = ing.handle(message)
    assert out.code == "AA", out.ack
    assert msa(out.ack)[1] == "AA"
    renderer = CardRenderer(ing.deps.knowledge, OrderCodes(ROOT / "mappings" / "orders.yaml"))
    return [
        c for ev in out.evaluations for c in renderer.cards(ev.advice, ev.snapshot, "en", ev.now)
    ]


def text(cards: list[dict[str, Any]]) -> str:
    return "\n".join(
        [c["summary"] for c in cards] + [c["detail"] for c in cards]
        + [s["label"] for c in cards for s in c.get("suggestions", [])]
    )  # fmt: skip


def suggested(cards: list[dict[str, Any]], resource_type: str) -> list[dict[str, Any]]:
    return [a["resource"] for c in cards for s in c.get("suggestions", []) for a in s["actions"]
            if a["resource"]["resourceType"] == resource_type]  # fmt: skip


def test_issue_case_diluted_draw_then_repeat(ing: Ingestor) -> None:
    """Mg 2.4 -> 0.9 and creatinine 2.5 -> 0.9 in one draw, back to 2.8 / 2.7 two hours later."""
    send(ing, oru("SUS-1", DAY.replace(hour=4), 2.4, 2.5), DAY.replace(hour=4, minute=20))
    at_draw = send(ing, oru("SUS-2", DAY.replace(hour=8), 0.9, 0.9), DAY.replace(hour=8, minute=20))
    assert all(c["indicator"] != "critical" for c in at_draw)
    assert "Urgent repletion" not in text(at_draw) and suggested(at_draw, "MedicationRequest") == []
    (card,) = [c for c in at_draw if c["summary"].startswith("Suspect serum Mg 0.9 mg/dL")]
    assert "possible dilution: sample drawn near an infusion" in card["summary"]
    assert "2.4 mg/dL (2024-05-10 04:00 UTC)" in card["detail"]
    assert (
        "creatinine 0.9 mg/dL (2024-05-10 08:00 UTC) is 64 % lower than 2.5 mg/dL" in card["detail"]
    )
    (repeat,) = suggested(at_draw, "ServiceRequest")
    assert repeat["code"]["coding"][0]["code"] == "19123-9"
    assert card["extension"]["magnesium-aki"]["magnesium"]["value_mg_dl"] == 0.9

    after = send(ing, oru("SUS-3", DAY.replace(hour=10), 2.8, 2.7), DAY.replace(hour=10, minute=20))
    assert "AKI stage" not in text(after) and "Suspect " not in text(after)
    assert sum(c["detail"].count("Excluded as spurious") for c in after) == 1
    issued = rows(ing, AdviceIssued)
    assert not any(a.rule_id == "aki-kdigo" for a in issued)
    assert not any(
        a.rule_id in ("severe-hypomagnesemia", "icu-hypomagnesemia-repletion") for a in issued
    )
    notes = [a for a in issued if "Excluded as spurious" in str(a.detail["detail"])]
    assert len(notes) == 1  # recorded once, with the refuting result
    # evidence.md §8: data quality is pushed for the suspect draw (repeat it), not for the note
    assert [(a.rule_id, a.push_status) for a in issued] == [
        ("mg-data-quality", "pushed"),  # the diluted draw: repeat the sample
        ("reference-range", "not-pushed"),  # Mg 2.8, with the note on the spurious results
    ]


def test_jump_is_suspect_and_toxic_leads_with_the_repeat(ing: Ingestor) -> None:
    """HL7 v2 carries no magnesium administrations here: a 2.0 mg/dL jump in 24 h is suspect."""
    send(ing, oru("JMP-1", DAY.replace(hour=1), 2.2), DAY.replace(hour=1, minute=10))
    cards = send(ing, oru("JMP-2", DAY.replace(hour=9), 6.0), DAY.replace(hour=9, minute=10))
    (toxic,) = [c for c in cards if c["indicator"] == "critical"]
    assert toxic["summary"].startswith("Confirm with a repeat sample; stop magnesium meanwhile")
    assert any(c["summary"].startswith("Suspect serum Mg 6.0 mg/dL") for c in cards)
    assert "above the reference range" not in text(cards)
    issued = {a.rule_id for a in rows(ing, AdviceIssued)}
    assert {"hypermagnesemia-toxic", "mg-data-quality"} <= issued


def test_suspect_confirmed_by_the_repeat(ing: Ingestor) -> None:
    send(ing, oru("CNF-1", DAY.replace(hour=1), 2.2), DAY.replace(hour=1, minute=10))
    send(ing, oru("CNF-2", DAY.replace(hour=3), 4.9), DAY.replace(hour=3, minute=10))
    cards = send(ing, oru("CNF-3", DAY.replace(hour=5), 5.1), DAY.replace(hour=5, minute=10))
    (toxic,) = [c for c in cards if c["indicator"] == "critical"]
    assert toxic["summary"].startswith("Serum Mg 5.1 mg/dL: toxic range. Stop magnesium")
    assert (
        "4.9 mg/dL (2024-05-10 03:00 UTC)" in toxic["detail"]
    )  # the confirmed result, in the trend
    assert "Suspect " not in text(cards) and "spurious" not in text(cards)


def test_a_late_repeat_leaves_the_result_suspect(ing: Ingestor) -> None:
    """A repeat after 24 h resolves nothing: the diluted creatinine is never a baseline."""
    send(ing, oru("LATE-1", DAY - timedelta(hours=10), 2.4, 2.5), DAY - timedelta(hours=9))
    send(ing, oru("LATE-2", DAY, 0.9, 0.9), DAY + timedelta(minutes=10))
    cards = send(ing, oru("LATE-3", DAY + timedelta(hours=25), 2.3, 2.7),
                 DAY + timedelta(hours=25, minutes=10))  # fmt: skip
    assert "AKI stage" not in text(cards) and "spurious" not in text(cards)
    assert "Suspect " not in text(cards)
    assert not any(a.rule_id == "aki-kdigo" for a in rows(ing, AdviceIssued))  # 2.7 vs 0.9: stage 3


@pytest.mark.parametrize(("mg", "creatinine", "expect", "shown"), [c[1:] for c in EDGES],
                         ids=[c[0] for c in EDGES])  # fmt: skip
def test_parameter_edges_over_hl7(
    tmp_path: Path, mg: list[tuple[float, int]], creatinine: list[tuple[float, int]],
    expect: str, shown: str,
) -> None:  # fmt: skip
    """One ORU per collection time, in order; each arrives a minute after it was drawn."""
    url = f"sqlite:///{tmp_path / 'edges.db'}"
    ing = make_ingestor(url)
    draw = DAY.replace(hour=12)
    times = sorted({t for _, t in mg} | {t for _, t in creatinine})
    seen: list[str] = []
    last: list[dict[str, Any]] = []
    for n, t in enumerate(times):
        at = draw + timedelta(seconds=t)
        mg_value = next((v for v, tt in mg if tt == t), None)
        cr_value = next((v for v, tt in creatinine if tt == t), None)
        last = send(ing, oru(f"EDGE-{n}", at, mg_value, cr_value), at + timedelta(minutes=1))
        seen.append(text(last))
    dispose_engine(url)
    if expect == "none":  # used as an ordinary result (some time in the sequence), never suspect
        assert shown in "\n".join(seen)
        assert "Suspect " not in text(last) and "spurious" not in text(last)
    else:
        assert_reads(text(last), expect, shown)
