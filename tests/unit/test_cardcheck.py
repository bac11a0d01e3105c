"""The card text checks fail on what a clinician must not read (so the corpus test can fail)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cds_service.rules.model import Knowledge
from tests.cardcheck import card_problems, knowledge_names, response_problems, text_problems

GOOD_EN = (
    "ICU, serum Mg 1.5 mg/dL (> 1.1 and < 1.7 mg/dL): IV magnesium was associated with less AKI",
    "**Serum Mg 1.5 mg/dL (0.62 mmol/L), 2024-05-10 04:00 UTC.**\n\n"
    "**What to do:** Consider magnesium 48 mEq (5.9 g magnesium sulfate) IV over 24 h.\n\n"
    "**Evidence:** Barbosa 2016, randomized controlled trial, N=143. "
    "[49](https://doi.org/10.1007/s00134-016-4276-9)",
)
GOOD_ZH = (
    "ICU 患者血清镁 0.62 mmol/L（> 0.45 且 < 0.70 mmol/L）：随机对照试验中静脉补镁与 AKI 减少相关",
    "**血清镁 0.62 mmol/L（1.5 mg/dL），2024-05-10 04:00 UTC。**\n\n"
    "**处理建议：** 可考虑每日静脉补镁 48 mEq（硫酸镁 5.9 g），24 小时匀速输注。\n\n"
    "**证据：** Barbosa 2016，随机对照试验，N=143。[49](https://doi.org/10.1007/s00134-016-4276-9)",
)


def test_clean_text_passes(knowledge: Knowledge) -> None:
    assert text_problems(*GOOD_EN, [], "en") == []
    assert text_problems(*GOOD_ZH, [], "zh-CN", latin_ok=knowledge_names(knowledge)) == []


@pytest.mark.parametrize(
    ("locale", "summary", "detail", "expected"),
    [
        ("en", "Mg {value}: low", "x", "unfilled placeholder"),
        ("en", "Mg n/a mg/dL", "x", "not text"),
        ("en", "Mg None", "x", "not text"),
        ("en", "Mg nan mg/dL", "x", "not text"),
        ("en", "Admission Mg: low", "Measure: .", "dangling punctuation"),
        ("en", "Admission Mg", "eGFR — ; creatinine", "dangling punctuation"),
        ("en", "Admission Mg", "creatinine 300 umol/L", "unit spelling"),
        ("en", "Admission Mg", "magnesium 4 meq/L", "unit spelling"),
        ("en", "Admission Mg", "Mg 1.5 mg/dl", "unit spelling"),
        ("en", "Weight", "weight 150 [lb_av]", "unit spelling"),
        ("en", "eGFR", "eGFR 25 mL/min/{1.73_m2}", "unit spelling"),
        ("en", "Mg 0.6172839506 mmol/L", "x", "float noise"),
        ("en", "Mg 1.5", "Procedure value not recorded", "fell back"),
        ("en", "x" * 141, "x", "summary of 141 characters"),
        ("en", "Admission Mg 1.4 mg/dL", "#### Admission Mg 1.4 mg/dL\n\nmore", "repeated"),
        ("zh-CN", "血清镁 0.58 mmol/L", "处理建议: 监测血肌酐", "ASCII punctuation"),
        ("zh-CN", "血清镁 1.4 mg/dL（0.58 mmol/L）", "x", "before the SI unit"),
        ("zh-CN", "血清镁 0.58 mmol/L", "请 recheck 血清镁", "English word 'recheck'"),
        ("zh-CN", "血清镁 0.58 mmol/L", "手术未记录", "fell back"),
    ],
)
def test_each_check_catches_its_problem(
    knowledge: Knowledge, locale: str, summary: str, detail: str, expected: str
) -> None:
    found = text_problems(summary, detail, [], locale, latin_ok=knowledge_names(knowledge))
    assert any(expected in p for p in found), found


def test_links_and_dois_are_not_read_as_text() -> None:
    detail = "Evidence. [review](https://doi.org/10.12173/j.issn.1004-5511.202403045)"
    assert text_problems("Trend", detail, [], "en") == []


def order_card(**changes: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "MedicationRequest",
        "dosageInstruction": [{
            "timing": {"repeat": {"duration": 24, "durationUnit": "h", "frequency": 1, "period": 1,
                                  "periodUnit": "d", "boundsDuration": {"value": 3, "unit": "d"}}},
            "doseAndRate": [{"doseQuantity": {"value": 5.9, "unit": "g"}}],
        }],
    }  # fmt: skip
    card = {
        "summary": GOOD_EN[0],
        "detail": GOOD_EN[1],
        "indicator": "warning",
        "suggestions": [{"label": "Magnesium sulfate 5.9 g IV over 24 h, daily for 3 days",
                         "actions": [{"type": "create", "resource": resource}]}],
        "extension": {"magnesium-aki": {"rules": ["icu-hypomagnesemia-repletion"],
                                        "magnesium": {"value_mg_dl": 1.5}}},
    }  # fmt: skip
    for path, value in changes.items():
        node: Any = card
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        node[keys[-1]] = value
    return card


def test_an_order_is_bounded_and_states_its_dose() -> None:
    assert card_problems(order_card(), "en") == []
    unbounded = order_card()
    repeat = unbounded["suggestions"][0]["actions"][0]["resource"]["dosageInstruction"][0]
    del repeat["timing"]["repeat"]["boundsDuration"]
    assert any("unbounded" in p for p in card_problems(unbounded, "en"))
    other_dose = order_card(suggestions__0__label="Magnesium sulfate 4 g IV")
    assert any("does not state the order's dose" in p for p in card_problems(other_dose, "en"))


def test_a_withheld_answer_says_so_and_advises_no_repletion(knowledge: Knowledge) -> None:
    withheld = order_card()
    withheld["extension"]["magnesium-aki"]["withheld"] = ["egfr-low"]
    found = response_problems([withheld], "en", knowledge, directions=["low"])
    assert any("does not say so" in p for p in found)
    assert any("carries a magnesium order" in p for p in found)
    assert any("advises repletion" in p for p in found)


def test_contradictions_and_in_range_wording(knowledge: Knowledge) -> None:
    low = order_card()
    high = copy.deepcopy(low)
    high["suggestions"] = []
    found = response_problems([low, high], "en", knowledge, directions=["low", "high"], latest_mg_dl=1.5)
    assert any("high-magnesium card beside" in p for p in found)
    found = response_problems([low], "en", knowledge, directions=["low"], latest_mg_dl=2.6)
    assert any("low-magnesium card beside" in p for p in found)
    in_range = order_card(summary="Mg 1.8 mg/dL: hypomagnesaemia")
    in_range["suggestions"] = []
    in_range["extension"]["magnesium-aki"]["magnesium"] = {"value_mg_dl": 1.8}
    found = response_problems([in_range], "en", knowledge, directions=["low"])
    assert any("(in range) called" in p for p in found)
    two = [order_card(), order_card()]
    found = response_problems(two, "en", knowledge, directions=["low", "prevention"])
    assert any("2 magnesium orders" in p for p in found)
