"""The delivery worker: sends pending outbox rows (FHIR Communication, HL7 advisory ORU).

``deliver_pending(session, settings, now)`` claims due rows one by one (``pending`` →
``sending``, committed, so several processes never send one row twice), delivers each
with no transaction open, and records the attempt: ``sent``; or back to ``pending`` with
``next_attempt_at`` = now + backoff (30 s doubling, at most 1 h) and ``last_error``; or
``failed`` after ``MAX_ATTEMPTS``. Rows that must not go out are closed without sending:
``shadow`` (CDS_SHADOW), ``suppressed`` (test or late advice), ``cancelled`` (advice
withdrawn before it was sent, or a withdrawal of advice that never reached the channel).
A ``DeliveryLoop`` thread runs the worker periodically and when kicked after an event.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import requests
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from cds_service.config import Settings
from cds_service.events.outbound_queue import ADVICE, PENDING, WITHDRAWAL
from cds_service.events.outbound_send import Sender, default_sender
from cds_service.store.events_models import AdviceIssued, OutboxRow

log = logging.getLogger("cds_service.events.outbound")
SENDING, SENT, FAILED = "sending", "sent", "failed"
SHADOW, SUPPRESSED, CANCELLED = "shadow", "suppressed", "cancelled"
MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_MAX = timedelta(hours=1)
STALE_CLAIM = timedelta(minutes=10)
BATCH = 50


def backoff(attempts: int) -> timedelta:
    """The wait after ``attempts`` failed attempts (30 s, 60 s, 120 s, ... at most 1 h)."""
    wait: timedelta = BACKOFF_BASE * (2 ** max(0, attempts - 1))
    return min(BACKOFF_MAX, wait)


@dataclass
class Report:
    """Counts of one ``deliver_pending`` run, by outcome."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, status: str) -> None:
        """Count one row's outcome."""
        self.counts[status] = self.counts.get(status, 0) + 1


def _claim(session: Session, row_id: int, now: datetime) -> bool:
    claimed = session.execute(
        update(OutboxRow)
        .where(OutboxRow.id == row_id, OutboxRow.status == PENDING)
        .values(status=SENDING, updated_at=now)
    )
    session.commit()
    return bool(getattr(claimed, "rowcount", 0))


def _release_stale(session: Session, now: datetime) -> None:
    session.execute(
        update(OutboxRow)
        .where(OutboxRow.status == SENDING, OutboxRow.updated_at < now - STALE_CLAIM)
        .values(status=PENDING, updated_at=now)
    )
    session.commit()


def _closing_status(session: Session, row: OutboxRow, settings: Settings) -> str | None:
    """A status that closes the row without sending, ``"wait"``, or None to send it."""
    advice = session.get(AdviceIssued, row.advice_id)
    if advice is None:
        return CANCELLED
    if settings.shadow or advice.shadow:
        return SHADOW
    if advice.test or advice.late:
        return SUPPRESSED
    if row.kind == ADVICE and advice.withdrawn:
        return CANCELLED
    if row.kind == WITHDRAWAL:
        first = session.scalar(
            select(OutboxRow).where(
                OutboxRow.advice_id == row.advice_id,
                OutboxRow.channel == row.channel,
                OutboxRow.kind == ADVICE,
            )
        )
        if first is not None and first.status == SENDING:
            return "wait"
        if first is not None and first.status == PENDING:  # never sent: nothing to correct
            first.status, first.updated_at = CANCELLED, row.updated_at
        if first is None or first.status != SENT:
            return CANCELLED
    return None


def deliver_pending(
    session: Session,
    settings: Settings,
    now: datetime,
    *,
    sender: Sender | None = None,
    limit: int = BATCH,
) -> Report:
    """Deliver due outbox rows (see the module docstring); counts by outcome."""
    report = Report()
    _release_stale(session, now)
    due = list(
        session.scalars(
            select(OutboxRow.id)
            .where(OutboxRow.status == PENDING, OutboxRow.next_attempt_at <= now)
            .order_by(OutboxRow.next_attempt_at, OutboxRow.id)
            .limit(limit)
        )
    )
    send = sender or default_sender(settings)
    for row_id in due:
        if not _claim(session, row_id, now):
            continue
        row = session.get(OutboxRow, row_id, populate_existing=True)
        assert row is not None
        closing = _closing_status(session, row, settings)
        error: str | None = None
        if closing is None:
            error = send(session, row, now)
        if closing == "wait":
            row.status, row.next_attempt_at = PENDING, now + BACKOFF_BASE
        elif closing is not None:
            row.status = closing
        elif error is None:
            row.status, row.last_error = SENT, None
            row.attempts += 1
        else:
            row.attempts += 1
            row.last_error = error[:1000]
            row.status = FAILED if row.attempts >= MAX_ATTEMPTS else PENDING
            row.next_attempt_at = now + backoff(row.attempts)
            log.warning("outbox delivery failed row=%s channel=%s attempt=%d error=%s",
                        row.id, row.channel, row.attempts, row.last_error)  # fmt: skip
        row.updated_at = now
        session.commit()
        report.add(row.status)
    return report


class DeliveryLoop:
    """A daemon thread that runs ``deliver_pending`` every ``period`` s and when kicked."""

    def __init__(
        self, engine: Engine, settings: Settings, *, period: float = 15.0,
        clock: Callable[[], datetime] | None = None, sender: Sender | None = None,
    ) -> None:  # fmt: skip
        """Deliver from ``engine``'s outbox with ``settings``."""
        self.engine, self.settings, self.period, self.sender = engine, settings, period, sender
        self.clock = clock or (lambda: datetime.now(UTC))
        self._kick, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self.http = requests.Session()

    def start(self) -> DeliveryLoop:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cds-outbox", daemon=True)
            self._thread.start()
        return self

    def kick(self) -> None:
        """Run a delivery pass now."""
        self._kick.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the current pass."""
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run_once(self) -> Report:
        """One delivery pass (errors are logged, never raised)."""
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                send = self.sender or default_sender(self.settings, self.http)
                return deliver_pending(session, self.settings, self.clock(), sender=send)
        except Exception as exc:  # the loop must survive a database outage
            log.error("outbox delivery pass failed error=%s", type(exc).__name__)
            return Report()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._kick.wait(self.period)
            self._kick.clear()


def start_delivery(engine: Engine, settings: Settings, period: float = 15.0) -> DeliveryLoop | None:
    """A started ``DeliveryLoop`` when ``CDS_OUTBOUND`` names a channel, else None."""
    if not settings.outbound:
        return None
    return DeliveryLoop(engine, settings, period=period).start()
