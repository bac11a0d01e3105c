"""Per-locale translations of rule evidence (``rules.<text key>.evidence`` in text/<locale>.yaml).

The rule files stay the English source of truth; a locale may translate the design, the
population studied, each effect's label and measure, and the trial's exclusions. Lists match
the rule file's lists one to one; numbers and CIs are still formatted by the code.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from cds_service.clinical import model as m
from cds_service.clinical.numbers import as_reported
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.render.text import TextRenderer
from cds_service.rules.loader import EVIDENCE_TEXT_KEYS, MappingError, load_knowledge
from cds_service.rules.model import Advice, Knowledge, Rule
from tests.unit.builders import NOW, H, by_direction, mg, run, safe_labs, snapshot
from tests.unit.test_loader import MAPPINGS, Edit, replace

REPLETION = "icu-hypomagnesemia-repletion"
ICU = NOW - 10 * H
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
# Latin words allowed in a translation: units, abbreviations and names kept as in the review.
_LATIN_OK = {"mmol", "eGFR", "MIMIC", "COVID", "Money", "KDIGO", "England", "Seah", "Adomako",
             "Suppadungsuk", "PRAGMATIC"}  # fmt: skip


def zh_evidence(k: Knowledge, rule: Rule) -> dict[str, Any]:
    node = k.texts["zh-CN"]["rules"][rule.id].get("evidence")
    assert isinstance(node, dict), f"zh-CN.yaml: rules.{rule.id}.evidence missing"
    return node


def numbers(text: str) -> list[str]:
    return sorted(_NUMBER.findall(text.replace("²", "2")))


def icu_low_advice(k: Knowledge) -> tuple[Advice, m.ClinicalSnapshot]:
    """ICU patient, Mg 1.5 mg/dL: icu-admission-low (effects with CIs) and the repletion trial."""
    snap = snapshot(
        age=50, encounter="inpatient", admitted=ICU, icu=ICU,
        mg=[mg(k, 1.5, at=NOW - 2 * H)], **safe_labs(k),
    )  # fmt: skip
    advice = by_direction(run(k, snap))["low"]
    assert {"icu-admission-low", REPLETION} <= set(advice.rules)
    return advice, snap


# --- the zh-CN translations ---------------------------------------------------------------


def test_every_rule_has_a_zh_cn_evidence_translation(knowledge: Knowledge) -> None:
    for rule in knowledge.rules:
        ev, tr = rule.evidence, zh_evidence(knowledge, rule)
        assert set(tr) <= set(EVIDENCE_TEXT_KEYS)
        assert tr.get("design"), rule.id
        assert bool(tr.get("population")) is bool(ev.population), rule.id
        assert len(tr.get("effect_labels") or []) == len(ev.effects), rule.id
        assert len(tr.get("effect_measures") or []) == len(ev.effects), rule.id
        exclusions = ev.extra.get("trial_exclusions") or []
        assert len(tr.get("exclusions") or []) == len(exclusions), rule.id


def test_zh_cn_translations_keep_the_numbers_of_the_rule_files(knowledge: Knowledge) -> None:
    for rule in knowledge.rules:
        ev, tr = rule.evidence, zh_evidence(knowledge, rule)
        pairs = [(ev.design, tr["design"]), (ev.population or "", tr.get("population", ""))]
        pairs.append((ev.study, tr.get("study", ev.study)))
        pairs += zip([e.label for e in ev.effects], tr.get("effect_labels") or [], strict=True)
        pairs += zip([e.measure for e in ev.effects], tr.get("effect_measures") or [], strict=True)
        pairs += zip(ev.extra.get("trial_exclusions") or [], tr.get("exclusions") or [], strict=True)
        for english, chinese in pairs:
            assert numbers(str(chinese)) == numbers(english), (rule.id, english, chinese)


def test_zh_cn_translations_are_chinese(knowledge: Knowledge) -> None:
    for rule in knowledge.rules:
        tr = zh_evidence(knowledge, rule)
        for value in tr.values():
            for text in value if isinstance(value, list) else [value]:
                words = set(re.findall(r"[A-Za-z]{4,}", str(text)))
                assert words <= _LATIN_OK, (rule.id, text)


def test_review_terms_are_used(knowledge: Knowledge) -> None:
    zh = TextRenderer(knowledge, "zh-CN")
    assert zh.design(knowledge.rule("malignancy-low")) == "单中心回顾性观察性研究"
    assert zh.design(knowledge.rule("contrast-u-shape")) == "多中心回顾性观察性研究"
    assert zh.design(knowledge.rule(REPLETION)) == "随机对照试验"
    measures = [m for _, m in zh.effect_texts(knowledge.rule("admission-u-shape"))]
    assert measures == ["校正 OR", "校正 OR"]


# --- rendering -----------------------------------------------------------------------------


def test_zh_cn_card_has_no_english_evidence(knowledge: Knowledge) -> None:
    advice, snap = icu_low_advice(knowledge)
    detail = TextRenderer(knowledge, "zh-CN").render(advice, snap.conditions).detail
    for english in ("randomized", "trial", "cohort", "prospective", "adjusted", "mortality",
                    "saline", "creatinine", "dialysis", "contrast", "pregnancy", "malignancy",
                    "torsades", "weight under", "or higher", "or lower"):  # fmt: skip
        assert english not in detail, english
    assert "随机对照试验" in detail and "多中心前瞻性队列研究" in detail
    assert "校正 RR 0.27" in detail and "校正 OR 1.25（1.08~1.46）" in detail  # numbers from code
    assert "入住 ICU 时血清镁 <1.6 mg/dL，死亡风险：校正 HR 1.65" in detail
    exclusions = [str(x) for x in zh_evidence(knowledge, knowledge.rule(REPLETION))["exclusions"]]
    assert "该试验排除了：" + "；".join(exclusions) + "。" in detail
    assert "血肌酐 ≥3.5 mg/dL" in detail and "妊娠" in detail and "晚期恶性肿瘤" in detail


def test_zh_cn_card_source_label_uses_the_translated_design(knowledge: Knowledge) -> None:
    advice, snap = icu_low_advice(knowledge)
    renderer = CardRenderer(knowledge, OrderCodes(MAPPINGS / "orders.yaml"))
    (card,) = renderer.cards([advice], snap, "zh-CN", NOW)
    assert card["source"]["label"].endswith("(多中心前瞻性队列研究)")
    (card,) = renderer.cards([advice], snap, "en", NOW)
    assert card["source"]["label"].endswith("(multicentre prospective cohort)")


def test_english_output_unchanged(knowledge: Knowledge) -> None:
    """English has no evidence translations: the rule files' text, formatted as before."""
    assert all("evidence" not in node for node in knowledge.texts["en"]["rules"].values())
    en = TextRenderer(knowledge, "en")
    for rule in knowledge.rules:
        ev = rule.evidence
        assert en.design(rule) == ev.design and en.population(rule) == ev.population
        assert en.exclusions(rule) == list(ev.extra.get("trial_exclusions") or [])
        parts = []
        for e in ev.effects:
            part = f"{e.label}: {e.measure} {as_reported(e.value)}" if e.value is not None else e.label
            parts.append(part + (f" ({as_reported(e.ci[0])}-{as_reported(e.ci[1])})" if e.ci else ""))
        n = f", N={ev.n:,}" if ev.n else ""
        effects = f": {'; '.join(parts)}." if parts else "."  # no dangling clause without effects
        assert en.evidence_line(rule).startswith(f"{ev.study}, {ev.design}{n}{effects}")
    advice, snap = icu_low_advice(knowledge)
    detail = en.render(advice, snap.conditions).detail
    assert "Barbosa 2016, randomized controlled trial, N=143: IV magnesium 48 mEq/day" in detail
    assert "The trial excluded: creatinine 3.5 mg/dL or higher; dialysis;" in detail


