"""Advice as an advisory ORU^R01 (v2.5.1, UTF-8) sent over MLLP to ``CDS_HL7_OUTBOUND``.

OBR-4 is a local universal service id; OBX TX lines carry the summary and the detail;
OBX-11 is F for advice and D when it is withdrawn (OBR-25 C). The control id is fixed per
outbox row, so a retried message is recognisable as the same one. The sender waits for
the ACK: AA/CA is delivered, anything else (or no ACK in time) is an error to retry.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime

from cds_service.events.fhir_results import FHIR_PATIENT_SYSTEM
from cds_service.events.hl7_ack import OUR_APPLICATION, escape
from cds_service.events.hl7_er7 import Separators
from cds_service.events.mllp_frames import FrameReader, TooLarge, frame
from cds_service.store.events_models import AdviceIssued, Patient

SEPS = Separators()
SERVICE = "MG-AKI-ADVICE^Magnesium-AKI advisory^L"
MAX_DETAIL_LINES = 120
ACK_LIMIT = 1 << 20


class DeliveryError(Exception):
    """The destination did not accept the message (no connection, no ACK, AE/AR)."""


def ts(when: datetime) -> str:
    """An HL7 DTM with seconds and offset (UTC)."""
    return when.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def patient_cx(patient: Patient) -> str:
    """PID-3 for the stored identifier (assigning authority from its system)."""
    value, system = escape(patient.id_value, SEPS), patient.id_system
    if system.startswith("urn:oid:"):
        return f"{value}^^^&{escape(system[8:], SEPS)}&ISO^MR"
    if system.startswith("urn:hl7v2:aa:"):
        return f"{value}^^^{escape(system[13:], SEPS)}^MR"
    if system.startswith("urn:hl7v2:cx5:"):
        return f"{value}^^^^{escape(system[14:], SEPS)}"
    if system == FHIR_PATIENT_SYSTEM:
        return f"{value}^^^FHIR^PI"
    return f"{value}^^^&{escape(system, SEPS)}&URI^MR"


def _xcn(orderer: str) -> str:
    """OBR-16 from a stored XCN (as received); FHIR references are not an XCN."""
    if not orderer or orderer.startswith(("Practitioner/", "PractitionerRole/")):
        return ""
    return orderer.split("~", 1)[0].replace("|", " ").replace("\r", " ")


def build_oru(
    advice: AdviceIssued,
    patient: Patient,
    control_id: str,
    now: datetime,
    *,
    orderer: str = "",
    withdrawn: bool = False,
    receiver: tuple[str, str] = ("", ""),
) -> str:
    """The advisory ORU^R01 as ER7 text (segments separated by CR)."""
    status = "D" if withdrawn else "F"
    msh = ["MSH", SEPS.msh2, OUR_APPLICATION, "CDS", receiver[0], receiver[1], ts(now), "",
           "ORU^R01^ORU_R01", control_id, "P", "2.5.1", *[""] * 5, "UNICODE UTF-8"]  # fmt: skip
    obr = ["OBR", "1", f"{escape(str(advice.id), SEPS)}^{OUR_APPLICATION}", "", SERVICE, "", "",
           ts(advice.evaluated_at), *[""] * 8, _xcn(orderer), *[""] * 5, ts(now), "", "",
           "C" if withdrawn else "F"]  # fmt: skip
    segments = ["|".join(msh), f'PID|1||{patient_cx(patient)}||""', "|".join(obr)]
    detail = advice.detail.get("detail") if isinstance(advice.detail, dict) else None
    lines: list[tuple[str, str, str]] = [
        ("TX", "MG-AKI-SUMMARY^Advice summary^L", advice.summary),
        ("ST", "MG-AKI-INDICATOR^Advice indicator^L", advice.indicator),
        ("ST", "MG-AKI-RULE^Lead rule^L", advice.rule_id),
    ]
    if withdrawn:
        lines.append(("TX", "MG-AKI-STATUS^Advice status^L", "Withdrawn: the result it rested "
                      "on was corrected or retracted."))  # fmt: skip
    if isinstance(detail, str):
        for line in [x for x in detail.splitlines() if x.strip()][:MAX_DETAIL_LINES]:
            lines.append(("TX", "MG-AKI-DETAIL^Advice detail^L", line[:2000]))
    for n, (vtype, code, text) in enumerate(lines, start=1):
        obx = ["OBX", str(n), vtype, code, "1", escape(text, SEPS), "", "", "", "", "", status,
               "", "", ts(advice.evaluated_at)]  # fmt: skip
        segments.append("|".join(obx))
    return "\r".join(segments) + "\r"


def destination(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``) of ``CDS_HL7_OUTBOUND``.

    :raises DeliveryError: not set or not of that form.
    """
    host, _, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DeliveryError("CDS_HL7_OUTBOUND is not host:port")
    return host, int(port)


def ack_code(ack: bytes, control_id: str) -> str:
    """MSA-1 of an ACK that answers ``control_id``.

    :raises DeliveryError: not an ACK, or an ACK of another message.
    """
    text = ack.decode("utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r")
    for seg in text.split("\r"):
        if seg.startswith("MSA") and len(seg) > 4:
            fields = seg.split(seg[3])
            code = fields[1].strip().upper() if len(fields) > 1 else ""
            answered = fields[2].strip() if len(fields) > 2 else ""
            if answered != control_id:
                raise DeliveryError("ACK for another message")
            return code
    raise DeliveryError("answer is not an ACK")


def send_mllp(address: str, message: str, control_id: str, timeout: float = 10.0) -> str:
    """Send one message and wait for its ACK; the MSA-1 code (AA/CA).

    :raises DeliveryError: connection, timeout, or an ACK other than AA/CA.
    """
    host, port = destination(address)
    reader = FrameReader(ACK_LIMIT)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(frame(message.encode("utf-8")))
            while True:
                data = sock.recv(65536)
                if not data:
                    raise DeliveryError("connection closed before the ACK")
                frames = reader.feed(data)
                if frames:
                    break
    except TimeoutError:
        raise DeliveryError("no ACK in time") from None
    except OSError as exc:
        raise DeliveryError(f"connection failed: {type(exc).__name__}") from None
    first = frames[0]
    if isinstance(first, TooLarge):
        raise DeliveryError("ACK too large")
    code = ack_code(first, control_id)
    if code not in ("AA", "CA"):
        raise DeliveryError(f"ACK {code or '?'}")
    return code
