"""The cheap scan: is a message of interest? MSH-9, OBX-3 and RXA-5 by ``str.split``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cds_service.clinical.fhir_labs import LabTable, classify_codings
from cds_service.clinical.model import Coding, Concept
from cds_service.events.hl7_config import Hl7Maps
from cds_service.events.hl7_er7 import Msh, Separators, component_of, unescape

ORU = "oru"
RAS = "ras"
ADT = "adt"
IGNORE = "ignore"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Interest:
    """What the scan found: the kind of message and, for ORU, the OBX of interest."""

    kind: str
    event: str = ""
    error_key: str = ""
    obx: tuple[int, ...] = ()  # indexes (in the segment list) of OBX segments of interest
    rxa: tuple[int, ...] = ()  # indexes of RXA segments (medications given) of interest


def obx_codings(obx3: str, seps: Separators, maps: Hl7Maps) -> tuple[Coding, ...]:
    """The codings of OBX-3 (CE/CWE: identifier and alternate identifier triplets)."""
    out = []
    for first in (1, 4):
        code = unescape(component_of(obx3, first, seps), seps).strip()
        system = unescape(component_of(obx3, first + 2, seps), seps).strip()
        if code:
            display = unescape(component_of(obx3, first + 1, seps), seps) or None
            out.append(Coding(maps.system_uri(system) if system else "", code, display))
    return tuple(out)


def rxa_concept(rxa5: str, seps: Separators, maps: Hl7Maps) -> Concept:
    """The medication of RXA-5 (CE/CWE, like OBX-3): its codings and the first text."""
    codings = obx_codings(rxa5, seps, maps)
    return Concept(
        tuple(c for c in codings if c.system), next((c.display for c in codings if c.display), None)
    )


def _items(
    segments: list[str], name: str, field: int, msh: Msh, of_interest: Callable[[str], bool]
) -> tuple[int, ...]:
    """Positions of the ``name`` segments whose field ``field`` is of interest."""
    fs = msh.seps.field
    found = []
    for i, seg in enumerate(segments):
        if not seg.startswith(name + fs):
            continue
        fields = seg.split(fs, field + 1)
        if len(fields) > field and of_interest(fields[field]):
            found.append(i)
    return tuple(found)


def scan(segments: list[str], msh: Msh, maps: Hl7Maps, table: LabTable) -> Interest:
    """Classify a message: results or administrations of interest, an ADT event, or neither."""
    code, _, trigger = msh.message_type.partition("^")
    if code == "ADT":
        action = maps.adt_events.get(trigger)
        return Interest(ADT, trigger) if action else Interest(IGNORE, trigger)
    kind = f"{code}^{trigger}"
    if kind not in maps.results and kind not in maps.administrations:
        key = "unsupported_event" if code in ("ORU", "RAS") else "unsupported_message"
        return Interest(UNSUPPORTED, trigger, key)
    valuesets = table.knowledge.valuesets

    def lab(obx3: str) -> bool:
        return classify_codings(obx_codings(obx3, msh.seps, maps), table) is not None

    def given(rxa5: str) -> bool:
        found = valuesets.membership(rxa_concept(rxa5, msh.seps, maps))
        return bool(found.code or found.text)

    obx = _items(segments, "OBX", 3, msh, lab) if kind in maps.results else ()
    rxa = _items(segments, "RXA", 5, msh, given)
    if not obx and not rxa:
        return Interest(IGNORE, trigger)
    return Interest(ORU if kind in maps.results else RAS, trigger, obx=obx, rxa=rxa)
