"""Card text about suspect and spurious results (delta checks, evidence.md §1).

The templates live under ``suspect`` in ``mappings/text/<locale>.yaml``; a finding about a
suspect or spurious result (``rules/suspect.py``) takes its summary, context, action, label
and evidence line from there instead of its rule's. Every number comes from the results and
from ``mappings/delta-checks.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.delta_checks import DILUTION, DeltaParams, Resolution, Suspect, fall_pct
from cds_service.rules.measures import used
from cds_service.rules.model import Finding, ValueUsed

ValueText = Callable[[ValueUsed], dict[str, str]]
Fill = Callable[[Any, dict[str, Any]], str]


def variant(texts: dict[str, Any], f: Finding) -> dict[str, Any] | None:
    """The templates replacing a rule's own for this finding, or None for an ordinary one."""
    node = texts["suspect"]
    c = f.context
    if "suspect" in c:
        reason = c["delta"].reason
        return {
            "summary": node["summary"],
            "context": node["context"][reason],
            "action": node["action"][reason],
            "label": node["label"],
            "evidence_line": node["evidence_line"],
        }
    if "spurious" in c:
        spurious = node["spurious"]
        return {
            "summary": spurious["summary"],
            "context": spurious["context"],
            "action": spurious["action"],
            "evidence_line": node["evidence_line"],
        }
    if "suspect_value" in c:
        toxic = node["still_used"]
        return {"summary": toxic["summary"], "action": toxic["action"],
                "obstetric_action": toxic["action"]}  # fmt: skip
    return None


def duration(delta: timedelta) -> str:
    """A limit's window as written on cards: ``48 h``, ``5 min``."""
    hours = delta.total_seconds() / 3600
    return f"{hours:g} h" if hours >= 1 else f"{delta.total_seconds() / 60:g} min"


def placeholders(
    texts: dict[str, Any], f: Finding, params: DeltaParams, value_text: ValueText, fill: Fill
) -> dict[str, str]:
    """The placeholder values of a finding about suspect or spurious results (else none)."""
    node = texts["suspect"]
    c = f.context

    def result(r: m.LabResult) -> dict[str, str]:
        vals = value_text(used(r))
        vals["test"] = node["tests"][r.kind]
        return vals

    def stated(r: m.LabResult) -> str:
        return fill(node["result"], result(r))

    if "suspect" in c or "suspect_value" in c:
        s: Suspect = c["delta"] if "suspect" in c else c["suspect_value"]
        vals = result(s.result)
        vals["reason"] = node["reasons"][s.reason]
        vals["previous"] = stated(s.previous)
        if s.reason == DILUTION:
            vals["change"] = f"{fall_pct(s.result, s.previous):.0f}"
            vals["limit"] = f"{params.fall_pct:g}"
            vals["window"] = duration(params.fall_within)
            vals["draw_window"] = duration(params.same_draw)
            vals["partner"] = node["separator"].join(
                fill(node["partner"], _fallen(result(x), x, before, stated)) for x, before in s.draw
            )
        else:
            vals["change"] = f"{s.result.value - s.previous.value:.1f} {s.result.unit}"
            vals["limit"] = f"{params.rise:.1f} {s.result.unit}"
            vals["window"] = duration(params.jump_within)
        return vals
    if "spurious" in c:
        notes: tuple[Resolution, ...] = c["spurious"]
        items = []
        for r in notes:
            item = result(r.suspect.result)
            item.update(refuted_by=stated(r.by), previous=stated(r.suspect.previous))
            item["limit"] = f"{params.refute_pct:g}"
            items.append(fill(node["spurious"]["item"], item))
        vals = result(notes[0].suspect.result)
        vals["values"] = node["separator"].join(
            fill(node["named"], result(r.suspect.result)) for r in notes
        )
        vals["items"] = node["separator"].join(items)
        return vals
    return {}


def _fallen(
    vals: dict[str, str], r: m.LabResult, before: m.LabResult, stated: Callable[[m.LabResult], str]
) -> dict[str, str]:
    """Placeholders of one other result of a diluted draw: its fall and the result before it."""
    vals.update(change=f"{fall_pct(r, before):.0f}", previous=stated(before))
    return vals
