"""One HL7 v2 message in, one ACK out: decode, de-duplicate, scan, store, evaluate, commit.

The message row (with its ACK) is committed in the same transaction as everything the
message changed, before the ACK is returned: an acknowledged message is never lost, and
a re-sent one (same MSH-3, MSH-4, MSH-10) gets the stored ACK again without reprocessing.
On SQLite, writes of one process are serialised by a lock (waiting on a lock is cheaper
and fairer than SQLite's busy-retry sleeps).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds_service.events import hl7_scan as S
from cds_service.events.hl7_ack import AckError, build_ack
from cds_service.events.hl7_er7 import NotHl7, Undecodable, decode, read_msh, sniff_msh
from cds_service.events.hl7_obx import Issue
from cds_service.events.hl7_parse import SegmentError
from cds_service.events.messages import (
    Outcome,
    Received,
    find_duplicate,
    log_outcome,
    message_row,
    outcome_of,
    safe,
)
from cds_service.events.process import Applied, Deps, Reject, apply_adt, apply_oru
from cds_service.store.events_models import Hl7Message

log = logging.getLogger("cds_service.events")
RAW_LIMIT = 65_536  # characters of an unreadable payload kept for diagnosis

__all__ = ["Ingestor", "Outcome"]


def nul_location(text: str) -> str:
    """ERR-2 location (segment^sequence^field) of the first U+0000 in an ER7 message."""
    at = text.index("\x00")
    segments = text[:at].split("\r")
    current = segments[-1]
    name = current[:3]
    sequence = sum(1 for seg in segments if seg[:3] == name)
    separator = text[3:4] or "|"
    field = current.count(separator) + (1 if name == "MSH" else 0)
    return f"{name}^{sequence}^{field}"


class _Duplicate(Exception):
    """The message row already exists (a concurrent copy committed first)."""


class Ingestor:
    """Handles messages against one database (thread-safe: a session per message)."""

    def __init__(
        self,
        engine: Engine,
        deps: Deps,
        *,
        encoding: str,
        max_bytes: int,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """Use ``engine`` (migrated) and the loaded ``deps``."""
        self.engine, self.deps, self.encoding, self.max_bytes = engine, deps, encoding, max_bytes
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock() if engine.dialect.name == "sqlite" else None

    @contextmanager
    def _writing(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    def _error(self, key: str, location: str, text: str) -> list[AckError]:
        return [AckError(self.deps.maps.errors[key], location, text)]

    def handle(
        self, raw: bytes, channel: str = "mllp", *, truncated: bool = False, charset: str = ""
    ) -> Outcome:
        """Process one message (never raises for any input) and return the ACK to send.

        ``truncated``: only the head of a message over the size limit was kept (AR).
        ``charset``: the transport's charset (HTTP), used when MSH-18 is empty.
        """
        default = charset or self.encoding
        msg = Received(None, default, None, self.clock(), channel)
        if truncated or len(raw) > self.max_bytes:
            try:
                msg.msh = sniff_msh(raw[:4096])
            except NotHl7:
                msg.msh = None
            return self._finish(
                msg, "AR", self._error("internal", "", "message exceeds the size limit"), None
            )
        try:
            msg.msh = sniff_msh(raw)
        except NotHl7:
            err = self._error("unsupported_message", "", "not an HL7 v2 message")
            return self._finish(msg, "AR", err, raw.decode("latin-1")[:RAW_LIMIT])
        maps = self.deps.maps
        try:
            msg.codec = maps.charsets.get(msg.msh.first(18).strip().upper(), default)
            msg.text = decode(raw, msg.msh, maps, default)
            msg.msh = read_msh(msg.text.split("\r", 1)[0])
        except (Undecodable, NotHl7):
            err = self._error(
                "data_type", "MSH^1^18", "bytes do not decode in the message character set"
            )
            return self._finish(msg, "AE", err, raw.decode("latin-1")[:RAW_LIMIT])
        if not msg.msh.control_id:
            err = self._error("required_field", "MSH^1^10", "MSH-10 message control id missing")
            return self._finish(msg, "AE", err, msg.text)
        dup = find_duplicate(self.engine, msg)
        if dup is not None:
            return dup
        if "\x00" in msg.text:  # not HL7 text; stored with U+FFFD in its place (store.engine)
            err = self._error("data_type", nul_location(msg.text), "NUL character in the message")
            return self._finish(msg, "AE", err, msg.text)
        if msg.msh.first(11).upper() not in maps.processing_ids:
            err = self._error(
                "unsupported_processing_id", "MSH^1^11", "MSH-11 processing id not supported"
            )
            return self._finish(msg, "AR", err, msg.text)
        segments = msg.text.split("\r")
        interest = S.scan(segments, msg.msh, maps, self.deps.table)
        if interest.kind == S.UNSUPPORTED:
            err = self._error(interest.error_key, "MSH^1^9", "message type not supported")
            return self._finish(msg, "AR", err, msg.text)
        if interest.kind == S.IGNORE:
            return self._finish(msg, "AA", [], None)
        return self._apply(msg, segments, interest)

    def _apply(self, msg: Received, segments: list[str], interest: S.Interest) -> Outcome:
        """Apply a message of interest and commit it with its ACK, in one transaction."""
        assert msg.msh is not None and msg.text is not None
        deps = self.deps
        if deps.maps.processing_ids.get(msg.msh.first(11).upper()) == "test":
            deps = replace(deps, policy=replace(deps.policy, test=True))
        try:
            with (
                self._writing(),
                Session(self.engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                row = message_row(msg, "AA", "", msg.text, True)
                session.add(row)
                try:
                    session.flush()
                except IntegrityError:
                    raise _Duplicate() from None
                if interest.kind in (S.ORU, S.RAS):
                    wanted = (*interest.obx, *interest.rxa)
                    done = apply_oru(session, segments, msg.msh, wanted, row, msg.arrival, deps)
                else:
                    action = deps.maps.adt_events[interest.event]
                    done = apply_adt(session, segments, msg.msh, action, row, msg.arrival, deps)
                outcome = self._settle(msg, row, done)
            log_outcome(msg, outcome)
            return outcome
        except _Duplicate:
            dup = find_duplicate(self.engine, msg)
            if dup is not None:
                return dup
            issue = Issue("internal", "", "message could not be stored")
        except Reject as exc:
            issue = exc.issue
        except SegmentError as exc:
            issue = Issue("segment_sequence", exc.location, str(exc))
        except Exception as exc:  # never crash on input; details stay out of the logs
            log.error(
                "hl7 processing failed control_id=%s error=%s",
                safe(msg.msh.control_id),
                type(exc).__name__,
            )
            issue = Issue("internal", "", "internal error while processing the message")
        return self._finish(msg, "AE", self._error(issue.key, issue.location, issue.text), msg.text)

    def _settle(self, msg: Received, row: Hl7Message, done: Applied) -> Outcome:
        """Set the message row's status and ACK from what applying it found."""
        code = "AE" if done.issues else "AA"
        errors = [AckError(self.deps.maps.errors[i.key], i.location, i.text) for i in done.issues]
        final = message_row(msg, code, build_ack(msg.msh, code, msg.arrival, errors), None, True)
        for name in ("status", "ack", "ack_sent"):
            setattr(row, name, getattr(final, name))
        row.patient_id = done.patient_id
        row.error = "; ".join(e.text for e in errors)[:1000] or None
        outcome = outcome_of(msg, row)
        return replace(outcome, advice=tuple(done.advice), evaluations=tuple(done.evaluations))

    def _finish(self, msg: Received, code: str, errors: list[AckError], raw: str | None) -> Outcome:
        """Store a message that is not applied (ignored, rejected, in error) with its ACK."""
        row = message_row(msg, code, build_ack(msg.msh, code, msg.arrival, errors), raw, False)
        row.error = "; ".join(e.text for e in errors)[:1000] or None
        try:
            with (
                self._writing(),
                Session(self.engine, expire_on_commit=False) as session,
                session.begin(),
            ):
                session.add(row)
        except IntegrityError:
            dup = find_duplicate(self.engine, msg)
            if dup is not None:
                return dup
        outcome = outcome_of(msg, row)
        log_outcome(msg, outcome)
        return outcome
