"""The rule table as a small HTML page (GET /rules for browsers), from ``rules_json``."""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.3rem .5rem;vertical-align:top;font-size:.9rem}"
    "th{background:#f3f3f3}code{font-size:.85rem}"
)


def _effects(ev: dict[str, Any]) -> str:
    parts = []
    for e in ev.get("effects", []):
        text = e["label"]
        if "value" in e:
            text += f": {e['measure']} {e['value']}"
        if "ci" in e:
            text += f" ({e['ci'][0]}-{e['ci'][1]})"
        parts.append(escape(text))
    return "<br>".join(parts)


def _citations(rule: dict[str, Any]) -> str:
    out = []
    for c in rule["citations"]:
        label = escape(f"[{c.get('ref', '')}] {c.get('authors', '')} {c.get('year', '')}")
        link = c.get("link")
        title = escape(c.get("title", ""))
        href = f' <a href="{escape(link)}">{escape(link)}</a>' if link else ""
        out.append(f"{label}: {title}{href}")
    return "<br>".join(out)


def rules_html(doc: dict[str, Any]) -> str:
    """An HTML page of ``rules_json(knowledge)``: every rule with its evidence and citations."""
    rows = []
    for r in doc["rules"]:
        ev = r["evidence"]
        n = f", N={ev['n']:,}" if "n" in ev else ""
        cells = [
            f"<code>{escape(r['id'])}</code>",
            escape(r["version"]),
            escape(r["title"]),
            escape(r["category"]),
            escape(r["indicator"]) + ("" if r["enabled"] else " (disabled)"),
            escape(", ".join(r["population"]) or "anyone"),
            escape(r.get("measure", {}).get("title", "—")),
            escape(r["fires_when"]),
            f"{escape(ev['study'])}, {escape(ev['design'])}{n}<br>{_effects(ev)}",
            _citations(r),
        ]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(
        f"<th>{h}</th>"
        for h in ("id", "v", "title", "category", "indicator", "population", "measure",
                  "fires when", "evidence", "citations")
    )  # fmt: skip
    gate = "".join(
        f"<tr><td><code>{escape(g['id'])}</code></td><td>{escape(g['fact'])}</td></tr>"
        for g in doc["gate"]
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>Magnesium–AKI rules</title><style>{_STYLE}</style></head><body>"
        f"<h1>Magnesium–AKI rules</h1><p>Mappings version <code>"
        f"{escape(doc['mappings_version'])}</code>. Advisory decision support for clinicians.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<h2>Safety gate</h2><table><tr><th>condition</th><th>fact</th></tr>{gate}</table>"
        "</body></html>"
    )
