"""Evaluate a patient after an event and issue advice once per (patient, rule, trigger)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
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
    """The result an advice rests on (its magnesium, else the lead finding's values), as a key.

    Advice resting on no result (a monitoring gap, a prevention rule) is keyed by the
    current encounter and the newest serum Mg: it is issued again only once either changes.
    """
    names: list[str | None] = []
    if advice.magnesium is not None:
        names.append(advice.magnesium.resource)
    lead = advice.findings[0] if advice.findings else None
    if lead is not None:
        if lead.values:
            names.append(max(lead.values, key=lambda v: v.time).resource)
        excluded = lead.context.excluded
        if excluded is not None:
            names.append(excluded.resource)
    for name in names:
        rid = result_id(name)
        if rid is not None:
            return f"result:{rid}", rid
    newest = result_id(snapshot.serum_mg[-1].id) if snapshot.serum_mg else None
    return f"context:{snapshot.current_encounter_id or '-'}:{newest or '-'}"[:64], None


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
    issued: list[AdviceIssued] = []
    new: list[Advice] = []
    for advice in evaluate(knowledge, snapshot, now):
        key, rid = trigger_of(advice, snapshot)
        exists = session.scalar(
            select(AdviceIssued.id).where(
                AdviceIssued.patient_id == patient.id,
                AdviceIssued.rule_id == advice.lead,
                AdviceIssued.trigger_key == key,
            )
        )
        if exists is not None:
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
        )
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # issued meanwhile by another connection
            continue
        if not (late or policy.test or policy.shadow):
            enqueue(session, row, policy.channels, now=arrival)
        issued.append(row)
        new.append(advice)
    return Evaluation(snapshot, now, tuple(new), tuple(issued))
