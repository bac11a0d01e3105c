"""ER7 text: decoding by MSH-18, segment separators, the MSH header, component splitting."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cds_service.events.hl7_config import Hl7Maps

MAX_FIELD = 255  # stored header fields are cut to this length


class NotHl7(ValueError):
    """The payload is not an HL7 v2 message (no MSH segment with its separators)."""


class Undecodable(ValueError):
    """The bytes do not decode in the message's character set."""


@dataclass(frozen=True)
class Separators:
    """Field separator and encoding characters of one message."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def msh2(self) -> str:
        """MSH-2 as hl7apy accepts it (four characters; a v2.7 truncation char is dropped)."""
        return self.component + self.repetition + self.escape + self.subcomponent


@dataclass(frozen=True)
class Msh:
    """The MSH fields the listener needs, as raw ER7 text."""

    seps: Separators
    fields: tuple[str, ...]

    def get(self, n: int) -> str:
        """MSH-n as sent (MSH-1 is the field separator)."""
        if n == 1:
            return self.seps.field
        return self.fields[n - 1] if n - 1 < len(self.fields) else ""

    def first(self, n: int, component: int = 1) -> str:
        """Component ``component`` of the first repetition of MSH-n."""
        return component_of(self.get(n).split(self.seps.repetition)[0], component, self.seps)

    @property
    def control_id(self) -> str:
        """MSH-10."""
        return self.get(10)[:MAX_FIELD]

    @property
    def message_type(self) -> str:
        """``CODE^TRIGGER`` from MSH-9."""
        return f"{self.first(9, 1).upper()}^{self.first(9, 2).upper()}"

    @property
    def version(self) -> str:
        """MSH-12 version id."""
        return self.first(12, 1)


def component_of(value: str, n: int, seps: Separators) -> str:
    """Component n (1-based) of a field repetition, '' when absent."""
    parts = value.split(seps.component)
    return parts[n - 1] if n - 1 < len(parts) else ""


def read_msh(first_segment: str) -> Msh:
    """The MSH header of a message.

    :raises NotHl7: not an MSH segment with a field separator and encoding characters.
    """
    if len(first_segment) < 8 or not first_segment.startswith("MSH"):
        raise NotHl7("no MSH segment")
    fs = first_segment[3]
    if fs.isalnum() or fs in " \r\n":
        raise NotHl7("bad field separator")
    fields = first_segment.split(fs)
    enc = fields[1] if len(fields) > 1 else ""
    if len(enc) < 4 or len(set(enc[:4] + fs)) != 5 or any(c.isalnum() for c in enc[:4]):
        raise NotHl7("bad encoding characters")
    seps = Separators(fs, enc[0], enc[1], enc[2], enc[3])
    return Msh(seps, tuple(fields))


def sniff_msh(raw: bytes) -> Msh:
    """The MSH header read from the raw bytes (ASCII-compatible charsets).

    :raises NotHl7: no MSH segment at the start.
    """
    head = raw[:4096].lstrip(b"\xef\xbb\xbf \t\r\n").decode("latin-1")
    return read_msh(re.split(r"\r\n|\r|\n", head, maxsplit=1)[0])


def decode(raw: bytes, msh: Msh, maps: Hl7Maps, default: str) -> str:
    """The message text, decoded by MSH-18 (else ``default``), separators normalised to CR.

    :raises Undecodable: the bytes are not valid in that character set.
    """
    name = msh.first(18).strip().upper()
    codec = maps.charsets.get(name) if name else None
    try:
        text = raw.decode(codec or default)
    except (UnicodeDecodeError, LookupError):
        raise Undecodable(f"bytes do not decode as {codec or default}") from None
    return normalise(text)


def normalise(text: str) -> str:
    """CR-separated segments: LF and CRLF become CR, blank lines and a BOM are dropped."""
    text = text.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r")
    return "\r".join(s for s in text.split("\r") if s.strip())


_ESCAPES = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition", "E": "escape"}


def unescape(value: str, seps: Separators) -> str:
    """Resolve \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ and \\Xhh\\ escapes; formatting escapes are dropped."""
    esc = seps.escape
    if esc not in value:
        return value
    out: list[str] = []
    parts = value.split(esc)
    out.append(parts[0])
    i = 1
    while i < len(parts):
        if i + 1 >= len(parts):  # an unpaired escape character stays as sent
            out.append(esc + parts[i])
            break
        seq = parts[i]
        if seq in _ESCAPES:
            out.append(getattr(seps, _ESCAPES[seq]))
        elif seq.startswith("X") and len(seq) % 2 == 1:
            try:
                out.append(bytes.fromhex(seq[1:]).decode("latin-1"))
            except ValueError:
                pass
        out.append(parts[i + 1])
        i += 2
    return "".join(out)
