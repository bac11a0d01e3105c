"""The rule review document (GET /rules JSON/HTML, docs/rules.md): structured values, words
from the reviewer texts, every number read from the rule files; checked at load."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.app import create_app
from cds_service.render.reviewer import review
from cds_service.rules.loader import MappingError, load_knowledge
from cds_service.rules.model import Knowledge

ROOT = Path(__file__).parents[2]
REPR = re.compile(r"\{'|'\}|\[\'|\bTrue\b|\bFalse\b|\bNone\b")


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["rules"]}


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_no_python_reprs_and_no_unfilled_placeholders(knowledge: Knowledge, locale: str) -> None:
    doc = review(knowledge, locale)
    texts = strings(doc)
    assert texts
    for text in texts:
        assert not REPR.search(text), text
        assert not re.search(r"\{[a-z_]+\}", text), text


def test_population_and_thresholds_are_structured_with_words(knowledge: Knowledge) -> None:
    rule = by_id(review(knowledge, "en"))["admission-u-shape"]
    assert rule["population"][0] == {
        "fact": "age",
        "params": {"ge": 18, "unit": "a"},
        "text": "age ≥ 18 years",
    }
    assert rule["population"][1]["text"] == "inpatient or emergency encounter"
    low, high = rule["thresholds"]
    assert low["bounds"] == {"lt": 1.5, "unit": "mg/dL"} and low["other_unit"]["unit"] == "mmol/L"
    assert low["other_unit"]["lt"] == pytest.approx(1.5 / 2.4305)
    assert low["text"] == "low magnesium: < 1.5 mg/dL (< 0.62 mmol/L)"
    assert high["text"] == "high magnesium: > 2.3 mg/dL (> 0.95 mmol/L)"
    assert rule["measure"]["text"] == "earliest serum Mg in [admission - 12 h, admission + 24 h]"
    assert rule["evidence"]["effects"][0]["ci"] == [1.31, 2.18]


def test_threshold_in_mmol_shows_mg_dl(knowledge: Knowledge) -> None:
    rule = by_id(review(knowledge, "en"))["pancreatitis-low"]
    assert rule["thresholds"][0]["text"] == "low magnesium: < 0.755 mmol/L (< 1.84 mg/dL)"


def test_severe_hypomagnesemia_indicator_range_includes_critical(knowledge: Knowledge) -> None:
    ind = by_id(review(knowledge, "en"))["severe-hypomagnesemia"]["indicator_range"]
    assert ind["default"] == "warning" and ind["levels"] == ["warning", "critical"]
    assert ind["when"] == [{"indicator": "critical", "bounds": {"lt": 1.0, "unit": "mg/dL"}}]
    assert ind["text"] == "warning; critical when the value is < 1 mg/dL (< 0.41 mmol/L)"
    kdigo = by_id(review(knowledge, "en"))["aki-kdigo"]["indicator_range"]
    assert kdigo["levels"] == ["warning", "critical"] and "AKI stage 3" in kdigo["text"]


def test_supplementation_rules_show_dose_dilution_rate_and_gate(knowledge: Knowledge) -> None:
    rules = by_id(review(knowledge, "en"))
    icu = rules["icu-hypomagnesemia-repletion"]["suggestion"]
    assert icu["dose_text"] == "5.9 g magnesium sulfate IV (48 mEq) per day, for 3 days"
    assert icu["dilution_text"] == "in 250 mL 0.9 % sodium chloride"
    assert icu["rate_text"] == "over 24 h (about 4.1 mg/min)"  # 5,900 mg / 1,440 min
    lap = rules["laparoscopic-intraop-mg"]["suggestion"]
    assert lap["dose_text"].startswith(
        "50 mg/kg magnesium sulfate IV at induction of anaesthesia, then 15 mg/kg/h"
    )
    assert lap["rate_limit_text"] == "at most 150 mg/min"
    assert "≥ 40 and ≤ 150 kg" in lap["weight_text"] and "30 days" in lap["weight_text"]
    vanco = rules["vanco-pip-tazo-mg"]["suggestion"]
    assert vanco["given_when_text"] == "latest serum Mg is < 1.9 mg/dL (< 0.78 mmol/L)"
    gate = rules["sepsis-mg"]["gate"]
    assert gate.startswith("Withheld when any safety-gate condition holds:")
    assert "latest serum Mg of the last 72 h is ≥ 2.5 mg/dL (≥ 1.03 mmol/L)" in gate
    assert (
        "eGFR of the last 7 days (the lower of the reported one and the one computed from "
        "creatinine, CKD-EPI 2021, adults) is < 30 mL/min/1.73 m²"
    ) in gate
    assert rules["cardiac-surgery-intraop-mg"]["suggestion"]["kind"] == "none"
    assert "does not apply" in rules["cardiac-surgery-intraop-mg"]["gate"]


def test_gate_and_obstetric_scope_in_words(knowledge: Knowledge) -> None:
    doc = review(knowledge, "en")
    assert [c["id"] for c in doc["gate"]["conditions"]] == [g.id for g in knowledge.gate]
    missing = next(c for c in doc["gate"]["conditions"] if c["id"] == "mg-missing")
    assert (
        missing["text"] == "no usable serum Mg in the last 72 h" and "measuring" in missing["note"]
    )
    obst = doc["obstetric"]
    assert (
        "admission-u-shape" in obst["suppressed_rules"]
        and "hypermagnesemia-toxic" not in obst["suppressed_rules"]
    )
    assert "hypermagnesemia-toxic fires at ≥ 9.6 mg/dL" in obst["text"]
    toxic = by_id(doc)["hypermagnesemia-toxic"]["obstetric"]
    assert toxic == {
        "suppressed": False,
        "thresholds": [{"ge": 9.6, "unit": "mg/dL"}],
        "text": "with pre-eclampsia or eclampsia coded it fires at ≥ 9.6 mg/dL (≥ 3.95 mmol/L) instead",
    }


def test_chinese_document_uses_chinese_words_and_the_same_numbers(knowledge: Knowledge) -> None:
    en, zh = by_id(review(knowledge, "en")), by_id(review(knowledge, "zh-CN"))
    assert zh["admission-u-shape"]["population"][0]["text"] == "年龄 ≥ 18 岁"
    assert (
        zh["icu-hypomagnesemia-repletion"]["suggestion"]["dilution_text"]
        == "溶于 250 mL 0.9% 氯化钠"
    )
    assert zh["severe-hypomagnesemia"]["indicator_range"]["levels"] == ["warning", "critical"]
    assert "危急" in zh["severe-hypomagnesemia"]["indicator_range"]["text"]
    for rid, rule in en.items():
        bounds = [(t["bounds"], t["other_unit"]) for t in rule.get("thresholds", [])]
        assert bounds == [(t["bounds"], t["other_unit"]) for t in zh[rid].get("thresholds", [])]
        numbers = re.findall(r"\d+(?:\.\d+)?", rule["fires_when"])
        assert numbers == re.findall(r"\d+(?:\.\d+)?", zh[rid]["fires_when"]) or rule.get(
            "trigger"
        ), rid


def test_get_rules_language_from_query_and_accept_language(tmp_path: Path) -> None:
    app = create_app({"auth": "off", "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}"})
    c = app.test_client()
    page = c.get("/rules?lang=zh-CN", headers={"Accept": "text/html"})
    assert page.headers["Content-Language"] == "zh-CN" and '<html lang="zh-CN">' in page.get_data(
        as_text=True
    )
    page = c.get(
        "/rules", headers={"Accept": "text/html", "Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"}
    )
    assert "安全核查" in page.get_data(as_text=True)
    doc = c.get("/rules", headers={"Accept": "application/json"}).get_json()
    assert doc["locale"] == "en" and len(doc["rules"]) == 31
    assert "Accept-Language" in c.get("/rules").headers["Vary"]
    json.dumps(doc)  # plain JSON all the way down


def copy_mappings(tmp_path: Path) -> Path:
    root = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", root)
    return root


def edit_zh(root: Path, change: Any) -> None:
    path = root / "text" / "zh-CN.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data["reviewer"])
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["value_sets"].pop("sepsis"),
            "reviewer.value_sets: no translation of 'sepsis'",
        ),
        (
            lambda r: r["phrases"].pop("0.9 % sodium chloride"),
            "reviewer.phrases: no translation of '0.9 % sodium chloride'",
        ),
        (
            lambda r: r.__setitem__("title", "{nonsense}"),
            "reviewer.title: unknown placeholder {nonsense}",
        ),
        (lambda r: r["gate"].pop("applies"), "missing text key"),
        (
            lambda r: r["triggers"]["data-quality-reasons"].pop("specimen-not-serum"),
            "missing text key reviewer.triggers.data-quality-reasons.specimen-not-serum",
        ),
    ],
)
def test_loader_rejects_incomplete_reviewer_texts(
    tmp_path: Path, change: Any, message: str
) -> None:
    root = copy_mappings(tmp_path)
    edit_zh(root, change)
    with pytest.raises(MappingError, match=re.escape(message)) as err:
        load_knowledge(root)
    assert "zh-CN.yaml" in str(err.value)
