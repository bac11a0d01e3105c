"""The message log: one ``hl7_message`` row per message, duplicates, outcomes, log lines."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cds_service.events.advise import Evaluation
from cds_service.events.hl7_ack import ack_wanted
from cds_service.events.hl7_er7 import Msh
from cds_service.store.events_models import Hl7Message

log = logging.getLogger("cds_service.events")


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
class Received:
    """One message as received: header (when HL7), character set, text, arrival, channel."""

    msh: Msh | None
    codec: str
    text: str | None
    arrival: datetime
    channel: str


def safe(value: str) -> str:
    """A header value fit for a log line (printable, short)."""
    return "".join(c if c.isprintable() else "?" for c in value)[:64]


def message_row(msg: Received, code: str, ack: str, raw: str | None, interest: bool) -> Hl7Message:
    """The log row of a message (sender, control id, type, status, ACK, raw text when kept)."""
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


def outcome_of(msg: Received, row: Hl7Message, duplicate: bool = False) -> Outcome:
    """The Outcome a stored message row stands for (its ACK encoded like the message)."""
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
        codec=msg.codec,
    )


def find_duplicate(engine: Engine, msg: Received) -> Outcome | None:
    """The stored outcome of the same MSH-3, MSH-4 and MSH-10, if seen before."""
    msh = msg.msh
    if msh is None or not msh.control_id:
        return None
    with Session(engine) as session:
        row = session.scalar(
            select(Hl7Message).where(
                Hl7Message.sender_app == msh.get(3)[:255],
                Hl7Message.sender_facility == msh.get(4)[:255],
                Hl7Message.control_id == msh.control_id,
            )
        )
        if row is None:
            return None
        outcome = outcome_of(msg, row, duplicate=True)
    log_outcome(msg, outcome)
    return outcome


def log_outcome(msg: Received, outcome: Outcome) -> None:
    """One log line per message: channel, control id, type, status (never patient data)."""
    msh = msg.msh
    log.info(
        "hl7 %s control_id=%s type=%s status=%s duplicate=%s advice=%d",
        msg.channel,
        safe(msh.control_id) if msh else "-",
        safe(msh.message_type) if msh else "-",
        outcome.code,
        outcome.duplicate,
        len(outcome.advice),
    )
