"""RXA segments (medications given, in RAS^O17 or ORU^R01) as plain records.

RXA-3 is when the dose was given (RXA-4 when it ended), RXA-5 what was given (a code
and/or its text: the rules match it through the value sets, the ingredient name in the
text included), RXA-6/7 the amount, RXA-20 the completion status (``hl7v2.yaml``
``administration_status``) and RXA-21 the action (D deletes an earlier record).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from cds_service.clinical import model as m
from cds_service.events.hl7_config import Hl7Maps
from cds_service.events.hl7_parse import Seg
from cds_service.events.hl7_scan import rxa_concept
from cds_service.events.hl7_values import parse_ts


@dataclass(frozen=True)
class RxaRecord:
    """One RXA of interest: the medication, when, status, amount, and add or delete."""

    concept: m.Concept
    code: m.Coding
    time: datetime
    end: datetime | None
    status: str
    amount: str
    delete: bool


def read_rxa(seg: Seg, maps: Hl7Maps, tz: tzinfo) -> RxaRecord | None:
    """One RXA as a record; None without an RXA-3 time or an RXA-5 code or text."""
    concept = rxa_concept(seg.field(5), seg.seps, maps)
    time = parse_ts(seg.comp(3, 1), tz)[0]
    if time is None or (not concept.codings and not concept.text):
        return None
    code = concept.codings[0] if concept.codings else m.Coding("", seg.comp(5, 1), concept.text)
    # an RXA-20 outside the table reads like an empty one (given): safer for the gate
    status = maps.administration_status.get(
        seg.comp(20, 1).upper(), maps.administration_status_missing
    )
    amount = " ".join(x for x in (seg.comp(6, 1), seg.comp(7, 1)) if x and x != "999")
    return RxaRecord(
        concept=concept,
        code=code,
        time=time,
        end=parse_ts(seg.comp(4, 1), tz)[0],
        status=status,
        amount=amount[:64],
        delete=seg.comp(21, 1).upper() == "D",
    )
