"""The rule review page (GET /rules for browsers) from ``render.reviewer.review``.

One section per rule, grouped by kind, with anchors (``#rule-<id>``, ``#kind-<kind>``,
``#safety-gate``, ``#obstetric-scope``); no table, so it reads at 1,280 px and on a phone.
"""

from __future__ import annotations

from html import escape
from typing import Any

LOCALES = {"en": "English", "zh-CN": "简体中文"}
_STYLE = """
*{box-sizing:border-box}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",
"Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;color:#1d1d1f;background:#f6f7f9}
header,main{max-width:62rem;margin:0 auto;padding:0 1rem}
header{padding-top:1rem}
h1{font-size:1.6rem;margin:.5rem 0}
h2{font-size:1.3rem;margin:2rem 0 .5rem;border-bottom:2px solid #d0d5dd;padding-bottom:.25rem}
h3{font-size:1.05rem;margin:0 0 .5rem}
p,li,dd,dt,a,code,h3{overflow-wrap:anywhere}
code{font:.9em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef0f3;
padding:0 .2em;border-radius:3px}
a{color:#0b5cad}
nav.lang{float:right;font-size:.9rem}
nav.toc ul{padding-left:1.2rem}
nav.toc li{margin:.15rem 0}
section.rule,section.box{background:#fff;border:1px solid #d8dce3;border-radius:8px;
padding:.75rem 1rem;margin:.9rem 0}
dl{display:grid;grid-template-columns:minmax(7rem,11rem) minmax(0,1fr);gap:.3rem 1rem;margin:0}
dt{font-weight:600;color:#4a4f57}
dd{margin:0;min-width:0}
dd ul{margin:0;padding-left:1.1rem}
.badge{display:inline-block;font-size:.8rem;font-weight:600;border-radius:4px;padding:0 .4rem;
margin-left:.4rem;vertical-align:middle}
.info{background:#e3f0ff;color:#0b4f8a}.warning{background:#fff1d6;color:#7a4b00}
.critical{background:#fde2e1;color:#9b1c1c}.off{background:#eee;color:#555}
.dose dd,.dose dt{background:#f3f8f1}
@media (max-width:40rem){dl{grid-template-columns:minmax(0,1fr)}dt{margin-top:.45rem}
nav.lang{float:none}body{font-size:15px}}
"""


def _e(text: object) -> str:
    return escape(str(text))


def _citation(c: dict[str, Any]) -> str:
    parts = [
        f"[{c['ref']}] {c.get('authors', '')}",
        c.get("year", ""),
        c.get("title", ""),
        c.get("journal", ""),
    ]
    text = ". ".join(_e(str(p).strip().rstrip(".")) for p in parts if p and str(p).strip())
    link = c.get("link")
    return f'{text}. <a href="{_e(link)}">{_e(link)}</a>' if link else text


def _dl(rows: list[tuple[str, str, str]]) -> str:
    """A definition list; rows are (label, html value, css class)."""
    out = []
    for label, value, css in rows:
        if value:
            cls = f' class="{css}"' if css else ""
            out.append(f"<dt{cls}>{_e(label)}</dt><dd{cls}>{value}</dd>")
    return "<dl>" + "".join(out) + "</dl>"


def _gate(r: dict[str, Any], gate: dict[str, Any], texts: dict[str, Any]) -> str:
    """The gate line of a rule: the conditions as a list when it may suggest magnesium."""
    if (r.get("suggestion") or {}).get("kind") != "medication":
        return _e(r.get("gate", ""))
    items = "".join(f"<li>{_e(c['text'])}</li>" for c in gate["conditions"])
    return f"{_e(texts['gate']['applies_list'])}<ul>{items}</ul>"


