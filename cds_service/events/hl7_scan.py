"""The cheap scan: is a message of interest? MSH-9 and OBX-3 by ``str.split``, no full parse."""

from __future__ import annotations

from dataclasses import dataclass

from cds_service.clinical.fhir_labs import LabTable, classify_codings
from cds_service.clinical.model import Coding
from cds_service.events.hl7_config import Hl7Maps
from cds_service.events.hl7_er7 import Msh, Separators, component_of, unescape

ORU = "oru"
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


def scan(segments: list[str], msh: Msh, maps: Hl7Maps, table: LabTable) -> Interest:
    """Classify a message: ORU with results of interest, an ADT event we handle, or neither."""
    code, _, trigger = msh.message_type.partition("^")
    if code == "ADT":
        action = maps.adt_events.get(trigger)
        return Interest(ADT, trigger) if action else Interest(IGNORE, trigger)
    if f"{code}^{trigger}" not in maps.results:
        key = "unsupported_event" if code == "ORU" else "unsupported_message"
        return Interest(UNSUPPORTED, trigger, key)
    fs = msh.seps.field
    found = []
    for i, seg in enumerate(segments):
        if not seg.startswith("OBX" + fs):
            continue
        fields = seg.split(fs, 4)
        if len(fields) < 4:
            continue
        if classify_codings(obx_codings(fields[3], msh.seps, maps), table) is not None:
            found.append(i)
    return Interest(ORU if found else IGNORE, trigger, obx=tuple(found))