def test_effect_sizes_keep_their_reported_precision(knowledge: Knowledge) -> None:
    """P = 0.007, HR 0.082 (0.008-0.790) and OR 1.70 are shown as the papers report them."""
    en = TextRenderer(knowledge, "en")
    assert "P = 0.007" in en.evidence_line(knowledge.rule("emergency-admission-high"))
    assert "HR 0.082 (0.008-0.790)" in en.evidence_line(knowledge.rule("cisplatin-mg-preload"))
    assert "adjusted OR 1.70 (1.31-2.18)" in en.evidence_line(knowledge.rule("admission-u-shape"))
    assert "adjusted OR 1.30 (1.12-1.52)" in en.evidence_line(
        knowledge.rule("cardiac-surgery-postop-high")
    )


# --- the loader ----------------------------------------------------------------------------

ZH = "text/zh-CN.yaml"


def load_edited(tmp_path: Path, *edits: Edit) -> Knowledge:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    for edit in edits:
        edit(root)
    return load_knowledge(root, site=root / "site" / "example.yaml")


BAD = [
    (
        "exclusions-too-short",
        replace(ZH, '        - "妊娠"\n', ""),
        "rules.icu-hypomagnesemia-repletion.evidence.exclusions",
    ),
    (
        "effect-labels-too-long",
        replace(ZH, '        - "入住 ICU 时血清镁 <1.6 mg/dL，AKI"\n',
                '        - "入住 ICU 时血清镁 <1.6 mg/dL，AKI"\n        - "多出的一项"\n'),
        "rules.icu-admission-low.evidence.effect_labels",
    ),
    (
        "effect-measures-too-short",
        replace(ZH, '      effect_measures:\n        - "校正 OR"\n        - "校正 OR"\n',
                '      effect_measures:\n        - "校正 OR"\n'),
        "rules.admission-u-shape.evidence.effect_measures",
    ),
    (
        "exclusions-on-a-rule-without-trial-exclusions",
        replace(ZH, '      design: "单中心回顾性先导研究"\n',
                '      design: "单中心回顾性先导研究"\n      exclusions: ["透析"]\n'),
        "rules.tbi-low.evidence.exclusions",
    ),
    (
        "unknown-key",
        replace(ZH, '      design: "随机对照试验"\n', '      design: "随机对照试验"\n      title: "巴尔博萨"\n'),
        "rules.icu-hypomagnesemia-repletion.evidence",
    ),
    (
        "design-not-a-string",
        replace(ZH, '      design: "随机对照试验"\n', "      design: [随机对照试验]\n"),
        "rules.icu-hypomagnesemia-repletion.evidence.design",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("edit", "key"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_loader_rejects_a_bad_translation(tmp_path: Path, edit: Edit, key: str) -> None:
    with pytest.raises(MappingError) as info:
        load_edited(tmp_path, edit)
    message = str(info.value)
    assert "zh-CN.yaml" in message and key in message, message


def test_unknown_key_is_named(tmp_path: Path) -> None:
    edit = replace(ZH, '      design: "随机对照试验"\n', '      design: "随机对照试验"\n      title: "巴尔博萨"\n')
    with pytest.raises(MappingError, match=r"zh-CN\.yaml: rules\.icu-hypomagnesemia-repletion\.evidence: unknown key\(s\) \['title'\]"):
        load_edited(tmp_path, edit)


def test_translation_is_optional_and_falls_back_per_field(tmp_path: Path) -> None:
    """No evidence block in en (never needed); zh-CN without design: English design only."""
    k = load_edited(tmp_path, replace(ZH, '      design: "随机对照试验"\n', ""))
    rule = k.rule(REPLETION)
    zh = TextRenderer(k, "zh-CN")
    assert zh.design(rule) == "randomized controlled trial"
    assert zh.population(rule) == "无症状低镁血症危重成人患者"
    assert zh.exclusions(rule)[0] == "血肌酐 ≥3.5 mg/dL"
    assert zh.effect_texts(rule) == [("静脉补镁（每日 48 mEq，连用 3 天）与生理盐水相比，AKI", "校正 RR")]


def test_a_locale_may_have_no_evidence_translations_at_all(tmp_path: Path) -> None:
    def strip(root: Path) -> None:
        path = root / ZH
        kept, skipping = [], False
        for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
            if line == "    evidence:\n":
                skipping = True
                continue
            if skipping and line.startswith("      "):
                continue
            skipping = False
            kept.append(line)
        path.write_text("".join(kept), encoding="utf-8")

    k = load_edited(tmp_path, strip)
    assert all("evidence" not in node for node in k.texts["zh-CN"]["rules"].values())
    zh = TextRenderer(k, "zh-CN")
    rule = k.rule(REPLETION)
    assert zh.design(rule) == rule.evidence.design
    assert zh.exclusions(rule) == rule.evidence.extra["trial_exclusions"]
    assert "randomized controlled trial" in zh.evidence_line(rule)
