"""What a clinician must never read on a card: the text checks of issue 11, item 1.

``text_problems`` reads one rendered advice (summary, detail, suggestion labels) in one
locale; ``card_problems`` one CDS Hooks card (its suggestions and extension too);
``response_problems`` the cards of one answer together (no contradiction, one magnesium
order, a withheld answer advises no repletion anywhere). Each returns a list of problems in
words (empty: the text passes), so a failing test says what a reader would have seen.

Words that may stay in Latin script in Chinese text: units, abbreviations clinicians use as
they are, and the drug, study and author names of the rule files (``knowledge_names``), plus
whatever the patient's own record names (``allowed``: an EHR's code displays).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from cds_service.rules.model import Knowledge

SUMMARY_LIMIT = 140  # CDS Hooks 2.0: summary "<140 characters"

_LINK = re.compile(r"\]\([^)]*\)")  # markdown link targets: DOIs and URLs are not text
_URL = re.compile(r"https?://\S+")
_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")
_NOT_TEXT = re.compile(
    r"\bn/a\b|\bN/A\b|\bNone\b|\bnull\b|\bundefined\b|\bnan\b|\bNaN\b|\binf\b|\[object|Traceback"
)
# A filled template with a piece missing: punctuation with nothing between.
_DANGLING = re.compile(r":\s*[.;,]|—\s*[.;,]|\(\s*\)|（\s*）|,\s*,|;\s*;|\.\s*\.(?!\.)|：\s*[。；，]|。。|；；")
# Spellings of units a clinician does not write (UCUM codes, lower-case litres, ASCII m2).
_UNIT_SPELLING = re.compile(
    r"meq/L|\bumol/L|μmol/L|mg/dl\b|mmol/l\b|\[lb_av\]|\{1\.73_m2\}|1\.73 ?m2\b|mL/min/1\.73m"
)
_FLOAT_NOISE = re.compile(r"\d\.\d{5,}|\d\.\d*0000\d|\d\.\d*9999\d")
# Fallback words the renderer writes when a value is missing: a bug whenever it is read.
_FALLBACK = {"en": re.compile(r"(?<!time )\bnot recorded\b"), "zh-CN": re.compile(r"(?<!时间)未记录")}
_CJK = "\u4e00-\u9fff"
_ASCII_PUNCT_BY_CJK = re.compile(rf"[{_CJK}][,;:()?!]|[,;:(?!][{_CJK}]")
_LATIN_WORD = re.compile(r"[A-Za-zµμ][A-Za-z0-9µμ²\-/.'&]*")
# Pairs of one value in two units: in Chinese the SI unit comes first.
_ZH_ORDER = re.compile(r"\d mg/dL（[<>≤≥]?\s?[\d.]+ (?:mmol/L|µmol/L)）")
# Latin-script words a Chinese card may carry as they are.
LATIN_OK = frozenset(
    """
    mg dL mmol L mEq µmol μmol g kg mL min h m² lb mg/dL mmol/L mEq/L µmol/L g/dL g/L mL/min/1.73
    mg/kg mg/kg/h g/h mg/min UTC AKI AKD ICU eGFR GFR KDIGO NHS England CKD CKD-EPI EPI IV
    OR HR RR CI P N ECG CRP IL IL-6 NMDA NF-κB NF κB MIMIC MIMIC-IV PCI CABG RCT vs ICD LOINC
    SNOMED CT RxNorm ATC UCUM CLSI EP33 review label PRAGMATIC Kroll Elin Kroll-Elin KDIGO-NHS
    et al PPI NSAID Mg SpO2 pH i.v. IU U
    """.split()
)
# Repletion advice, as each locale words it (a withheld answer has none of it anywhere).
_REPLETION = {
    "en": re.compile(
        r"Consider (?:intra-operative )?magnesium|replete per local protocol|Urgent repletion|"
        r"Keep serum Mg at|Consider magnesium sulfate"
    ),
    "zh-CN": re.compile(r"可考虑[^。]*(?:补镁|硫酸镁)|按本院方案(?:紧急)?补镁|使血清镁维持"),
}
_WITHHELD = {"en": "withheld", "zh-CN": "暂缓"}
_WHAT_TO_DO = {"en": "**What to do:**", "zh-CN": "**处理建议：**"}


def _plain(text: str) -> str:
    """Text without link targets and URLs (DOIs carry digits and ASCII punctuation)."""
    return _URL.sub("", _LINK.sub("]", text))


def knowledge_names(knowledge: Knowledge) -> frozenset[str]:
    """The Latin-script names the rule files give: studies, authors, citation labels."""
    words: set[str] = set()
    sources: list[str] = []
    for rule in knowledge.rules:
        sources += [rule.evidence.study, rule.id]
        for c in rule.citations:
            sources += [str(c.ref), c.authors]
    for text in sources:
        words.update(_LATIN_WORD.findall(text or ""))
    return frozenset(words)


def text_problems(
    summary: str,
    detail: str,
    labels: Iterable[str | None],
    locale: str,
    *,
    latin_ok: frozenset[str] | None = None,
) -> list[str]:
    """Problems of one rendered advice. ``latin_ok``: check Chinese text for English words."""
    out: list[str] = []
    texts = {"summary": summary, "detail": detail}
    texts.update({f"label {i}": lab for i, lab in enumerate(labels) if lab})
    if not summary.strip():
        out.append("empty summary")
    if len(summary) > SUMMARY_LIMIT:
        out.append(f"summary of {len(summary)} characters (limit {SUMMARY_LIMIT})")
    if "\n" in summary:
        out.append("summary spans lines")
    lines = {ln.strip().lstrip("#>").strip().strip("*").strip() for ln in detail.split("\n")}
    if summary in lines:
        out.append("the summary is repeated in the detail")
    for where, text in texts.items():
        plain = _plain(text)
        for name, pattern in (
            ("unfilled placeholder", _PLACEHOLDER),
            ("not text", _NOT_TEXT),
            ("dangling punctuation", _DANGLING),
            ("unit spelling", _UNIT_SPELLING),
            ("float noise", _FLOAT_NOISE),
        ):
            m = pattern.search(plain)
            if m:
                out.append(f"{where}: {name} {m.group(0)!r} in {_around(plain, m)!r}")
        fallback = _FALLBACK.get(locale)
        m = fallback.search(plain) if fallback else None
        if m:
            out.append(f"{where}: a value fell back to {m.group(0)!r}: {_around(plain, m)!r}")
        if locale == "zh-CN":
            out += _zh_problems(where, plain, latin_ok)
    return out


def _zh_problems(where: str, plain: str, latin_ok: frozenset[str] | None) -> list[str]:
    out = []
    m = _ASCII_PUNCT_BY_CJK.search(plain)
    if m:
        out.append(f"{where}: ASCII punctuation in Chinese {_around(plain, m)!r}")
    m = _ZH_ORDER.search(plain)
    if m:
        out.append(f"{where}: mg/dL before the SI unit {m.group(0)!r}")
    if latin_ok is not None:
        for word in _LATIN_WORD.findall(plain):
            bare = word.strip("-/.'&")
            if bare and bare not in LATIN_OK and bare not in latin_ok and not _unitlike(bare):
                out.append(f"{where}: English word {bare!r} in Chinese text")
                break
    return out


def _unitlike(word: str) -> bool:
    """Units and compound units (mg/kg/h, mL/min/1.73) and single letters (N, P)."""
    parts = [p for p in re.split(r"[/.]", word) if p]
    return len(word) <= 1 or (len(parts) > 1 and all(p in LATIN_OK or p.isdigit() for p in parts))


def _around(text: str, m: re.Match[str], width: int = 40) -> str:
    return text[max(0, m.start() - width) : m.end() + width]


def card_problems(card: Mapping[str, Any], locale: str, **kwargs: Any) -> list[str]:
    """Problems of one CDS Hooks card: its text, its suggestions, its extension."""
    labels = [s.get("label") for s in card.get("suggestions", [])]
    out = text_problems(card["summary"], card.get("detail", ""), labels, locale, **kwargs)
    ext = card.get("extension", {}).get("magnesium-aki", {})
    if ext.get("withheld") and _WITHHELD[locale] not in card["summary"]:
        out.append(f"withheld card whose summary does not say so: {card['summary']!r}")
    for s in card.get("suggestions", []):
        for action in s.get("actions", []):
            res = action.get("resource") or {}
            if res.get("resourceType") == "MedicationRequest":
                out += _order_problems(res, s.get("label") or "", card.get("detail", ""))
    return out


def _order_problems(res: Mapping[str, Any], label: str, detail: str) -> list[str]:
    """A magnesium order: bounded in time, its dose the one the label and the text state."""
    out = []
    dosage = (res.get("dosageInstruction") or [{}])[0]
    repeat = (dosage.get("timing") or {}).get("repeat") or {}
    if not ("count" in repeat or "boundsDuration" in repeat or "boundsPeriod" in repeat):
        out.append(f"unbounded MedicationRequest: timing {repeat}")
    try:
        dose = dosage["doseAndRate"][0]["doseQuantity"]
    except (KeyError, IndexError):
        return [*out, "MedicationRequest without a dose"]
    shown = f"{_num(dose['value'])} {dose['unit']}"
    if shown not in label:
        out.append(f"suggestion label {label!r} does not state the order's dose {shown!r}")
    if shown not in detail:
        out.append(f"detail does not state the order's dose {shown!r}")
    return out


def _num(value: float) -> str:
    return f"{value:g}" if abs(value) < 1e6 else str(value)


def response_problems(
    cards: list[Mapping[str, Any]],
    locale: str,
    knowledge: Knowledge,
    *,
    directions: list[str],
    latest_mg_dl: float | None = None,
    **kwargs: Any,
) -> list[str]:
    """Problems of one answer: every card, and the cards together (evidence.md §6, item 3).

    ``directions``: each card's direction (the engine's ``Advice.direction``, in card order).
    """
    out = [f"card {i}: {p}" for i, c in enumerate(cards) for p in card_problems(c, locale, **kwargs)]
    orders = [
        s
        for c in cards
        for s in c.get("suggestions", [])
        if any((a.get("resource") or {}).get("resourceType") == "MedicationRequest"
               for a in s.get("actions", []))
    ]  # fmt: skip
    if len(orders) > 1:
        out.append(f"{len(orders)} magnesium orders in one answer (at most one)")
    withheld = any(c.get("extension", {}).get("magnesium-aki", {}).get("withheld") for c in cards)
    if withheld:
        if orders:
            out.append("a withheld answer carries a magnesium order")
        for i, c in enumerate(cards):
            for line in _what_to_do(c.get("detail", ""), locale):
                m = _REPLETION[locale].search(line)
                if m:
                    out.append(f"card {i}: a withheld answer advises repletion: {line!r}")
    assert len(directions) == len(cards)
    low = knowledge.reference_range[0]
    if latest_mg_dl is not None and latest_mg_dl >= 2.5 and "low" in directions:
        out.append(f"a low-magnesium card beside a latest serum Mg of {latest_mg_dl} mg/dL")
    if latest_mg_dl is not None and latest_mg_dl < low and "high" in directions:
        out.append(f"a high-magnesium card beside a latest serum Mg of {latest_mg_dl} mg/dL")
    hypo = knowledge.texts[locale]["format"]["hypo_words"]
    for i, (c, direction) in enumerate(zip(cards, directions, strict=True)):
        mg = c.get("extension", {}).get("magnesium-aki", {}).get("magnesium")
        if mg is None or mg["value_mg_dl"] < low or direction != "low":
            continue
        for text in (c["summary"], *_what_to_do(c.get("detail", ""), locale)):
            if any(w in text for w in hypo):
                out.append(f"card {i}: Mg {mg['value_mg_dl']} mg/dL (in range) called {hypo}: {text!r}")
    return out


def _what_to_do(detail: str, locale: str) -> list[str]:
    return [ln for ln in detail.split("\n") if ln.startswith(_WHAT_TO_DO[locale])]

