"""The suite-wide log scan: no identifier, token or secret in any log line the tests caused.

``Collector`` is a logging handler on the root logger for the whole session (INFO, the level
the service logs at under gunicorn); tests that run the service as a child process add its
log file with ``scan_file``. At the end of the session every line is searched for:

- the tokens and secrets the suite configures (``CDS_EVENTS_TOKEN``, ``CDS_SECRET``, FHIR
  access tokens), collected from the test sources (``TOKEN = "..."``, ``SECRET = ...``,
  ``"CDS_SECRET": "..."``; at least 6 characters);
- anything shaped like a JWT (``eyJ...`` header and payload);
- patient identifiers and names: PID-3 identifiers (CX.1 of every repetition) and PID-5
  family and given names of every HL7 v2 message in tests/ (fixtures and test sources), and
  the identifiers the hardening tests use (``hardening.IDENTIFIERS``).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parent
_CONST = re.compile(
    r"""(?:TOKEN|SECRET|ACCESS_TOKEN)[A-Z_]*\s*=\s*["']([^"']{6,})["']"""
    r"""|"CDS_(?:SECRET|EVENTS_TOKEN)"\s*:\s*"([^"]{6,})\""""
)
_PID = re.compile(r"PID\|[^|\r\n]*\|[^|\r\n]*\|([^|\r\n]*)\|[^|\r\n]*\|([^|\r\n]*)")
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}")
NOT_IDENTIFIERS = frozenset({"MRN", "Test", "test", "Patient", "Unknown"})


def _pid_values(text: str) -> set[str]:
    out: set[str] = set()
    for ids, names in _PID.findall(text.replace("\\r", "\r")):
        for rep in ids.split("~"):
            out.add(rep.split("^")[0])
        for rep in names.split("~"):
            out.update(rep.split("^")[:2])
    return {v for v in out if len(v) >= 4 and v not in NOT_IDENTIFIERS and "\\" not in v}


def sensitive_values(extra: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Every secret, token and patient identifier the suite uses."""
    values = set(extra)
    for path in [*TESTS.rglob("*.py"), *TESTS.rglob("*.hl7")]:
        if ".venv" in path.parts or "node_modules" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for a, b in _CONST.findall(text):
            values.add(a or b)
        values |= _pid_values(text)
    return values


@dataclass
class Collector(logging.Handler):
    """Keeps the text of every record (message and traceback) for the final scan."""

    lines: list[tuple[str, str]] = field(default_factory=list)  # (source, text)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        logging.Handler.__init__(self, logging.DEBUG)

    def __hash__(self) -> int:
        return id(self)

    def emit(self, record: logging.LogRecord) -> None:
        """Record the formatted message and any traceback."""
        try:
            text = record.getMessage()
        except Exception:
            text = f"{record.msg} {record.args}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        with self.lock:
            self.lines.append((record.name, text))

    def scan_file(self, path: Path) -> None:
        """Add a child process's log file to the scan."""
        if path.exists():
            with self.lock:
                self.lines.append((f"file {path.name}", path.read_text("utf-8", "replace")))


def findings(lines: list[tuple[str, str]], values: set[str]) -> list[str]:
    """What in ``lines`` is a secret, a token, a JWT or an identifier (masked in the report)."""
    words = {v for v in values if v.isalnum()}
    other = values - words
    word_re = re.compile(r"\b(" + "|".join(map(re.escape, sorted(words))) + r")\b") if words else None
    out = []
    for source, text in lines:
        hits = {v for v in other if v in text}
        if word_re is not None:
            hits |= set(word_re.findall(text))
        if JWT.search(text):
            hits.add("a JWT")
        for hit in sorted(hits):
            out.append(f"{source}: {hit[:3]}… in a log line")
    return out