def _rule(r: dict[str, Any], f: dict[str, str], gate: dict[str, Any], texts: dict[str, Any]) -> str:
    ev = r["evidence"]
    ind = r["indicator_range"]
    badges = "".join(f'<span class="badge {_e(x)}">{_e(x)}</span>' for x in ind["levels"])
    if not r["enabled"]:
        badges += f'<span class="badge off">{_e(texts["disabled"])}</span>'
    rows: list[tuple[str, str, str]] = [
        (f["version"], _e(r["version"]), ""),
        (f["indicator"], _e(ind["text"]), ""),
        (f["card"], _e(r["card_text"]), ""),
        (f["population"], _e(r["population_text"]), ""),
    ]
    if "measure" in r:
        rows.append((f["measure"], f"{_e(r['measure']['title'])}: {_e(r['measure']['text'])}", ""))
    rows.append((f["fires_when"], _e(r["fires_when"]), ""))
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
            rows.append((f[key], _e(s.get(f"{key}_text", "")), "dose"))
    elif s:
        rows.append((f["suggestion"], _e(s.get("text", "")), "dose"))
    rows.append((f["gate"], _gate(r, gate, texts), "dose" if s.get("kind") == "medication" else ""))
    rows.append((f["obstetric"], _e(r["obstetric"]["text"]), ""))
    n = f", N={ev['n']:,}" if "n" in ev else ""
    rows.append((f["evidence"], f"{_e(ev['study'])}, {_e(ev['design'])}{_e(n)}", ""))
    rows.append((f["population_studied"], _e(ev.get("population_studied", "")), ""))
    effects = "".join(f"<li>{_e(e['text'])}</li>" for e in ev["effects"])
    rows.append((f["effects"], f"<ul>{effects}</ul>" if effects else "", ""))
    exclusions = "; ".join(ev.get("exclusions", []))
    rows.append((f["exclusions"], _e(exclusions), ""))
    rows.append((f["checked"], _e(ev.get("checked", "")), ""))
    rows.append((f["set_here"], _e(ev.get("set_here", "")), ""))
    cites = "".join(f"<li>{_citation(c)}</li>" for c in r["citations"])
    rows.append((f["citations"], f"<ul>{cites}</ul>", ""))
    rows.append((f["source_file"], f"<code>{_e(r['source_file'])}</code>", ""))
    return (
        f'<section class="rule" id="rule-{_e(r["id"])}"><h3><code>{_e(r["id"])}</code> '
        f"{_e(r['title'])}{badges}</h3>{_dl(rows)}</section>"
    )


def rules_html(doc: dict[str, Any], texts: dict[str, Any]) -> str:
    """The review page of ``doc`` (``review(knowledge, locale)``); ``texts``: its ``reviewer``."""
    f = texts["fields"]
    lang = doc["locale"]
    switch = " · ".join(
        f"<strong>{_e(name)}</strong>"
        if code == lang
        else f'<a href="?lang={code}" hreflang="{code}">{_e(name)}</a>'
        for code, name in LOCALES.items()
    )
    by_id = {r["id"]: r for r in doc["rules"]}
    toc, body = [], []
    for kind in doc["kinds"]:
        links = ", ".join(
            f'<a href="#rule-{_e(i)}"><code>{_e(i)}</code></a>' for i in kind["rules"]
        )
        toc.append(f'<li><a href="#kind-{_e(kind["id"])}">{_e(kind["title"])}</a>: {links}</li>')
        rules = "".join(_rule(by_id[i], f, doc["gate"], texts) for i in kind["rules"])
        head = f'<h2 id="kind-{_e(kind["id"])}">{_e(kind["title"])}</h2>'
        body.append(f"{head}<p>{_e(kind['intro'])}</p>{rules}")
    gate, obst = doc["gate"], doc["obstetric"]
    toc.append(f'<li><a href="#safety-gate">{_e(gate["title"])}</a></li>')
    toc.append(f'<li><a href="#obstetric-scope">{_e(obst["title"])}</a></li>')
    conditions = "".join(
        f"<li><code>{_e(c['id'])}</code>: {_e(c['text'])}"
        + (f" ({_e(c['note'])})" if "note" in c else "")
        + "</li>"
        for c in gate["conditions"]
    )
    sources = "".join(f"<li>{_citation(c)}</li>" for c in gate["sources"])
    instead = f"<p><strong>{_e(gate['instead_title'])}:</strong> {_e(gate['instead'])}</p>"
    gate_html = (
        f'<h2 id="safety-gate">{_e(gate["title"])}</h2>'
        f'<section class="box"><p>{_e(gate["intro"])}</p><ul>{conditions}</ul>{instead}'
        f"<p><strong>{_e(gate['sources_title'])}:</strong></p><ul>{sources}</ul></section>"
    )
    obst_html = (
        f'<h2 id="obstetric-scope">{_e(obst["title"])}</h2>'
        f'<section class="box"><p>{_e(obst["text"])}</p></section>'
    )
    return (
        f'<!doctype html><html lang="{_e(lang)}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(doc['title'])}</title><style>{_STYLE}</style></head><body>"
        f'<header><nav class="lang" aria-label="{_e(texts["language"])}">{switch}</nav>'
        f"<h1>{_e(doc['title'])}</h1><p>{_e(doc['intro'])}</p>"
        f"<p>{_e(texts['mappings_version'].format(version=doc['mappings_version']))} "
        f"{_e(texts['rules_count'].format(n=len(doc['rules'])))}</p></header><main>"
        f'<nav class="toc"><h2>{_e(texts["contents"])}</h2><ul>{"".join(toc)}</ul></nav>'
        f"{''.join(body)}{gate_html}{obst_html}</main></body></html>"
    )
