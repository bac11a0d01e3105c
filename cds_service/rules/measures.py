"""Compute the named measures of ``mappings/measures.yaml`` for one evaluation."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cds_service.clinical import model as m
from cds_service.rules.context import EvalContext
from cds_service.rules.durations import parse_duration
from cds_service.rules.facts import Bindings
from cds_service.rules.model import Measure, ValueUsed

ANCHORS = (
    "admission",
    "icu-start",
    "surgery-start",
    "surgery-end",
    "procedure-start",
    "aki-onset",
    "encounter",
    "now",
)
LOINC = "http://loinc.org"
PICKS = ("earliest", "latest", "lowest", "nearest", "median")


@dataclass(frozen=True, slots=True)
class MeasureResult:
    """The value a measure picked (median: a synthetic value), with its inputs."""

    value: ValueUsed
    n: int
    anchor: datetime
    window: tuple[datetime, datetime]


def used(result: m.LabResult, flags: tuple[str, ...] = ()) -> ValueUsed:
    """A lab result as a ValueUsed record."""
    return ValueUsed(
        kind=result.kind,
        value=result.value,
        unit=result.unit,
        time=result.time,
        original_value=result.original_value,
        original_unit=result.original_unit,
        comparator=result.comparator,
        code=result.code.code,
        resource=result.id,
        flags=tuple(sorted(result.time_flags)) + flags,
        reference_range=result.reference_range,
        loinc=result.code.code if result.code.system == LOINC else None,
    )


def _anchor(measure: Measure, ctx: EvalContext, b: Bindings) -> tuple[datetime, bool] | None:
    """The anchor time, and whether it stands for a planned procedure (anchor now)."""
    anchor = measure.anchor
    if anchor == "now":
        return ctx.now, False
    if anchor == "admission":
        return (ctx.admission, False) if ctx.admission else None
    if anchor == "icu-start":
        stay = b.get("icu") or ctx.icu_stay
        return (stay.start, False) if stay else None
    if anchor == "aki-onset":
        onset = ctx.aki.onset if ctx.aki.present else None
        return (onset, False) if onset else None
    if anchor == "encounter":
        enc = ctx.encounter
        return (enc.start, False) if enc is not None and enc.start is not None else None
    proc: m.Procedure | None = b.get("procedure")
    if proc is None:
        return None
    if b.get("procedure_state") == "planned":
        return (ctx.now, True) if anchor != "surgery-end" else None
    if anchor == "surgery-end":
        when = proc.end or proc.start
    else:
        when = proc.start or proc.end
    return (when, False) if when else None


def index_event(measure: Measure, ctx: EvalContext, b: Bindings) -> tuple[str, datetime] | None:
    """The index event a measure belongs to, as ``<anchor>:<identity>``, and its time.

    None for measures anchored at now (latest-value measures) and for a planned procedure
    (its pre-procedure window is anchored at now). A procedure's time is its end.
    """
    found = _anchor(measure, ctx, b)
    if found is None or found[1] or measure.anchor == "now":
        return None
    anchor, when = measure.anchor, found[0]
    if anchor in ("admission", "encounter"):
        enc = ctx.encounter
        identity = enc.id if enc is not None else when.isoformat()
    elif anchor in ("surgery-start", "surgery-end", "procedure-start"):
        proc: m.Procedure | None = b.get("procedure")
        identity = proc.id if proc is not None else when.isoformat()
        if proc is not None:  # the event lasts until the procedure ends
            when = proc.end or proc.start or when
    else:  # icu-start, aki-onset: the event is its time
        identity = when.isoformat()
    return f"{anchor}:{identity}", when


def compute(measure: Measure, ctx: EvalContext, b: Bindings) -> MeasureResult | None:
    """Pick the measure's value, or None when there is no anchor or no value."""
    found = _anchor(measure, ctx, b)
    if found is None:
        return None
    key = (measure.id, found[0])
    if key not in ctx.measured:  # rules sharing a measure and its anchor share the value
        ctx.measured[key] = _compute(measure, ctx, found[0])
    return ctx.measured[key]


def _compute(measure: Measure, ctx: EvalContext, anchor: datetime) -> MeasureResult | None:
    if measure.anchor == "encounter":
        enc = ctx.encounter
        assert enc is not None
        start, end = anchor, min(enc.end or ctx.now, ctx.now)
    elif measure.window is not None:
        start, end = anchor + measure.window.start, anchor + measure.window.end
    else:
        start, end = anchor, ctx.now
    if measure.extend_to_encounter_start:
        start = min(start, ctx.latest_mg_start)
    series = ctx.results(measure.series, start, end)
    if not series:
        return None
    pick = measure.pick
    if pick == "median":
        med = statistics.median(r.value for r in series)
        newest = series[-1]
        value = ValueUsed(
            kind=measure.series,
            value=med,
            unit=newest.unit,
            time=newest.time,
            original_value=med,
            original_unit=newest.unit,
            flags=("median",),
        )
        return MeasureResult(value, len(series), anchor, (start, end))
    chosen: m.LabResult
    if pick == "earliest":
        chosen = series[0]
    elif pick == "latest":
        chosen = series[-1]
    elif pick == "lowest":
        chosen = min(series, key=lambda r: (r.value, r.time))
    else:
        chosen = min(series, key=lambda r: (abs((r.time - anchor).total_seconds()), r.time))
    value = used(chosen)
    if measure.albumin_corrected:
        corrected = _albumin_corrected(chosen, ctx)
        if corrected is None:
            return None
        value = corrected
    return MeasureResult(value, len(series), anchor, (start, end))


def _albumin_corrected(mg: m.LabResult, ctx: EvalContext) -> ValueUsed | None:
    """Kroll & Elin correction with the albumin nearest in time (parameters in units.yaml)."""
    params = ctx.knowledge.albumin_correction
    gap: timedelta = parse_duration(params["max_gap"])
    candidates = ctx.results(m.ALBUMIN, mg.time - gap, mg.time + gap)
    if not candidates:
        return None
    alb = min(candidates, key=lambda r: abs((r.time - mg.time).total_seconds()))
    units = ctx.knowledge.units
    alb_g_l = units["albumin"].from_canonical(alb.value, "g/L")
    mg_mmol = units["magnesium"].from_canonical(mg.value, "mmol/L")
    slope = float(params["mmol_per_l_per_g_per_l"])
    ref = float(params["reference_albumin_g_l"])
    corrected_mmol = mg_mmol + slope * (ref - alb_g_l)
    corrected = units["magnesium"].to_canonical(corrected_mmol, "mmol/L")
    base = used(mg, ("albumin-corrected",))
    return replace(base, value=corrected, corrected_from=mg.value, albumin_g_dl=alb.value)


def parse_window(raw: object, where: str) -> tuple[timedelta, timedelta]:
    """Parse ``{start: -12h, end: 24h}``.

    :raises ValueError: missing bound, bad duration, or start after end.
    """
    if not isinstance(raw, dict) or "start" not in raw or "end" not in raw:
        raise ValueError(f"{where}: window needs start and end")
    start, end = parse_duration(raw["start"]), parse_duration(raw["end"])
    if start > end:
        raise ValueError(f"{where}: window start after end")
    return start, end
