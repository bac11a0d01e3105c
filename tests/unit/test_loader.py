"""The loader accepts the real mappings/ and rejects each kind of mistake, naming file and field."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cds_service.rules.loader import MappingError, load_knowledge
from cds_service.rules.model import Knowledge
from tests.shared_data import SHARED

ROOT = Path(__file__).parents[2]
MAPPINGS = ROOT / "mappings"
EVIDENCE = SHARED / "clinical/evidence.md"

# Every rule id of clinical/evidence.md §4, in the order of its tables.
EVIDENCE_RULE_IDS = [
    "admission-u-shape", "contrast-u-shape", "icu-admission-low", "icu-admission-high",
    "cardiac-surgery-postop-high", "emergency-admission-high", "cirrhosis-high",
    "covid-stay-median-high", "pediatric-icu-corrected-high",
    "cardiac-surgery-preop-ionized-low", "cardiac-surgery-preop-low", "pancreatitis-low",
    "tbi-low", "malignancy-low", "aki-recovery-low", "csa-aki-persistent-low", "reference-range",
    "cisplatin-mg-preload", "laparoscopic-intraop-mg", "cardiac-surgery-intraop-mg",
    "icu-hypomagnesemia-repletion", "vanco-pip-tazo-mg", "sepsis-mg",
    "drug-induced-hypomagnesemia", "severe-hypomagnesemia", "monitoring-gap", "mg-trend",
    "mg-data-quality", "aki-kdigo", "mg-order-unsafe", "hypermagnesemia-toxic",
]  # fmt: skip


def test_real_mappings_load(knowledge: Knowledge) -> None:
    ids = [r.id for r in knowledge.rules]
    assert len(ids) == 31
    assert ids == EVIDENCE_RULE_IDS
    for rule in knowledge.rules:
        assert rule.version and rule.citations
        assert all(c.doi or c.url for c in rule.citations)


@pytest.mark.skipif(not EVIDENCE.exists(), reason="clinical/evidence.md not on this machine")
def test_every_evidence_section_4_id_is_a_rule(knowledge: Knowledge) -> None:
    text = EVIDENCE.read_text(encoding="utf-8")
    section = text.split("## 4. Rules", 1)[1].split("## 5.", 1)[0]
    in_tables = re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.M)
    named = {"mg-order-unsafe", "hypermagnesemia-toxic"}  # defined in the prose of §4
    assert set(in_tables) | named == {r.id for r in knowledge.rules}


# --- one mistake at a time ----------------------------------------------------------------

Edit = Callable[[Path], None]


def replace(rel: str, old: str, new: str, count: int = 1) -> Edit:
    """Replace text in one file of the copied mappings (the old text must be there)."""

    def edit(root: Path) -> None:
        path = root / rel
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {rel}: fix the test"
        path.write_text(text.replace(old, new, count), encoding="utf-8")

    return edit


def copy_file(src: str, dst: str) -> Edit:
    def edit(root: Path) -> None:
        shutil.copy(root / src, root / dst)

    return edit


def both(*edits: Edit) -> Edit:
    def edit(root: Path) -> None:
        for e in edits:
            e(root)

    return edit


RULE = "rules/admission-u-shape.yaml"
ORDER = "rule-order.yaml"

# (case id, edit, file named in the message, field named in the message)
CASES: list[tuple[str, Edit, str, str]] = [
    (
        "unknown-fact",
        replace(RULE, "  - age: {ge: 18, unit: a}", "  - adult: {ge: 18, unit: a}"),
        "admission-u-shape.yaml", "population",
    ),
    (
        "unknown-fact-in-gate",
        replace("gate.yaml", "fact: {condition: [oliguria]}", "fact: {diagnosis: [oliguria]}"),
        "gate.yaml", "conditions[7]",
    ),
    (
        "unknown-operator-lte",
        replace(RULE, "{direction: low, lt: 1.5, unit: mg/dL}", "{direction: low, lte: 1.5, unit: mg/dL}"),
        "admission-u-shape.yaml", "lte",
    ),
    (
        "unknown-operator-beside-a-known-one",
        replace(
            "rules/cirrhosis-high.yaml",
            "{direction: high, ge: 2.4, unit: mg/dL}",
            "{direction: high, ge: 2.4, lte: 9, unit: mg/dL}",
        ),
        "cirrhosis-high.yaml", "lte",
    ),
    (
        "unknown-operator-in-gate-lab",
        replace("gate.yaml", "{kind: serum-mg, ge: 2.5,", "{kind: serum-mg, gte: 2.5,"),
        "gate.yaml", "gte",
    ),
    (
        "unknown-trigger",
        replace("rules/aki-kdigo.yaml", "  kdigo: {}", "  kdigo-stage: {}"),
        "aki-kdigo.yaml", "trigger",
    ),
    (
        "missing-citation",
        replace(RULE, "citations:", "references:"),
        "admission-u-shape.yaml", "citation",
    ),
    (
        "citation-without-doi-or-url",
        replace(RULE, "    doi: https://doi.org/10.3109/0886022X.2015.1057471\n", ""),
        "admission-u-shape.yaml", "citations[0]",
    ),
    (
        "threshold-without-unit",
        replace(RULE, "{direction: low, lt: 1.5, unit: mg/dL}", "{direction: low, lt: 1.5}"),
        "admission-u-shape.yaml", "thresholds[0]",
    ),
    (
        "unit-not-of-magnesium",
        replace(RULE, "{direction: low, lt: 1.5, unit: mg/dL}", "{direction: low, lt: 1.5, unit: umol/L}"),
        "admission-u-shape.yaml", "thresholds[0]",
    ),
    (
        "duplicate-id-two-files",
        both(
            copy_file(RULE, "rules/admission-u-shape-copy.yaml"),
            replace(ORDER, "  - admission-u-shape\n", "  - admission-u-shape\n  - admission-u-shape-copy\n"),
        ),
        "admission-u-shape-copy.yaml", "id",
    ),
    (
        "id-not-file-name",
        replace(RULE, "id: admission-u-shape", "id: admission-u"),
        "admission-u-shape.yaml", "id",
    ),
    (
        "listed-twice-in-rule-order",
        replace(ORDER, "  - tbi-low\n", "  - tbi-low\n  - tbi-low\n"),
        "rule-order.yaml", "tbi-low",
    ),
    (
        "rule-file-not-in-rule-order",
        replace(ORDER, "  - tbi-low\n", ""),
        "tbi-low.yaml", "rule-order.yaml",
    ),
    (
        "rule-order-names-a-missing-file",
        replace(ORDER, "  - tbi-low\n", "  - tbi-low\n  - no-such-rule\n"),
        "rule-order.yaml", "no-such-rule",
    ),
    (
        "missing-text-key-zh-CN",
        replace(
            "text/zh-CN.yaml",
            '      high: "入院血清镁 {value_mg_dl} mg/dL（>2.3）：与 AKI 风险升高相关"\n',
            "",
        ),
        "zh-CN.yaml", "rules.admission-u-shape.summary.high",
    ),
    (
        "unknown-placeholder",
        replace("text/en.yaml", "Admission Mg {value_mg_dl} mg/dL (<1.5)", "Admission Mg {valu} mg/dL (<1.5)"),
        "en.yaml", "rules.admission-u-shape.summary.low",
    ),
    (
        "value-set-absent-in-population",
        replace("rules/cirrhosis-high.yaml", "  - condition: [cirrhosis]", "  - condition: [liver-cirrhosis]"),
        "cirrhosis-high.yaml", "population",
    ),
    (
        "value-set-absent-in-suggestion-medication",
        replace("rules/cisplatin-mg-preload.yaml", "  medication: magnesium-sulfate", "  medication: mgso4"),
        "cisplatin-mg-preload.yaml", "suggestion.medication",
    ),
    (
        "value-set-absent-in-show-conditions",
        replace("rules/cirrhosis-high.yaml", "show_conditions: [cirrhosis-decompensation]", "show_conditions: [decompensation]"),
        "cirrhosis-high.yaml", "show_conditions",
    ),
    (
        "bad-duration-in-population",
        replace(
            "rules/cardiac-surgery-postop-high.yaml",
            "states: [performed], within: 7d}",
            "states: [performed], within: 7days}",
        ),
        "cardiac-surgery-postop-high.yaml", "within",
    ),
    (
        "bad-duration-in-suggestion-weight",
        replace("rules/laparoscopic-intraop-mg.yaml", "weight: {within: 30d,", "weight: {within: 1 month,"),
        "laparoscopic-intraop-mg.yaml", "weight",
    ),
    (
        "bad-duration-in-measure-window",
        replace("measures.yaml", "window: {start: -12h, end: 24h}", "window: {start: -12hours, end: 24h}"),
        "measures.yaml", "admission-mg",
    ),
    (
        "aki-stage-not-a-number",
        replace("gate.yaml", "fact: {aki: {stage_ge: 2}}", "fact: {aki: {stage_ge: two}}"),
        "gate.yaml", "stage_ge",
    ),
    (
        "measure-unknown",
        replace(RULE, "measure: admission-mg", "measure: admission-magnesium"),
        "admission-u-shape.yaml", "measure",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("edit", "file_name", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_mapping_is_rejected(
    tmp_path: Path, edit: Edit, file_name: str, field: str
) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    edit(root)
    with pytest.raises(MappingError) as info:
        load_knowledge(root, site=root / "site" / "example.yaml")
    message = str(info.value)
    assert file_name in message, message
    assert field in message, message


def test_unknown_operator_in_age_fact(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    replace(RULE, "  - age: {ge: 18, unit: a}", "  - age: {ge: 18, lte: 99, unit: a}")(root)
    with pytest.raises(MappingError) as info:
        load_knowledge(root, site=root / "site" / "example.yaml")
    assert "admission-u-shape.yaml" in str(info.value) and "lte" in str(info.value)


def test_site_lab_code_value_set_absent(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    replace("site/example.yaml", "value_set: serum-magnesium-mass", "value_set: serum-mg")(root)
    with pytest.raises(MappingError) as info:
        load_knowledge(root, site=root / "site" / "example.yaml")
    message = str(info.value)
    assert "example.yaml" in message and "lab_codes[0].value_set" in message, message


@pytest.mark.parametrize(
    "set_id",
    ["aki", "dialysis", "magnesium-sulfate", "oral-magnesium", "pre-eclampsia", "non-serum-specimen"],
)
def test_value_set_named_in_code_is_required(tmp_path: Path, set_id: str) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    (root / "codes" / f"{set_id}.yaml").unlink()
    with pytest.raises(MappingError) as info:
        load_knowledge(root, site=root / "site" / "example.yaml")
    assert "codes" in str(info.value) and set_id in str(info.value), str(info.value)


def test_site_unknown_rule_id(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("disabled_rules: [no-such-rule]\n", encoding="utf-8")
    with pytest.raises(MappingError) as info:
        load_knowledge(MAPPINGS, site=site)
    assert "site.yaml" in str(info.value) and "no-such-rule" in str(info.value)


def test_copy_without_changes_loads(tmp_path: Path) -> None:
    """The harness itself: an unchanged copy loads (so each failure above is the edit's)."""
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    k = load_knowledge(root, site=root / "site" / "example.yaml")
    assert len(k.rules) == 31
