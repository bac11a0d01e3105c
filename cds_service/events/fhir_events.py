"""Handle a parsed FHIR Subscription notification: event numbers, look-ups, store, evaluate.

Event numbers are tracked per subscription: a notification whose events were all seen is a
duplicate (nothing done); a jump (or a heartbeat counter ahead of us) is a gap, logged and
re-queried (Observations updated since the last event). Everything is read from
``CDS_FHIR_BASE`` only. Network look-ups happen before the one transaction that stores the
results, evaluates (the HL7 helper's ``advise``: once per patient, rule and result) and
advances the subscription state; if a look-up fails the state is not advanced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import requests
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds_service.clinical.fhir_common import BadResource, JsonDict, ResourceIndex
from cds_service.clinical.fhir_labs import lab_table
from cds_service.config import Settings
from cds_service.events.advise import Policy, Trigger, advise
from cds_service.events.fhir_access import fhir_writer
from cds_service.events.fhir_notify_forms import Notification, local_ref
from cds_service.events.fhir_results import FhirStored, fhir_patient, store_observation
from cds_service.events.fhir_snapshot import (
    TRIGGER_SETS,
    FhirContext,
    codes_param,
    fetch_context,
    merged_snapshot,
    orderers,
    specimens,
)
from cds_service.events.outbound_queue import withdraw
from cds_service.events.patients import Hasher
from cds_service.events.process import TRIGGER_KINDS
from cds_service.hooks.fhir_client import FhirUnavailable
from cds_service.rules.model import Knowledge
from cds_service.store.subscription_models import FhirSubscriptionState

log = logging.getLogger("cds_service.events.fhir")
MARGIN = timedelta(minutes=5)  # re-query overlap: clocks differ, duplicates are harmless
MAX_OBSERVATIONS = 200
READ_ERRORS = (BadResource, TypeError, ValueError, AttributeError, KeyError)


class Transient(Exception):
    """``CDS_FHIR_BASE`` could not be read: answer 503 and keep the state (retry re-queries)."""


@dataclass
class _Work:
    observations: dict[str, JsonDict] = field(default_factory=dict)
    orderers: dict[str, str] = field(default_factory=dict)
    specimens: list[JsonDict] = field(default_factory=list)
    contexts: dict[str, FhirContext] = field(default_factory=dict)
    ignored: int = 0


class FhirEvents:
    """Notification handler for one database and one FHIR base (thread-safe)."""

    def __init__(
        self, engine: Engine, settings: Settings, knowledge: Knowledge, tz: tzinfo,
        hasher: Hasher, http: requests.Session, *,
        clock: Callable[[], datetime] | None = None, on_commit: Callable[[], None] | None = None,
    ) -> None:  # fmt: skip
        """Use a migrated ``engine``; ``on_commit`` runs after advice may have been queued."""
        self.engine, self.settings, self.knowledge, self.tz = engine, settings, knowledge, tz
        self.hasher, self.http, self.on_commit = hasher, http, on_commit
        self.clock = clock or (lambda: datetime.now(UTC))
        self.policy = Policy(
            settings.outbound, timedelta(hours=settings.max_result_age_hours),
            shadow=settings.shadow, locale=settings.locale,
        )  # fmt: skip

    def handle(self, note: Notification) -> dict[str, Any]:
        """Process one notification; a small summary without identifiers.

        :raises Transient: the FHIR server could not be read.
        """
        now = self.clock()
        last_n, last_at = self._state(note.subscription)
        numbers = note.numbers
        fresh = [n for n in numbers if last_n is None or n > last_n]
        out: dict[str, Any] = {"form": note.form, "type": note.type, "events": len(numbers)}
        if note.type == "event-notification" and numbers and not fresh:
            self._commit(note, now, None, [], gap=False)  # seen: only the time of contact
            return {**out, "duplicate": True}
        gap = last_n is not None and (
            (note.type == "event-notification" and bool(fresh) and min(fresh) > last_n + 1)
            or (note.type == "heartbeat" and (note.events_since_start or 0) > last_n)
        )
        if gap:
            got = min(fresh) if fresh else note.events_since_start
            log.warning(
                "fhir subscription gap subscription=%s after_event=%s received=%s",
                note.subscription, last_n, got,
            )  # fmt: skip
        work = _Work()
        if note.type == "event-notification" or gap:
            try:
                self._gather(note, work, gap, last_at or now - self.policy.max_age)
            except FhirUnavailable as exc:
                raise Transient(exc.reason) from None
        done = self._commit(note, now, work, numbers, gap=gap)
        if (done["advice"] or done["withdrawn"]) and self.on_commit is not None:
            self.on_commit()
        return {**out, "duplicate": False, "gap": gap, "resources": len(work.observations),
                **done, "ignored": work.ignored}  # fmt: skip

    def _state(self, key: str) -> tuple[int | None, datetime | None]:
        with Session(self.engine) as session:
            row = session.scalar(
                select(FhirSubscriptionState).where(FhirSubscriptionState.subscription == key)
            )
            return (row.last_event_number, row.last_event_at) if row else (None, None)

    def _gather(self, note: Notification, work: _Work, gap: bool, since: datetime) -> None:
        """Resolve the notification to Observations, then look up each patient's context."""
        needs_server = bool(note.ids or any(e.focus for e in note.events)) or gap
        empty = not note.resources and not note.ids and not any(e.focus for e in note.events)
        client = fhir_writer(self.settings, self.http) if self.settings.fhir_base else None
        if client is None and (needs_server or empty):
            raise FhirUnavailable("CDS_FHIR_BASE is not configured")
        for res in note.resources:
            self._add(work, res)
        wanted = [*(e.focus for e in note.events if e.focus), *note.ids]
        for key in dict.fromkeys(k for k in wanted if k not in work.observations):
            if not key.startswith("Observation/") or client is None:
                work.ignored += 1
                continue
            try:
                self._add(work, client.get(key))
            except FhirUnavailable as exc:
                if exc.status not in (404, 410):
                    raise
                work.ignored += 1
        if client is not None and (gap or (note.type == "event-notification" and empty)):
            start = (since - MARGIN).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            query = (f"Observation?code={codes_param(self.knowledge, TRIGGER_SETS)}"
                     f"&_lastUpdated=ge{start}&_count={MAX_OBSERVATIONS}")  # fmt: skip
            for res in client.search_all(query)[:MAX_OBSERVATIONS]:
                self._add(work, res)
        if client is not None:
            work.orderers = orderers(client, work.observations)
            try:
                work.specimens = specimens(client, list(work.observations.values()), set())
            except BadResource:  # an unreadable Observation is skipped when it is stored
                work.specimens = []
        for pid in {_subject(o) for o in work.observations.values()} - {None}:
            assert pid is not None
            if client is None:
                ctx = FhirContext(missing={"patient", "encounter", "conditions", "procedures",
                                           "service-requests", "medications", "administrations",
                                           "labs"})  # fmt: skip
            else:
                ctx = fetch_context(client, pid, self.knowledge)
            work.contexts[pid] = ctx

    def _add(self, work: _Work, res: JsonDict) -> None:
        rid = res.get("id")
        if not (
            res.get("resourceType") == "Observation" and isinstance(rid, str) and _subject(res)
        ):
            work.ignored += 1
            return
        if len(work.observations) < MAX_OBSERVATIONS:
            work.observations.setdefault(f"Observation/{rid}", res)

    def _commit(
        self, note: Notification, now: datetime, work: _Work | None, numbers: list[int], *,
        gap: bool,
    ) -> dict[str, int]:  # fmt: skip
        """Apply in one transaction; ``work`` None: a duplicate (the event window stays)."""
        for attempt in (1, 2):
            try:
                return self._apply(note, now, work or _Work(), numbers, gap, work is not None)
            except IntegrityError:  # a concurrent notification stored the same thing first
                if attempt == 2:
                    raise
        return {}  # pragma: no cover

    def _patient(
        self, session: Session, pid: str, ctx: FhirContext, work: _Work, now: datetime,
        done: dict[str, int],
    ) -> None:  # fmt: skip
        """Store one patient's Observations (notified, then history), withdraw, evaluate."""
        table = lab_table(self.knowledge)
        patient = fhir_patient(session, pid, ctx.patient, self.hasher, now)
        stored, history = FhirStored(), FhirStored()
        index = ResourceIndex()  # the Specimens the results name (the specimen decides)
        for specimen in [*work.specimens, *ctx.specimens]:
            if isinstance(specimen.get("id"), str):
                index.add(specimen, None)
        for key, obs in work.observations.items():
            if _subject(obs) == pid:
                store_observation(session, obs, patient, table, self.tz, now, stored,
                                  work.orderers.get(key, ""), index)  # fmt: skip
        for obs in ctx.labs:
            store_observation(session, obs, patient, table, self.tz, now, history, index=index)
        pulled = withdraw(session, [*stored.withdrawn, *history.withdrawn], now)
        done["results"] += len(stored.new)
        done["withdrawn"] += len(pulled)
        times = [r.time for r in stored.new if r.time and r.kind in TRIGGER_KINDS]
        if times:
            trigger = Trigger(f"fhir:{stored.new[0].id}", max(times))
            snap = merged_snapshot(ctx, pid, self.knowledge, self.tz)
            ev = advise(session, self.knowledge, patient, trigger, now, self.policy,
                        snapshot_fn=snap)  # fmt: skip
            done["advice"] += len(ev.rows)

    def _apply(
        self, note: Notification, now: datetime, work: _Work, numbers: list[int], gap: bool,
        consumed: bool,
    ) -> dict[str, int]:  # fmt: skip
        done = {"results": 0, "advice": 0, "withdrawn": 0}
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            state = _lock_state(session, note.subscription, now)
            for pid, ctx in work.contexts.items():
                try:
                    with session.begin_nested():
                        self._patient(session, pid, ctx, work, now, done)
                except READ_ERRORS as exc:  # one unreadable resource never fails the rest
                    log.warning("fhir resource skipped error=%s", type(exc).__name__)
                    work.ignored += 1
            if numbers:
                state.last_event_number = max([state.last_event_number or 0, *numbers])
            if consumed and (note.type == "event-notification" or gap):
                state.last_event_at = now
            if note.type == "handshake" and state.last_event_number is None:
                state.last_event_number = note.events_since_start or 0
            state.last_notification_at, state.last_type = now, note.type[:32]
            state.topic = (note.topic or state.topic or "")[:255] or None
            state.gaps += 1 if gap else 0
            state.updated_at = now
        return done


def _subject(obs: JsonDict) -> str | None:
    """The logical id of an Observation's Patient (a host in the reference is ignored)."""
    subject = obs.get("subject")
    key = local_ref(subject.get("reference")) if isinstance(subject, dict) else None
    return key.split("/", 1)[1] if key and key.startswith("Patient/") else None


def _lock_state(session: Session, key: str, now: datetime) -> FhirSubscriptionState:
    query = select(FhirSubscriptionState).where(FhirSubscriptionState.subscription == key)
    state = session.scalar(query.with_for_update())
    if state is None:
        state = FhirSubscriptionState(subscription=key[:255], last_type="", gaps=0, updated_at=now)
        session.add(state)
        session.flush()
    return state
