"""Evaluate a patient after an event and record advice once per (patient, rule, trigger).

Only advice about an event not pushed before is pushed, i.e. queued on the channels
(evidence.md §8, ``events/push.py``); the rest stays in the record with its push status.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.events import push
from cds_service.events.outbound_queue import enqueue
from cds_service.events.snapshot import build_snapshot, result_id
from cds_service.render.report import magnesium_json
from cds_service.render.text import TextRenderer
from cds_service.rules.engine import evaluate
from cds_service.rules.model import Advice, Knowledge
from cds_service.store.events_models import AdviceIssued, Patient

SnapshotFn = Callable[[Session, Patient, datetime], m.ClinicalSnapshot]


@dataclass(frozen=True)
class Trigger:
    """Why a patient is evaluated: the event (``icu:<id>``, ``msg:<id>``) and its clinical time."""

    key: str
    time: datetime
    message_id: int | None = None


@dataclass(frozen=True)
class Evaluation:
    """One evaluation: the snapshot, its ``now``, and the advice it newly issued (with rows)."""

    snapshot: m.ClinicalSnapshot
    now: datetime
    advice: tuple[Advice, ...]
    rows: tuple[AdviceIssued, ...]


@dataclass(frozen=True)
class Policy:
    """How advice may leave: channels, backlog age, test message, shadow mode, locale."""

    channels: tuple[str, ...]
    max_age: timedelta
    test: bool = False
    shadow: bool = False
    locale: str = "en"


def evaluation_time(
    trigger_time: datetime, arrival: datetime, max_age: timedelta
) -> tuple[datetime, bool]:
    """``now`` for the engine and whether the advice is late.

    A backlog result (older than ``max_age`` on arrival) is evaluated at its own time and
    its advice is late; a result dated after its arrival (clock skew, shifted research
    data) is evaluated at its own time too; otherwise at the arrival time.
    """
    if arrival - trigger_time > max_age:
        return trigger_time, True
    if trigger_time > arrival:
        return trigger_time, False
    return arrival, False


def trigger_of(advice: Advice, snapshot: m.ClinicalSnapshot) -> tuple[str, int | None]:
    """The result an advice rests on (the lead finding's newest value, else the result it
    excludes, else the card's magnesium), as a key.

    Advice resting on no result (a monitoring gap, a prevention rule) is keyed by the
    current encounter and the newest serum Mg: it is issued again only once either changes.
    """
    names: list[str | None] = []
    lead = advice.findings[0] if advice.findings else None
    if lead is not None:
        if lead.values:
            names.append(max(lead.values, key=lambda v: v.time).resource)
        excluded = lead.context.excluded
        if excluded is not None:
            names.append(excluded.resource)
    if advice.magnesium is not None:
        names.append(advice.magnesium.resource)
    for name in names:
        rid = result_id(name)
        if rid is not None:
            return f"result:{rid}", rid
    newest = result_id(snapshot.serum_mg[-1].id) if snapshot.serum_mg else None
    return f"context:{snapshot.current_encounter_id or '-'}:{newest or '-'}"[:64], None


def _issued(session: Session, patient_id: int, lead: str, key: str) -> bool:
    found = session.scalar(
        select(AdviceIssued.id).where(
            AdviceIssued.patient_id == patient_id,
            AdviceIssued.rule_id == lead,
            AdviceIssued.trigger_key == key,
        )
    )
    return found is not None


def _detail(advice: Advice, detail_md: str) -> dict[str, object]:
    out: dict[str, object] = {"detail": detail_md, "rules": list(advice.rules)}
    if advice.aki_stage is not None:
        out["aki_stage"] = advice.aki_stage
    if advice.magnesium is not None:
        out["magnesium"] = magnesium_json(advice.magnesium)
    if advice.withheld:
        out["withheld"] = [
            {"rule": w.rule_id, "conditions": list(w.conditions)} for w in advice.withheld
        ]
    return out


def advise(
    session: Session,
    knowledge: Knowledge,
    patient: Patient,
    trigger: Trigger,
    arrival: datetime,
    policy: Policy,
    *,
    snapshot_fn: SnapshotFn | None = None,
) -> Evaluation:
    """Evaluate the patient at the trigger and store (and queue) advice not issued before.

    ``snapshot_fn`` replaces ``build_snapshot`` (FHIR events add context from the server).
    """
    now, late = evaluation_time(trigger.time, arrival, policy.max_age)
    snapshot = (snapshot_fn or build_snapshot)(session, patient, now)
    held = late or policy.test or policy.shadow
    issued: list[AdviceIssued] = []
    new: list[Advice] = []
    for advice in evaluate(knowledge, snapshot, now):
        key, rid = trigger_of(advice, snapshot)
        decision = push.decide(session, patient.id, knowledge, advice, snapshot, now, key)
        if _issued(session, patient.id, advice.lead, key):
            # the same advice was recorded before; a finding about a new event (a stage
            # rise, a new index event joining the card) is recorded and pushed under its own key
            if decision.status != push.PUSHED:
                continue
            key = decision.record_key()
            if _issued(session, patient.id, advice.lead, key):
                continue
        rendered = TextRenderer(knowledge, policy.locale).render(advice, snapshot.conditions)
        row = AdviceIssued(
            patient_id=patient.id,
            rule_id=advice.lead,
            rules=list(advice.rules),
            trigger_key=key,
            trigger_result_id=rid,
            message_id=trigger.message_id,
            direction=advice.direction,
            indicator=advice.indicator,
            summary=rendered.summary,
            detail=_detail(advice, rendered.detail),
            evaluated_at=now,
            created_at=arrival,
            late=late,
            test=policy.test,
            shadow=policy.shadow,
            withdrawn=False,
            push_status=push.HELD if held and decision.status == push.PUSHED else decision.status,
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
                # shadow mode records what it would have pushed; late and test advice not
                if decision.status == push.PUSHED and not (late or policy.test):
                    push.record(session, patient.id, row.id, decision.new, arrival)
                    session.flush()
        except IntegrityError:  # issued (or pushed) meanwhile by another connection
            continue
        if row.push_status == push.PUSHED:
            enqueue(session, row, policy.channels, now=arrival)
        issued.append(row)
        new.append(advice)
    return Evaluation(snapshot, now, tuple(new), tuple(issued))
