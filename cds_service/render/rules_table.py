"""The rule review as JSON (``cds-service rules``, GET /rules) and markdown (docs/rules.md).

Both come from ``render.reviewer.review``: structured values with their words, so the JSON,
the HTML page and docs/rules.md cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from cds_service.render.reviewer import review
from cds_service.rules.model import Knowledge


def rules_json(k: Knowledge, locale: str = "en") -> dict[str, Any]:
    """The whole rule set, the safety gate, the obstetric scope and the fact vocabulary."""
    return review(k, locale)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _citation(c: dict[str, Any]) -> str:
    parts = [
        f"[{c['ref']}] {c.get('authors', '')}",
        str(c.get("year", "")),
        c.get("title", ""),
        c.get("journal", ""),
    ]
    text = ". ".join(p.strip().rstrip(".") for p in parts if p and str(p).strip())
    return f"{text}. <{c['link']}>" if c.get("link") else f"{text}."


def rule_lines(r: dict[str, Any], labels: dict[str, str]) -> list[str]:
    """One rule as a markdown section (anchor ``rule-<id>``)."""
    ev = r["evidence"]
    lines = [f'<a id="rule-{r["id"]}"></a>', "", f"### `{r['id']}`: {r['title']}", ""]

    def item(key: str, value: object) -> None:
        if value:
            lines.append(f"- **{labels[key]}:** {value}")

    item("version", r["version"] + ("" if r["enabled"] else f" ({labels['disabled']})"))
    item("indicator", r["indicator_range"]["text"])
    item("card", r["card_text"])
    item("population", r["population_text"])
    if "measure" in r:
        item("measure", f"{r['measure']['title']}: {r['measure']['text']}")
    item("fires_when", r["fires_when"])
    s = r.get("suggestion") or {}
    if s.get("kind") == "medication":
        for key in (
            "dose",
            "timing",
            "weight",
            "dilution",
            "rate",
            "rate_limit",
            "given_when",
            "target",
            "repeat",
        ):
            item(key, s.get(f"{key}_text"))
    elif s:
        item("suggestion", s.get("text"))
    item("gate", r.get("gate"))
    item("obstetric", r["obstetric"]["text"])
    n = f", N={ev['n']:,}" if "n" in ev else ""
    item("evidence", f"{ev['study']}, {ev['design']}{n}")
    item("population_studied", ev.get("population_studied"))
    item("effects", "; ".join(e["text"] for e in ev["effects"]))
    item("exclusions", "; ".join(ev.get("exclusions", [])))
    item("checked", ev.get("checked"))
    item("set_here", ev.get("set_here"))
    for c in r["citations"]:
        item("citations", _citation(c))
    item("source_file", f"`{r['source_file']}`")
    return [*lines, ""]


def rules_markdown(k: Knowledge) -> str:
    """docs/rules.md: the review document in English, grouped by kind, with anchors."""
    doc = review(k, "en")
    t = k.texts["en"]["reviewer"]
    labels = {**t["fields"], "disabled": t["disabled"]}
    by_id = {r["id"]: r for r in doc["rules"]}
    gate, obst = doc["gate"], doc["obstetric"]
    lines = [
        f"# {doc['title']}",
        "",
        t["generated"].format(version=doc["mappings_version"]),
        "",
        doc["intro"],
        "",
        f"## {t['contents']}",
        "",
    ]
    for kind in doc["kinds"]:
        links = ", ".join(f"[`{rid}`](#rule-{rid})" for rid in kind["rules"])
        lines.append(f"- [{kind['title']}](#kind-{kind['id']}): {links}")
    lines += [
        f"- [{gate['title']}](#safety-gate)",
        f"- [{obst['title']}](#obstetric-scope)",
        f"- [{t['fact_vocabulary']}](#fact-vocabulary)",
        "",
    ]
    for kind in doc["kinds"]:
        lines += [
            f'<a id="kind-{kind["id"]}"></a>',
            "",
            f"## {kind['title']}",
            "",
            kind["intro"],
            "",
        ]
        for rid in kind["rules"]:
            lines += rule_lines(by_id[rid], labels)
    lines += ['<a id="safety-gate"></a>', "", f"## {gate['title']}", "", gate["intro"], ""]
    for c in gate["conditions"]:
        note = f" ({c['note']})" if "note" in c else ""
        lines.append(f"- `{c['id']}`: {c['text']}{note}")
    lines += [
        "",
        f"**{gate['instead_title']}:** {gate['instead']}",
        "",
        f"**{gate['sources_title']}:**",
        "",
    ]
    lines += [f"- {_citation(c)}" for c in gate["sources"]]
    lines += ["", '<a id="obstetric-scope"></a>', "", f"## {obst['title']}", "", obst["text"], ""]
    lines += [
        '<a id="fact-vocabulary"></a>',
        "",
        f"## {t['fact_vocabulary']}",
        "",
        "| fact | meaning |",
        "|---|---|",
    ]
    lines += [f"| `{n}` | {_cell(d)} |" for n, d in doc["facts"].items()]
    return "\n".join(lines) + "\n"
