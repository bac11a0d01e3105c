"""Advice pushed by events (evidence.md §8): what reaches the clinician's inbox, and how often.

Each case runs HL7 v2 messages through the Ingestor into the patient store (SQLite and
PostgreSQL). Every advice is recorded; only pushed advice has outbox rows (the advisory
ORU^R01 the clinician receives, whose text is the advice's summary).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cds_service.events.ingest import Ingestor
from cds_service.rules.loader import load_knowledge
from cds_service.rules.mapfile import MappingError
from cds_service.store import dispose_engine
from cds_service.store.events_models import AdviceIssued, AdvicePush, OutboxRow
from tests.hl7support import ROOT, SITE, fixture, make_ingestor, msa, rows

DAY = datetime(2024, 5, 10, tzinfo=UTC)
WARD, ICU = "WARD4^12^A^GENHOSP", "MICU^3^A^GENHOSP"


def ts(at: datetime) -> str:
    return at.strftime("%Y%m%d%H%M%S") + "+0000"


def pv1(unit: str, visit: str, admit: datetime, klass: str = "I", discharge: str = "") -> str:
    fields = [""] * 46
    fields[:4] = ["PV1", "1", klass, unit]
    fields[19], fields[44], fields[45] = visit, ts(admit), discharge
    return "|".join(fields).rstrip("|")


PID = "PID|1||MRN7001^^^GENHOSP^MR||Testpatient^Cleo||19600101|F"


def adt(cid: str, event: str, at: datetime, visit_pv1: str) -> bytes:
    msh = f"MSH|^~\\&|ADT|GENHOSP|CDS|GENHOSP|{ts(at)}||ADT^{event}^ADT_A01|{cid}|P|2.5.1"
    return "\r".join([msh, f"EVN|{event}|{ts(at)}||||{ts(at)}", PID, visit_pv1]).encode() + b"\r"


def oru(cid: str, at: datetime, *, mg: float | None = None, creatinine: float | None = None,
        visit_pv1: str | None = None, status: str = "F") -> bytes:  # fmt: skip
    """An ORU^R01: serum Mg and/or creatinine collected at ``at``."""
    segments = [f"MSH|^~\\&|LIS|GENHOSP|CDS|GENHOSP|{ts(at)}||ORU^R01^ORU_R01|{cid}|P|2.5.1", PID]
    if visit_pv1:
        segments.append(visit_pv1)
    segments.append(f"OBR|1|ORD-{cid}^CPOE|FIL-{cid}^LIS|80048^Basic metabolic panel^C4|||{ts(at)}")
    if mg is not None:
        segments.append(f"OBX|1|NM|19123-9^Magnesium^LN||{mg}|mg/dL|1.7-2.5||||{status}|||{ts(at)}")
    if creatinine is not None:
        segments.append(
            f"OBX|2|NM|2160-0^Creatinine^LN||{creatinine}|mg/dL|0.6-1.2||||{status}|||{ts(at)}"
        )
    return "\r".join(segments).encode() + b"\r"


def send(ing: Ingestor, message: bytes, at: datetime) -> list[AdviceIssued]:
    """Ingest a message arriving five minutes after ``at``; the advice it recorded."""
    ing.clock = lambda: at + timedelta(minutes=5)
    out = ing.handle(message)
    assert out.code == "AA" and msa(out.ack)[1] == "AA", out.ack
    ids = set(out.advice)
    return [a for a in rows(ing, AdviceIssued) if a.id in ids]


def inbox(ing: Ingestor) -> list[str]:
    """The summaries of the advisories queued for the clinician (outbox rows), in order."""
    queued = {o.advice_id for o in rows(ing, OutboxRow, OutboxRow.kind == "advice")}
    return [a.summary for a in rows(ing, AdviceIssued) if a.id in queued]


def statuses(ing: Ingestor, lead: str) -> list[str]:
    return [a.push_status for a in rows(ing, AdviceIssued, AdviceIssued.rule_id == lead)]


def test_aki_pushed_at_episode_start_and_stage_rise_only(ing: Ingestor) -> None:
    ward = pv1(WARD, "V1", DAY)
    send(ing, adt("A1", "A01", DAY, ward), DAY)
    steps = [  # (hours after admission, creatinine mg/dL)
        (8, 1.0), (32, 1.6), (44, 1.7), (56, 2.3), (68, 2.4), (80, 2.1),  # stage 1, then 2
        (104, 1.2), (152, 1.0), (248, 0.9), (296, 0.9),  # recovered: no KDIGO value for 9 days
        (320, 1.5),  # a new episode (stage 1)
    ]  # fmt: skip
    for n, (hours, value) in enumerate(steps):
        at = DAY + timedelta(hours=hours)
        send(ing, oru(f"CR-{n}", at, creatinine=value, visit_pv1=ward), at)
    assert statuses(ing, "aki-kdigo") == [
        "pushed", "repeat", "pushed", "repeat", "repeat", "repeat", "repeat", "pushed",
    ]  # fmt: skip
    assert inbox(ing) == [
        "AKI stage 1 (KDIGO): creatinine 1.6 mg/dL (141 µmol/L)",
        "AKI stage 2 (KDIGO): creatinine 2.3 mg/dL (203 µmol/L)",
        "AKI stage 1 (KDIGO): creatinine 1.5 mg/dL (133 µmol/L)",
    ]
    episodes = {k.push_key.split("|")[1] for k in rows(ing, AdvicePush)}
    assert len(episodes) == 2  # the stage rise belongs to the first episode


def test_association_rule_once_per_index_event(ing: Ingestor) -> None:
    first, second = pv1(WARD, "V1", DAY), pv1(WARD, "V2", DAY + timedelta(days=30))
    send(ing, adt("A1", "A01", DAY, first), DAY)
    send(ing, oru("MG-1", DAY + timedelta(hours=1), mg=1.3, visit_pv1=first), DAY + timedelta(hours=1))
    later = send(ing, oru("MG-2", DAY + timedelta(days=1), mg=1.4, visit_pv1=first),
                 DAY + timedelta(days=1))  # fmt: skip
    assert later == []  # the same admission Mg: nothing new, nothing pushed
    out = DAY + timedelta(days=3)
    send(ing, adt("A3", "A03", out, pv1(WARD, "V1", DAY, discharge=ts(out))), out)
    back = DAY + timedelta(days=30)
    send(ing, adt("A4", "A01", back, second), back)
    send(ing, oru("MG-3", back + timedelta(hours=1), mg=1.2, visit_pv1=second), back + timedelta(hours=1))
    assert statuses(ing, "admission-u-shape") == ["pushed", "pushed"]
    assert inbox(ing) == [
        "Admission Mg 1.3 mg/dL (< 1.5 mg/dL): associated with higher AKI risk",
        "Admission Mg 1.2 mg/dL (< 1.5 mg/dL): associated with higher AKI risk",
    ]
    keys = [k.push_key for k in rows(ing, AdvicePush)]
    assert len(keys) == 2 and all(k.startswith("admission-u-shape|admission:") for k in keys)
    assert keys[0] != keys[1]


def test_supplementation_once_per_triggering_result(ing: Ingestor) -> None:
    icu = pv1(ICU, "V1", DAY)
    send(ing, adt("A1", "A01", DAY, icu), DAY)
    send(ing, oru("L-1", DAY + timedelta(hours=1), mg=1.65, creatinine=0.8, visit_pv1=icu),
         DAY + timedelta(hours=1))  # fmt: skip
    assert len(inbox(ing)) == 1
    # a later creatinine: the same latest Mg, the same advice: nothing new reaches the inbox
    send(ing, oru("L-2", DAY + timedelta(hours=6), creatinine=0.8, visit_pv1=icu), DAY + timedelta(hours=6))
    assert len(inbox(ing)) == 1
    send(ing, oru("L-3", DAY + timedelta(hours=12), mg=1.5, visit_pv1=icu), DAY + timedelta(hours=12))
    pushed = [a.summary for a in rows(ing, AdviceIssued)
              if "icu-hypomagnesemia-repletion" in a.rules and a.push_status == "pushed"]  # fmt: skip
    assert [s.split(":")[0] for s in pushed] == ["ICU, serum Mg 1.65 mg/dL (> 1.1 and < 1.7 mg/dL)",
                                                 "ICU, serum Mg 1.5 mg/dL (> 1.1 and < 1.7 mg/dL)"]  # fmt: skip
    assert inbox(ing) == pushed


def test_data_quality_pushed_only_for_a_suspect_result(ing: Ingestor) -> None:
    send(ing, fixture("oru_no_unit.hl7"), datetime(2024, 5, 10, 8, tzinfo=UTC))
    assert statuses(ing, "mg-data-quality") == ["not-pushed"] and inbox(ing) == []
    icu = pv1(ICU, "V2", DAY)
    send(ing, oru("J-1", DAY + timedelta(hours=1), mg=2.2, visit_pv1=icu), DAY + timedelta(hours=1))
    send(ing, oru("J-2", DAY + timedelta(hours=9), mg=6.0, visit_pv1=icu), DAY + timedelta(hours=9))
    told = inbox(ing)
    assert any(s.startswith("Confirm with a repeat sample; stop magnesium meanwhile") for s in told)
    assert any(s.startswith("Suspect serum Mg 6.0 mg/dL") for s in told)


def test_a_corrected_result_pushes_its_event_again(ing: Ingestor) -> None:
    ward, at = pv1(WARD, "V1", DAY), DAY + timedelta(hours=1)
    send(ing, adt("A1", "A01", DAY, ward), DAY)
    send(ing, oru("MG-1", at, mg=1.3, visit_pv1=ward), at)
    send(ing, oru("MG-1C", at, mg=1.2, visit_pv1=ward, status="C"), at + timedelta(hours=2))
    first, second = rows(ing, AdviceIssued)
    assert first.withdrawn and second.push_status == "pushed"
    assert [o.kind for o in rows(ing, OutboxRow)] == ["advice", "withdrawal", "advice"]
    assert inbox(ing)[-1].startswith("Admission Mg 1.2 mg/dL")


@pytest.fixture(params=[False, True], ids=["default", "site-enables"])
def monitoring(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[Ingestor]:
    """An Ingestor whose site mapping enables pushing reference-range and mg-trend, or not."""
    site = SITE
    if request.param:
        data = yaml.safe_load(SITE.read_text(encoding="utf-8"))
        data["push"] = {"enable": ["reference-range", "mg-trend"]}
        site = tmp_path / "site.yaml"
        site.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    ingestor = make_ingestor(db_url, CDS_SITE_MAPPINGS=str(site))
    ingestor.pushes_monitoring = request.param  # type: ignore[attr-defined]
    yield ingestor
    dispose_engine(db_url)


def test_monitoring_rules_recorded_and_pushed_only_when_the_site_enables_them(
    monitoring: Ingestor,
) -> None:
    """An outpatient: Mg 1.6 (reference range), then 2.3, 2.1, 1.6 within 48 h (falling trend)."""
    ing, enabled = monitoring, monitoring.pushes_monitoring  # type: ignore[attr-defined]
    send(ing, oru("R-1", DAY, mg=1.6), DAY)
    for n, (hours, mg) in enumerate([(100, 2.3), (124, 2.1), (148, 1.6)]):
        send(ing, oru(f"T-{n}", DAY + timedelta(hours=hours), mg=mg), DAY + timedelta(hours=hours))
    expected = "pushed" if enabled else "not-pushed"
    assert statuses(ing, "reference-range") == [expected]
    assert statuses(ing, "mg-trend") == [expected]
    shown = [a.summary for a in rows(ing, AdviceIssued)]
    assert [x for x in shown if x.startswith("Serum Mg 1.6 mg/dL: below the reference range")]
    assert "Serum Mg falling to 1.6 mg/dL: 0.7 mg/dL below 2.3 mg/dL within 72 h" in shown
    assert inbox(ing) == (shown if enabled else [])


def test_push_policy_lists_every_rule_and_the_site_names_known_rules(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", root)
    policy = root / "push.yaml"
    text = policy.read_text(encoding="utf-8")
    policy.write_text(text.replace("  mg-trend: {once_per: result, pushed: false}\n", ""), encoding="utf-8")
    with pytest.raises(MappingError, match=r"push\.yaml: rules: rule\(s\) without a push policy: \['mg-trend'\]"):
        load_knowledge(root)
    policy.write_text(text, encoding="utf-8")
    site = tmp_path / "site.yaml"
    site.write_text("push: {enable: [mg-trnd]}\n", encoding="utf-8")
    with pytest.raises(MappingError, match=r"site\.yaml: push\.enable: unknown rule id 'mg-trnd'"):
        load_knowledge(root, site)
    knowledge = load_knowledge(ROOT / "mappings", SITE)
    assert knowledge.push_rule("aki-kdigo").once_per == "aki-episode"  # type: ignore[union-attr]
    assert not knowledge.push_rule("monitoring-gap").pushed  # type: ignore[union-attr]


@pytest.mark.parametrize(("setting", "keeps_events"), [("shadow", True), ("late", False)])
def test_shadow_and_late_advice_is_held(db_url: str, setting: str, keeps_events: bool) -> None:
    """Held: nothing is queued; shadow mode still records what it would have pushed."""
    if setting == "shadow":
        ing = make_ingestor(db_url, CDS_SHADOW="1")
    else:  # arrives three days after it was drawn (CDS_MAX_RESULT_AGE_HOURS)
        ing = make_ingestor(db_url, clock=lambda: datetime(2024, 5, 13, 8, tzinfo=UTC))
    ing.handle(fixture("oru_mg_low_icu.hl7"))
    advice = rows(ing, AdviceIssued)
    assert advice and {a.push_status for a in advice} == {"held"}
    assert inbox(ing) == [] and rows(ing, OutboxRow) == []
    assert bool(rows(ing, AdvicePush)) is keeps_events
    dispose_engine(db_url)
