"""Segment parsing with ``hl7apy`` (the product's named parser) into plain field lists.

Only the segments the store reads are parsed (EVN, PID, PV1, ORC, OBR, SPM, the OBX and
RXA of interest, DG1, PR1, MRG; MSH is read by ``hl7_er7``), and of those only the fields it
reads; the rest are skipped, so a Z-segment or a segment of a later version (PRT)
never fails a message. Segments are parsed one by one in the
order sent and grouped by position (an OBX belongs to the OBR before it), which works
the same in every version: no version-dependent group names are needed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hl7apy import SUPPORTED_LIBRARIES
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_segment

from cds_service.events.hl7_er7 import Msh, Separators, component_of, unescape

FALLBACK_VERSION = "2.5.1"
# The fields the store reads, per segment; only these are handed to hl7apy (the rest of a
# segment, e.g. names and addresses in PID, is never parsed).
FIELDS: dict[str, frozenset[int]] = {
    "EVN": frozenset({2, 6}),
    "PID": frozenset({3, 7, 8}),
    "PV1": frozenset({2, 3, 19, 44, 45}),
    "ORC": frozenset({12}),
    "OBR": frozenset({7, 15, 16}),
    "OBX": frozenset({1, 2, 3, 5, 6, 7, 8, 11, 14}),
    "SPM": frozenset({4}),
    "RXA": frozenset({3, 4, 5, 6, 7, 20, 21}),
    "DG1": frozenset({3, 5, 6}),
    "PR1": frozenset({3, 5}),
    "MRG": frozenset({1}),
}
CONTEXT_SEGMENTS = frozenset(FIELDS) - {"OBX", "RXA"}
#: segments read only at the positions the cheap scan found of interest
ITEM_SEGMENTS = frozenset({"OBX", "RXA"})
#: segments newer than some versions we take: parsed with 2.5.1 in an older message
SINCE_2_5 = frozenset({"SPM"})


class SegmentError(ValueError):
    """A segment hl7apy cannot parse; ``location`` is ``SEG^seq`` for ERR-2."""

    def __init__(self, location: str, text: str) -> None:
        """Remember where the error is (no field content: it may hold patient data)."""
        super().__init__(text)
        self.location = location


@dataclass(frozen=True)
class Seg:
    """One parsed segment: its name, position, and each field's repetitions as ER7 text."""

    name: str
    index: int
    fields: dict[int, tuple[str, ...]]
    seps: Separators

    def reps(self, n: int) -> tuple[str, ...]:
        """The repetitions of field n (empty tuple when absent)."""
        return self.fields.get(n, ())

    def field(self, n: int) -> str:
        """The first repetition of field n as ER7 text ('' when absent)."""
        reps = self.fields.get(n)
        return reps[0] if reps else ""

    def comp(self, n: int, c: int = 1, rep: str | None = None) -> str:
        """Component c of field n (first repetition unless ``rep`` given), unescaped."""
        value = self.field(n) if rep is None else rep
        return unescape(component_of(value, c, self.seps), self.seps).strip()

    def sub(self, value: str, n: int) -> str:
        """Subcomponent n of a component value, unescaped."""
        parts = value.split(self.seps.subcomponent)
        return unescape(parts[n - 1], self.seps).strip() if n - 1 < len(parts) else ""


def version_for(msh: Msh) -> str:
    """The hl7apy version to parse with: MSH-12 when hl7apy knows it, else 2.5.1."""
    version = msh.version.strip()
    return version if version in SUPPORTED_LIBRARIES and version >= "2.3" else FALLBACK_VERSION


def _encoding(seps: Separators) -> dict[str, str]:
    return {
        "GROUP": "\r",
        "SEGMENT": "\r",
        "FIELD": seps.field,
        "COMPONENT": seps.component,
        "SUBCOMPONENT": seps.subcomponent,
        "REPETITION": seps.repetition,
        "ESCAPE": seps.escape,
    }


def parse_one(text: str, index: int, msh: Msh, version: str) -> Seg:
    """Parse one segment with hl7apy.

    :raises SegmentError: hl7apy rejects the segment.
    """
    name = text[:3]
    wanted = FIELDS.get(name)
    if wanted is not None:
        fields = text.split(msh.seps.field)
        kept = [f if i in wanted else "" for i, f in enumerate(fields[1:], 1)]
        text = msh.seps.field.join([name, *kept]).rstrip(msh.seps.field)
    try:
        seg = parse_segment(text, version=version, encoding_chars=_encoding(msh.seps))
    except (HL7apyException, ValueError, TypeError, IndexError, KeyError) as exc:
        raise SegmentError(f"{name}^{index + 1}", f"{name} segment cannot be parsed") from exc
    fields_out: dict[int, list[str]] = {}
    for child in seg.children:
        child_name = child.name or ""
        _, _, number = child_name.rpartition("_")
        if number.isdigit():
            fields_out.setdefault(int(number), []).append(child.to_er7())
    return Seg(name, index, {k: tuple(v) for k, v in fields_out.items()}, msh.seps)


def parse_segments(segments: list[str], msh: Msh, wanted: set[int]) -> list[Seg]:
    """Parse the context segments and the OBX/RXA at the ``wanted`` positions, in message order.

    :raises SegmentError: a needed segment hl7apy rejects.
    """
    version = version_for(msh)
    out = []
    for i, text in enumerate(segments):
        name = text[:3]
        if name in CONTEXT_SEGMENTS or (name in ITEM_SEGMENTS and i in wanted):
            newer = name in SINCE_2_5 and version < "2.5"
            out.append(parse_one(text, i, msh, FALLBACK_VERSION if newer else version))
    return out
