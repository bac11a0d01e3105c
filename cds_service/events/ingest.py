"""One HL7 v2 message in, one ACK out: decode, de-duplicate, scan, store, evaluate, commit.

The message row (with its ACK) is committed in the same transaction as everything the
message changed, before the ACK is returned: an acknowledged message is never lost, and
a re-sent one (same MSH-3, MSH-4, MSH-10) gets the stored ACK again without reprocessing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds_service.events import hl7_scan as S
from cds_service.events.advise import Evaluation
from cds_service.events.hl7_ack import AckError, ack_wanted, build_ack
from cds_service.events.hl7_er7 import Msh, NotHl7, Undecodable, decode, read_msh, sniff_msh
from cds_service.events.hl7_obx import Issue
from cds_service.events.hl7_parse import SegmentError
from cds_service.events.process import Applied, Deps, Reject, apply_adt, apply_oru
from cds_service.store.events_models import Hl7Message

log = logging.getLogger("cds_service.events")
RAW_LIMIT = 65_536  # characters of a rejected payload kept for diagnosis


@dataclass(frozen=True)
class Outcome:
    """What to answer: the ACK text (and bytes), whether to send it, and what happened."""

    code: str
    ack: str
    ack_bytes: bytes
    send: bool
    control_id: str = ""
    duplicate: bool = False
    advice: tuple[int, ...] = ()
    evaluations: tuple[Evaluation, ...] = ()
    codec: str = "utf-8"


@dataclass
class _Msg:
    msh: Msh | None
    codec: str
    text: str | None
    arrival: datetime
    channel: str


def _safe(value: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in value)[:64]


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

    def handle(
        self, raw: bytes, channel: str = "mllp", *, truncated: bool = False, charset: str = ""
    ) -> Outcome:
        """Process one message (never raises for any input) and return the ACK to send.

        ``truncated``: only the head of a message over the size limit was kept (AR).
        ``charset``: the transport's charset (HTTP), used when MSH-18 is empty.
        """
        default = charset or self.encoding
        msg = _Msg(None, default, None, self.clock(), channel)
        if truncated or len(raw) > self.max_bytes:
            try:
                msg.msh = sniff_msh(raw[:4096])
            except NotHl7:
                msg.msh = None
            err = AckError(self.deps.maps.errors["internal"], "", "message exceeds the size limit")
            return self._finish(msg, "AR", [err], None)
        try:
            msh = sniff_msh(raw)
        except NotHl7:
            return self._finish(
                msg,
                "AR",
                [AckError("200", "", "not an HL7 v2 message")],
                raw.decode("latin-1")[:RAW_LIMIT],
            )
        msg.msh = msh
        maps = self.deps.maps
        try:
            msg.text = decode(raw, msh, maps, default)
            msg.msh = read_msh(msg.text.split("\r", 1)[0])
            msg.codec = maps.charsets.get(msh.first(18).strip().upper(), default)
        except (Undecodable, NotHl7):
            err = AckError(
                maps.errors["data_type"],
                "MSH^1^18",
                "bytes do not decode in the message character set",
            )
            return self._finish(msg, "AE", [err], raw.decode("latin-1")[:RAW_LIMIT])
        assert msg.msh is not None
        if not msg.msh.control_id:
            err = AckError(
                maps.errors["required_field"], "MSH^1^10", "MSH-10 message control id missing"
            )
            return self._finish(msg, "AE", [err], msg.text)
        dup = self._duplicate(msg)
        if dup is not None:
            return dup
        if msg.msh.first(11).upper() not in maps.processing_ids:
            err = AckError(
                maps.errors["unsupported_processing_id"],
                "MSH^1^11",
                "MSH-11 processing id not supported",
            )
            return self._finish(msg, "AR", [err], msg.text)
        segments = msg.text.split("\r")
        interest = S.scan(segments, msg.msh, maps, self.deps.table)
        if interest.kind == S.UNSUPPORTED:
            err = AckError(maps.errors[interest.error_key], "MSH^1^9", "message type not supported")
            return self._finish(msg, "AR", [err], msg.text)
        if interest.kind == S.IGNORE:
            return self._finish(msg, "AA", [], None)
        return self._apply(msg, segments, interest)

    def _apply(self, msg: _Msg, segments: list[str], interest: S.Interest) -> Outcome:
        assert msg.msh is not None and msg.text is not None
        maps = self.deps.maps
        test = maps.processing_ids.get(msg.msh.first(11).upper()) == "test"
        deps = self.deps
        if test:
            deps = replace(deps, policy=replace(deps.policy, test=True))
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                row = self._row(msg, "AA", "", msg.text, True)
                session.add(row)
                try:
                    session.flush()
                except IntegrityError:
                    raise _Duplicate() from None
                if interest.kind == S.ORU:
                    done = apply_oru(
                        session, segments, msg.msh, interest.obx, row, msg.arrival, deps
                    )
                else:
                    action = maps.adt_events[interest.event]
                    done = apply_adt(session, segments, msg.msh, action, row, msg.arrival, deps)
                outcome = self._settle(msg, row, done)
            self._log(msg, outcome, done)
            return outcome
        except _Duplicate:
            dup = self._duplicate(msg)
            if dup is not None:
                return dup
            issue = Issue("internal", "", "message could not be stored")
        except Reject as exc:
            issue = exc.issue
        except SegmentError as exc:
            issue = Issue("segment_sequence", exc.location, str(exc))
        except Exception as exc:  # never crash on input; details stay out of logs
            log.error(
                "hl7 processing failed control_id=%s error=%s",
                _safe(msg.msh.control_id),
                type(exc).__name__,
            )
            issue = Issue("internal", "", "internal error while processing the message")
        err = AckError(maps.errors[issue.key], issue.location, issue.text)
        return self._finish(msg, "AE", [err], msg.text)

    def _settle(self, msg: _Msg, row: Hl7Message, done: Applied) -> Outcome:
        code = "AE" if done.issues else "AA"
        errors = [AckError(self.deps.maps.errors[i.key], i.location, i.text) for i in done.issues]
        ack = build_ack(msg.msh, code, msg.arrival, errors)
        row.status, row.ack, row.patient_id = code, ack, done.patient_id
        row.ack_sent = ack_wanted(msg.msh, code)
        row.error = "; ".join(e.text for e in errors)[:1000] or None
        return replace(
            self._outcome(msg, row, False, tuple(done.advice)), evaluations=tuple(done.evaluations)
        )

    def _row(self, msg: _Msg, code: str, ack: str, raw: str | None, interest: bool) -> Hl7Message:
        msh = msg.msh
        return Hl7Message(
            sender_app=msh.get(3)[:255] if msh else "",
            sender_facility=msh.get(4)[:255] if msh else "",
            control_id=(msh.control_id or None) if msh else None,
            message_type=msh.message_type[:32] if msh else "",
            processing_id=msh.first(11)[:8] if msh else "",
            version=msh.version[:16] if msh else "",
            channel=msg.channel,
            received_at=msg.arrival,
            status=code,
            interest=interest,
            raw=raw,
            ack=ack,
            ack_sent=ack_wanted(msh, code),
        )

    def _outcome(
        self, msg: _Msg, row: Hl7Message, duplicate: bool, advice: tuple[int, ...] = ()
    ) -> Outcome:
        try:
            data = row.ack.encode(msg.codec, errors="replace")
        except LookupError:
            data = row.ack.encode("utf-8")
        return Outcome(
            row.status,
            row.ack,
            data,
            row.ack_sent,
            row.control_id or "",
            duplicate,
            advice,
            codec=msg.codec,
        )

    def _finish(self, msg: _Msg, code: str, errors: list[AckError], raw: str | None) -> Outcome:
        """Store a message that is not applied (ignored, rejected, in error) with its ACK."""
        ack = build_ack(msg.msh, code, msg.arrival, errors)
        row = self._row(msg, code, ack, raw, False)
        row.error = "; ".join(e.text for e in errors)[:1000] or None
        try:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                session.add(row)
        except IntegrityError:
            dup = self._duplicate(msg)
            if dup is not None:
                return dup
        outcome = self._outcome(msg, row, False)
        self._log(msg, outcome, None)
        return outcome

    def _duplicate(self, msg: _Msg) -> Outcome | None:
        msh = msg.msh
        if msh is None or not msh.control_id:
            return None
        with Session(self.engine) as session:
            row = session.scalar(
                select(Hl7Message).where(
                    Hl7Message.sender_app == msh.get(3)[:255],
                    Hl7Message.sender_facility == msh.get(4)[:255],
                    Hl7Message.control_id == msh.control_id,
                )
            )
            if row is None:
                return None
            outcome = self._outcome(msg, row, True)
        self._log(msg, outcome, None)
        return outcome

    def _log(self, msg: _Msg, outcome: Outcome, done: Applied | None) -> None:
        msh = msg.msh
        log.info(
            "hl7 %s control_id=%s type=%s status=%s duplicate=%s advice=%d",
            msg.channel,
            _safe(msh.control_id) if msh else "-",
            _safe(msh.message_type) if msh else "-",
            outcome.code,
            outcome.duplicate,
            len(done.advice) if done else 0,
        )


class _Duplicate(Exception):
    """The message row already exists (a concurrent copy committed first)."""
