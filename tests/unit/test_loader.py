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
        "gate.yaml", "conditions[8]: unknown fact 'diagnosis'",
    ),
    (
        "unknown-operator-lte",
        replace(RULE, "{direction: low, lt: 1.5, unit: mg/dL}", "{direction: low, lte: 1.5, unit: mg/dL}"),
        "admission-u-shape.yaml", "thresholds[0]: unknown key(s) ('lte'",
    ),
    (
        "unknown-operator-beside-a-known-one",
        replace(
            "rules/cirrhosis-high.yaml",
            "{direction: high, ge: 2.4, unit: mg/dL}",
            "{direction: high, ge: 2.4, lte: 9, unit: mg/dL}",
        ),
        "cirrhosis-high.yaml", "thresholds[0]: unknown key(s) ('lte'",
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
            '      high: "监测血肌酐和尿量；评估镁摄入及肾功能；复查血清镁。"\n',
            "",
            1,
        ),
        "zh-CN.yaml", "rules.admission-u-shape.action.high",
    ),
    (
        "undeclared-placeholder",
        replace("text/en.yaml", 'summary: "Admission Mg {value} ({threshold}): associated', 'summary: "Admission Mg {value} ({threshold}) on {icu_start}: associated'),
        "en.yaml", "rules.admission-u-shape.summary.default: placeholder {icu_start} is not declared",
    ),
    (
        "unknown-placeholder-declared",
        replace(RULE, "  placeholders: [", "  placeholders: [valu, "),
        "admission-u-shape.yaml", "text.placeholders: unknown placeholder {valu}",
    ),
    (
        "declared-placeholder-the-rule-cannot-fill",
        replace(RULE, "  placeholders: [", "  placeholders: [dose, "),
        "admission-u-shape.yaml", "text.placeholders: {dose}",
    ),
    (
        "template-restates-a-threshold",
        replace("text/en.yaml", 'summary: "Admission Mg {value} ({threshold}): associated', 'summary: "Admission Mg {value} (below 1.5): associated'),
        "en.yaml", "restates 1.5",
    ),
    (
        "template-restates-a-dose",
        replace("text/zh-CN.yaml", "可考虑每日静脉补镁 {dose_meq}（硫酸镁 {dose}）", "可考虑每日静脉补镁 48 mEq（硫酸镁 {dose}）"),
        "zh-CN.yaml", "restates 48",
    ),
    (
        "computed-dose-in-a-regimen",
        replace("text/en.yaml", "Study regimen: magnesium sulfate {dose_per_kg} in", "Study regimen: magnesium sulfate {dose} in"),
        "en.yaml", "rules.laparoscopic-intraop-mg.regimen.default: {dose} exists only once a dose is computed",
    ),
    (
        "in-range-wording-says-hypomagnesaemia",
        replace("text/en.yaml", "in_range_low: \"Monitor creatinine and urine output for {monitor_after} after contrast; recheck Mg.", "in_range_low: \"Monitor creatinine and urine output for {monitor_after} after contrast; treat hypomagnesaemia."),
        "en.yaml", "rules.contrast-u-shape.action",
    ),
    (
        "no-in-range-variant",
        replace("text/en.yaml", '      in_range_low: "Admission Mg {value} ({threshold}, lower part of the reference range) in acute pancreatitis: higher AKI risk"\n', ""),
        "en.yaml", "rules.pancreatitis-low.summary: needs an in_range_low variant",
    ),
    (
        "no-withheld-summary",
        replace("text/en.yaml", '      withheld: "Cisplatin ordered: magnesium preload suggestion withheld by the safety gate"\n', ""),
        "en.yaml", "rules.cisplatin-mg-preload: a rule that suggests magnesium needs summary.withheld",
    ),
    (
        "no-gated-variant",
        replace("text/en.yaml", '      gated: "Repletion advice withheld by the safety gate ({reasons}). {instead} ECG; check potassium and calcium."\n', ""),
        "en.yaml", "rules.severe-hypomagnesemia: action needs a gated variant",
    ),
    (
        "unknown-variant",
        replace("text/en.yaml", "      in_range_low: \"Pre-procedure Mg", "      in_range: \"Pre-procedure Mg"),
        "en.yaml", "rules.contrast-u-shape.summary",
    ),
    (
        "gate-text-undeclared-placeholder",
        replace("text/en.yaml", 'oliguria: "oliguria coded"', 'oliguria: "oliguria coded ({condition})"'),
        "en.yaml", "gate.oliguria: placeholder {condition} is not declared",
    ),
    (
        "gate-text-restates-a-number",
        replace("text/en.yaml", 'mg-missing: "no usable serum Mg in the last {window}', 'mg-missing: "no usable serum Mg in the last 72 h'),
        "en.yaml", "gate.mg-missing: restates 72",
    ),
    (
        "medication-order-not-bounded",
        replace("rules/vanco-pip-tazo-mg.yaml", "  count: 1 ", "  # count: 1 "),
        "vanco-pip-tazo-mg.yaml", "bounded in time",
    ),
    (
        "translation-changes-a-number",
        replace("text/zh-CN.yaml", '"入院血清镁 <1.5 mg/dL 与 1.9~2.1 mg/dL（参照组）相比"', '"入院血清镁 <1.6 mg/dL 与 1.9~2.1 mg/dL（参照组）相比"'),
        "zh-CN.yaml", "rules.admission-u-shape.evidence.effect_labels[0]",
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
    ["aki", "dialysis", "magnesium-sulfate", "oral-magnesium", "pre-eclampsia", "non-serum-specimen",
     "icu-location", "encounter-inpatient", "encounter-emergency", "encounter-ambulatory",
     "serum-magnesium-mass", "creatinine", "egfr", "body-weight"],
)  # fmt: skip
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
