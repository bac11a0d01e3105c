"""``cds-service example``: the sample CDS Hooks request and HL7 v2 messages, with fresh times.

The files in ``examples/`` keep fixed times; the command moves every date-time in them by
the same amount so that the newest lies ``LAG`` before now (dates without a time, such as a
birth date, stay). The first card of a newcomer is then always the intended one, however
old the checkout. ``example hl7 --send`` sends the ADT and the ORU over MLLP, prints each
ACK, and then the advice the service issued for them (read from its database).
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cds_service.config import Settings, settings_for_command
from cds_service.events.mllp_frames import FrameReader, TooLarge, frame

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REQUESTS = {"patient-view": "patient-view-low-mg.json"}
MESSAGES = ("adt-a01-micu.hl7", "oru-r01-low-mg.hl7")
LAG = timedelta(hours=1)  # the newest time of an example lies this long before now
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})$")
_HL7_TIME = re.compile(r"(?<=[|^])(\d{14}|\d{12})(?=[|^\r]|$)")
ADVICE_WAIT = 5.0


def _iso_times(node: Any) -> list[datetime]:
    if isinstance(node, dict):
        return [t for v in node.values() for t in _iso_times(v)]
    if isinstance(node, list):
        return [t for v in node for t in _iso_times(v)]
    if isinstance(node, str) and _ISO.match(node):
        return [datetime.fromisoformat(node.replace("Z", "+00:00"))]
    return []


def _shift_json(node: Any, delta: timedelta) -> Any:
    if isinstance(node, dict):
        return {k: _shift_json(v, delta) for k, v in node.items()}
    if isinstance(node, list):
        return [_shift_json(v, delta) for v in node]
    if isinstance(node, str) and _ISO.match(node):
        moved = datetime.fromisoformat(node.replace("Z", "+00:00")) + delta
        return moved.isoformat(timespec="seconds")
    return node


def fresh_request(name: str, now: datetime) -> dict[str, Any]:
    """The example CDS Hooks request ``name`` with its newest time ``LAG`` before ``now``."""
    data = json.loads((EXAMPLES / REQUESTS[name]).read_text(encoding="utf-8"))
    newest = max(_iso_times(data))
    shifted: dict[str, Any] = _shift_json(data, now - LAG - newest)
    shifted["hookInstance"] = str(uuid.uuid4())
    return shifted


def _hl7_time(text: str) -> datetime:
    return datetime.strptime(text.ljust(14, "0"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def fresh_messages(now: datetime) -> list[str]:
    """The example ADT^A01 and ORU^R01 (``\\r`` separators), times moved, control ids new."""
    texts = [(EXAMPLES / name).read_bytes().decode("utf-8") for name in MESSAGES]  # keep \\r
    newest = max(_hl7_time(m.group(1)) for t in texts for m in _HL7_TIME.finditer(t))
    delta = now - LAG - newest
    run = now.strftime("%Y%m%d%H%M%S")
    out = []
    for i, text in enumerate(texts, 1):
        moved = _HL7_TIME.sub(
            lambda m: (_hl7_time(m.group(1)) + delta).strftime("%Y%m%d%H%M%S")[: len(m.group(1))],
            text,
        )
        fields = moved.split("\r", 1)[0].split("|")
        fields[9] = f"{fields[9]}-{run}-{i}"  # MSH-10: a new control id per run (no duplicate)
        out.append("|".join(fields) + "\r" + moved.split("\r", 1)[1])
    return out


def control_id(message: str) -> str:
    """MSH-10 of an ER7 message."""
    return message.split("\r", 1)[0].split("|")[9]


def send_mllp(host: str, port: int, messages: list[str], timeout: float = 30.0) -> list[str]:
    """Send each message on one connection and wait for its ACK; the ACKs (ER7).

    :raises OSError: no listener, or the connection broke.
    """
    acks = []
    reader = FrameReader(1 << 20)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        for message in messages:
            sock.sendall(frame(message.encode("utf-8")))
            frames: list[bytes | TooLarge] = []
            while not frames:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("the listener closed the connection before the ACK")
                frames = reader.feed(data)
            first = frames[0]
            acks.append(
                first.head.decode() if isinstance(first, TooLarge) else first.decode("utf-8")
            )
    return acks


def issued_advice(settings: Settings, control_ids: list[str]) -> list[dict[str, Any]]:
    """The advice the service stored for these messages (summary, indicator, rules, detail)."""
    from sqlalchemy import select

    from cds_service.store import open_store
    from cds_service.store.events_models import AdviceIssued, Hl7Message

    store = open_store(settings.database_url, settings.secret)
    query = (
        select(AdviceIssued, Hl7Message.control_id)
        .join(Hl7Message, AdviceIssued.message_id == Hl7Message.id)
        .where(Hl7Message.control_id.in_(control_ids))
        .order_by(AdviceIssued.id)
    )
    with store.engine.connect() as conn:
        from sqlalchemy.orm import Session

        with Session(bind=conn) as session:
            return [
                {"message": cid, "indicator": a.indicator, "summary": a.summary, "rules": a.rules,
                 "detail": (a.detail or {}).get("detail", "")}
                for a, cid in session.execute(query).all()
            ]  # fmt: skip


def _cmd_example(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    if args.kind != "hl7":
        print(json.dumps(fresh_request(args.kind, now), ensure_ascii=False, indent=1))
        return 0
    messages = fresh_messages(now)
    if not args.send:
        print("\n\n".join(m.replace("\r", "\n").strip() for m in messages))
        return 0
    settings = settings_for_command()
    host, port = args.host or settings.mllp_host, args.port or settings.mllp_port
    try:
        acks = send_mllp(host, port, messages)
    except OSError as exc:
        print(f"error: no MLLP listener at {host}:{port} ({exc.__class__.__name__}); "
              "start `make run` first, or set CDS_MLLP_PORT", file=sys.stderr)  # fmt: skip
        return 1
    for message, ack in zip(messages, acks, strict=True):
        kind = message.split("\r", 1)[0].split("|")[8]
        print(f"sent {kind} {control_id(message)}; ACK:")
        print("  " + ack.strip().replace("\r", "\n  "))
    return _print_advice(settings, [control_id(m) for m in messages])


def _print_advice(settings: Settings, ids: list[str]) -> int:
    from cds_service.render.plain import markdown_to_text

    deadline = time.monotonic() + ADVICE_WAIT
    advice = issued_advice(settings, ids)
    while not advice and time.monotonic() < deadline:
        time.sleep(0.2)
        advice = issued_advice(settings, ids)
    if not advice:
        print(
            "no new advice for these messages: advice is issued once per patient, rule and "
            "result, so a message sent again (same control id or same results) adds none"
        )
        return 0
    for a in advice:
        print(f"\nadvice for {a['message']}: [{a['indicator']}] {a['summary']}")
        print(f"  rules: {', '.join(a['rules'])}")
        print("  " + markdown_to_text(a["detail"]).replace("\n", "\n  "))
    return 0


def add_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``example`` on the ``cds-service`` parser."""
    ex = sub.add_parser("example", help="print a sample request or HL7 messages with fresh times")
    ex.add_argument(
        "kind", choices=[*REQUESTS, "hl7"], help="patient-view: a CDS Hooks request; hl7: ADT + ORU"
    )
    ex.add_argument(
        "--send", action="store_true", help="hl7: send over MLLP, show the ACKs and the advice"
    )
    ex.add_argument("--host", help="MLLP host (default $CDS_MLLP_HOST or 127.0.0.1)")
    ex.add_argument("--port", type=int, help="MLLP port (default $CDS_MLLP_PORT or 2575)")
    ex.set_defaults(func=_cmd_example)
