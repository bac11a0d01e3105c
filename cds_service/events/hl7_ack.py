"""ACK messages: original mode AA/AE/AR, enhanced mode commit ACKs CA/CE/CR, ERR segments."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from cds_service.events.hl7_er7 import Msh, Separators

OUR_APPLICATION = "MG-AKI-CDS"
DEFAULT_VERSION = "2.5.1"
ERROR_TEXTS = {
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "207": "Application internal error",
}
ENHANCED = {"AA": "CA", "AE": "CE", "AR": "CR"}


@dataclass(frozen=True)
class AckError:
    """One ERR segment: table 0357 code, ERL location (``SEG^seq^field``), text, severity."""

    code: str
    location: str = ""
    text: str = ""
    severity: str = "E"


def escape(text: str, seps: Separators) -> str:
    """Escape separators in free text (ERR-8)."""
    out = text.replace(seps.escape, f"{seps.escape}E{seps.escape}")
    for char, code in (
        (seps.field, "F"),
        (seps.component, "S"),
        (seps.subcomponent, "T"),
        (seps.repetition, "R"),
    ):
        out = out.replace(char, f"{seps.escape}{code}{seps.escape}")
    return out.replace("\r", " ").replace("\n", " ")


def is_enhanced(msh: Msh | None) -> bool:
    """Enhanced acknowledgment mode: MSH-15 is set."""
    return msh is not None and bool(msh.first(15).strip())


def ack_wanted(msh: Msh | None, code: str) -> bool:
    """Whether to send the ACK at all (enhanced mode: MSH-15 AL / ER / SU / NE)."""
    if not is_enhanced(msh):
        return True
    assert msh is not None
    mode = msh.first(15).strip().upper()
    if mode == "NE":
        return False
    if mode == "ER":
        return code != "AA"
    if mode == "SU":
        return code == "AA"
    return True


def _err(error: AckError, seps: Separators, version: str) -> str:
    fs, cs = seps.field, seps.component
    code = f"{error.code}{cs}{escape(ERROR_TEXTS.get(error.code, ''), seps)}{cs}HL70357"
    location = seps.component.join(error.location.split("^")) if error.location else ""
    eld = ""
    if version < "2.5":  # ERR-1 (ELD) is the error field before v2.5
        parts = [*error.location.split("^"), "", "", ""][:3]
        sub = seps.subcomponent
        eld = cs.join([*parts, sub.join([error.code, ERROR_TEXTS.get(error.code, ""), "HL70357"])])
    fields = ["ERR", eld, location, code, error.severity, "", "", "", escape(error.text, seps)]
    return fs.join(fields)


def build_ack(
    msh: Msh | None, code: str, now: datetime, errors: list[AckError] | tuple[AckError, ...] = ()
) -> str:
    """The ACK (CR-separated ER7) for a message; ``msh`` None for a payload that is not HL7.

    ``code`` is the original-mode code (AA/AE/AR); enhanced mode turns it into CA/CE/CR.
    """
    seps = msh.seps if msh is not None else Separators()
    fs = seps.field
    version = (msh.version if msh is not None else "") or DEFAULT_VERSION
    trigger = msh.first(9, 2) if msh is not None else ""
    control = uuid.uuid4().hex[:20].upper()
    stamp = now.strftime("%Y%m%d%H%M%S") + now.strftime("%z")
    if msh is not None:
        ours = [msh.get(5) or OUR_APPLICATION, msh.get(6), msh.get(3), msh.get(4)]
        processing = msh.get(11) or "P"
    else:
        ours = [OUR_APPLICATION, "", "", ""]
        processing = "P"
    ack_type = f"ACK{seps.component}{trigger}{seps.component}ACK" if trigger else "ACK"
    header = ["MSH", seps.msh2, *ours, stamp, "", ack_type, control, processing, version]
    if msh is not None and msh.get(18):
        header += ["", "", "", "", "", msh.get(18)]
    msa_code = ENHANCED[code] if is_enhanced(msh) else code
    first_error = errors[0].text if errors else ""
    msa = ["MSA", msa_code, msh.control_id if msh is not None else ""]
    if first_error and version < "2.5":
        msa.append(escape(first_error, seps))
    segments = [fs.join(header), fs.join(msa)]
    segments += [_err(e, seps, version) for e in errors]
    return "\r".join(segments)
