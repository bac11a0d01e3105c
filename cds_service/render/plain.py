"""Advice for a terminal: every card in full (summary, detail as plain text, suggestions, dose)."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from cds_service.clinical.numbers import as_reported

_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_STRONG = re.compile(r"\*\*(.+?)\*\*")
_EMPHASIS = re.compile(r"(?<![\w*])_(.+?)_(?![\w*])")
WIDTH = 100


def markdown_to_text(markdown: str) -> str:
    """Card markdown as plain text: no headings, ``**`` or ``_``; links as ``[text] <url>``."""
    out = []
    for block in markdown.split("\n\n"):
        text = _LINK.sub(r"[\1] <\2>", block.strip())
        text = _STRONG.sub(r"\1", text)
        text = _EMPHASIS.sub(r"\1", text)
        heading = re.match(r"#{1,6} ", text)
        if heading:
            text = "- " + text[heading.end() :]
        out.append(text)
    return "\n".join(out)


def _wrap(text: str, indent: str) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        lines += textwrap.wrap(
            para, WIDTH, initial_indent=indent, subsequent_indent=indent + "  "
        ) or [indent]
    return lines


def _quantity(q: dict[str, Any] | None) -> str:
    if not q or "value" not in q:
        return ""
    return f"{as_reported(q['value'])} {q.get('unit') or q.get('code', '')}".strip()


def _dose(resource: dict[str, Any]) -> str:
    """The dose of a suggested MedicationRequest, read from the resource itself."""
    parts = []
    for d in resource.get("dosageInstruction", []):
        for dr in d.get("doseAndRate", []):
            parts.append(_quantity(dr.get("doseQuantity")))
            rate = _quantity(dr.get("rateQuantity"))
            if rate:
                parts.append(f"at {rate}")
        route = (d.get("route") or {}).get("text")
        if route:
            parts.append(route)
        bounds = (d.get("timing") or {}).get("repeat", {}).get("boundsDuration")
        if bounds:
            parts.append(f"for {_quantity(bounds)}")
    return " ".join(p for p in parts if p)


def advice_text(a: dict[str, Any], indent: str = "  ") -> list[str]:
    """One advice of ``cds-service evaluate`` (its JSON form) as terminal lines."""
    lines = [f"{indent}[{a['indicator']}] {a['summary']}"]
    lines.append(f"{indent}  rules: {', '.join(a['rules'])}")
    lines += _wrap(markdown_to_text(a["detail"]), indent + "  ")
    for s in a["suggestions"]:
        res = s["resource"]
        mark = "recommended" if s.get("isRecommended") else "optional"
        lines.append(f"{indent}  suggestion: {s['label']} ({mark})")
        dose = _dose(res) if res.get("resourceType") == "MedicationRequest" else ""
        if dose:
            lines += _wrap(f"dose: {dose}", indent + "    ")
    for w in a["withheld"]:
        lines.append(f"{indent}  withheld ({w['rule']}): {', '.join(w['conditions'])}")
    return lines


def document_text(doc: dict[str, Any]) -> str:
    """The ``cds-service evaluate`` document for a terminal, every card in full."""
    lines: list[str] = []
    for p in doc["patients"]:
        lines.append(f"Patient {p['patient']} (now {p['now']})")
        if not p["advice"]:
            lines.append("  no advice")
        for a in p["advice"]:
            lines += advice_text(a)
            lines.append("")
        for e in p["excluded"]:
            lines.append(f"  excluded {e['resource']}: {e['reason']}")
    return "\n".join(lines).rstrip() + "\n"
