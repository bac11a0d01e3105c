"""Advice pushed by events (evidence.md §8, ``mappings/push.yaml``): what is pushed, once.

Every advice an event gives is recorded (``advice_issued``). Each finding of a rule that
is pushed names the event it is about (``PushEvent.key``): the AKI episode and its stage,
the index event, the triggering result, the suspect result. An advice is pushed (queued on
the channels) when one of its findings names an event not pushed before for this patient
(``advice_push``); otherwise it is recorded as a ``repeat``, or ``not-pushed`` when none of
its rules is pushed (monitoring rules, unless the site mapping enables them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cds_service.clinical import model as m
from cds_service.clinical.aki import assess_aki
from cds_service.clinical.delta_checks import review_results
from cds_service.events.snapshot import result_id
from cds_service.rules.model import Advice, Finding, Knowledge
from cds_service.store.events_models import AdvicePush

PUSHED, REPEAT, NOT_PUSHED, HELD = "pushed", "repeat", "not-pushed", "held"
PUSH_STATUSES = (PUSHED, REPEAT, NOT_PUSHED, HELD)
_TICK = timedelta(microseconds=1)
_KEY_LIMIT = 255


@dataclass(frozen=True)
class PushEvent:
    """What a finding would be pushed for; ``stage`` for an AKI episode (key = prefix + stage)."""

    rule_id: str
    key: str
    prefix: str = ""
    stage: int | None = None


@dataclass(frozen=True)
class PushDecision:
    """The push status of one advice and the events it pushes for the first time."""

    status: str
    new: tuple[PushEvent, ...] = ()

    def record_key(self) -> str:
        """A record key naming the new events (when the advice's own key is already taken)."""
        digest = hashlib.sha256("|".join(e.key for e in self.new).encode()).hexdigest()
        return f"push:{digest[:40]}"


def _ref(name: str | None) -> str | None:
    """A result as a key part: ``result:<stored id>``, else its resource name."""
    if not name:
        return None
    rid = result_id(name)
    return f"result:{rid}" if rid is not None else name


def _key(rule_id: str, part: str) -> str:
    key = f"{rule_id}|{part}"
    if len(key) <= _KEY_LIMIT:
        return key
    return f"{rule_id}|sha256:{hashlib.sha256(part.encode()).hexdigest()}"


def episode_start(
    knowledge: Knowledge, snapshot: m.ClinicalSnapshot, now: datetime
) -> datetime | None:
    """The first creatinine meeting KDIGO of the AKI episode present at ``now``, or None.

    AKI is present while a creatinine meeting KDIGO lies within the episode window before
    now (``aki.yaml``); the episode reaches back while each such creatinine has another one
    within the window before it. Suspect and spurious results are left out, as the rules do.
    """
    review = review_results(snapshot, now, knowledge.delta, knowledge.valuesets)
    series = review.clean(snapshot).creatinine
    criteria = knowledge.aki_criteria
    onset = assess_aki(series, now, criteria).onset
    while onset is not None:
        before = assess_aki(series, onset - _TICK, criteria).onset
        if before is None or before >= onset:
            break
        onset = before
    return onset


def _index_event(f: Finding, snapshot: m.ClinicalSnapshot, fallback: str) -> str:
    """The index event of an association finding, else the event that triggered the rule.

    That is the drug order, the planned procedure, the ICU admission, else the encounter, else
    (no encounter open) the diagnosis that put the patient in the rule's population.
    """
    c = f.context
    if f.index_event:
        return f.index_event
    if c.procedure is not None:
        return f"procedure:{c.procedure.id}"
    if c.medications:
        return "orders:" + ",".join(sorted({med.id for med, _ in c.medications}))
    if c.icu is not None:
        return f"icu-start:{c.icu.start.isoformat()}"
    encounter = c.encounter.id if c.encounter is not None else snapshot.current_encounter_id
    if encounter:
        return f"encounter:{encounter}"
    return f"condition:{c.conditions[0].id}" if c.conditions else fallback


def _event(
    f: Finding,
    advice: Advice,
    knowledge: Knowledge,
    snapshot: m.ClinicalSnapshot,
    now: datetime,
    fallback: str,
) -> PushEvent | None:
    """The event a finding is pushed for, or None when its rule is not pushed for it."""
    policy = knowledge.push_rule(f.rule_id)
    if policy is None or not policy.pushed:
        return None
    mode, rid = policy.once_per, f.rule_id
    if mode == "suspect":
        suspect = f.context.suspect
        return None if suspect is None else PushEvent(rid, _key(rid, f"suspect:{_ref(suspect.id)}"))
    if mode == "index-event":
        return PushEvent(rid, _key(rid, _index_event(f, snapshot, fallback)))
    if mode == "aki-episode":
        status = f.context.aki
        start = episode_start(knowledge, snapshot, now) if status is not None else None
        if start is None and status is not None:
            start = status.onset  # stage 3 from dialysis alone, or a coded onset
        stage = status.stage if status is not None else 0
        prefix = _key(rid, f"episode:{start.isoformat() if start else fallback}|stage:")
        return PushEvent(rid, f"{prefix}{stage}", prefix, stage)
    newest = max(f.values, key=lambda v: v.time).resource if f.values else None
    part = _ref(newest) or _ref(advice.magnesium.resource if advice.magnesium else None)
    return PushEvent(rid, _key(rid, part or fallback))


def _pushed(session: Session, patient_id: int, event: PushEvent) -> bool:
    if event.stage is None:
        found = session.scalar(
            select(AdvicePush.id).where(
                AdvicePush.patient_id == patient_id, AdvicePush.push_key == event.key
            )
        )
        return found is not None
    keys = session.scalars(
        select(AdvicePush.push_key).where(
            AdvicePush.patient_id == patient_id,
            AdvicePush.push_key.startswith(event.prefix, autoescape=True),
        )
    )
    stages = [int(k[len(event.prefix) :]) for k in keys if k[len(event.prefix) :].isdigit()]
    return any(stage >= event.stage for stage in stages)


def decide(
    session: Session,
    patient_id: int,
    knowledge: Knowledge,
    advice: Advice,
    snapshot: m.ClinicalSnapshot,
    now: datetime,
    fallback: str,
) -> PushDecision:
    """Whether an advice is pushed: pushed (a new event), repeat, or not-pushed.

    ``fallback`` (the advice's record key) names the event of a finding that has none.
    """
    events: dict[str, PushEvent] = {}
    for f in advice.findings:
        event = _event(f, advice, knowledge, snapshot, now, fallback)
        if event is not None:
            events.setdefault(event.key, event)
    if not events:
        return PushDecision(NOT_PUSHED)
    new = tuple(e for e in events.values() if not _pushed(session, patient_id, e))
    return PushDecision(PUSHED if new else REPEAT, new)


def record(
    session: Session, patient_id: int, advice_id: int, events: Sequence[PushEvent], now: datetime
) -> None:
    """Record the events an advice was pushed for."""
    for e in events:
        session.add(
            AdvicePush(
                patient_id=patient_id,
                advice_id=advice_id,
                rule_id=e.rule_id,
                push_key=e.key,
                created_at=now,
            )
        )


def forget(session: Session, advice_ids: Sequence[int]) -> None:
    """Withdrawn advice no longer counts as pushed: its events may be pushed again."""
    if advice_ids:
        session.execute(delete(AdvicePush).where(AdvicePush.advice_id.in_(list(advice_ids))))


def merge(session: Session, survivor_id: int, prior_id: int) -> None:
    """Before a merge (ADT A40): drop the prior record's events the survivor already has."""
    taken = select(AdvicePush.push_key).where(AdvicePush.patient_id == survivor_id)
    session.execute(
        delete(AdvicePush).where(AdvicePush.patient_id == prior_id, AdvicePush.push_key.in_(taken))
    )
