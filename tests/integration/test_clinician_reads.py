"""Issue 11 from the clinician's view: what the cards of one answer say, over CDS Hooks (the
Flask app, a patient-view or order hook with the prefetch an EHR sends) and, where the channel
applies, over HL7 v2 (ORU^R01 through the patient store).

Patients are described as in the card gallery (value-set ids, times relative to now) and sent
as an EHR would. Each test names the issue's complaint it guards against.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.events.ingest import Ingestor
from cds_service.render import gallery
from cds_service.render.cards import CardRenderer
from cds_service.render.fhir import OrderCodes
from cds_service.rules.loader import load_knowledge
from cds_service.rules.model import Knowledge
from cds_service.store import dispose_engine, migrate
from tests.hl7support import make_ingestor, msa

ROOT = Path(__file__).parents[2]
SERVICE = {h: f"/cds-services/magnesium-aki-{h}" for h in ("patient-view", "order-select", "order-sign")}


@pytest.fixture(scope="module")
def k() -> Knowledge:
    return load_knowledge(ROOT / "mappings")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    url = f"sqlite:///{tmp_path_factory.mktemp('reads') / 'db.sqlite'}"
    migrate(url)
    app = create_app({"auth": "off", "database_url": url})
    with app.test_client() as c:
        yield c
    dispose_engine(url)


def hook(client: FlaskClient, k: Knowledge, spec: dict[str, Any], locale: str = "en") -> list[dict[str, Any]]:
    """The cards an EHR shows for this patient: every discovery template key filled."""
    name = spec.get("hook", "patient-view")
    scenario = gallery.Scenario(spec.get("id", "p"), "", name, spec)
    request = gallery.request_for(k, scenario, datetime.now(UTC).replace(microsecond=0))
    record = request["prefetch"].pop("record")["entry"]
    patient = next(e["resource"] for e in record if e["resource"]["resourceType"] == "Patient")
    discovery = client.get("/cds-services").get_json()
    keys = next(s["prefetch"] for s in discovery["services"] if s["id"].endswith(name)).keys()
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    request["prefetch"] = {key: empty for key in keys}
    request["prefetch"]["patient"] = patient
    rest = [e for e in record if e["resource"]["resourceType"] != "Patient"]
    request["prefetch"]["magnesium"] = {**empty, "entry": rest}  # an EHR may bundle it all
    resp = client.post(SERVICE[name], json=request, headers={"Accept-Language": locale})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    cards: list[dict[str, Any]] = resp.get_json()["cards"]
    return cards


def read(cards: list[dict[str, Any]]) -> str:
    return "\n".join(
        [c["summary"] for c in cards] + [c["detail"] for c in cards]
        + [s["label"] for c in cards for s in c.get("suggestions", [])]
    )  # fmt: skip


def rules(cards: list[dict[str, Any]]) -> list[str]:
    return [r for c in cards for r in c["extension"]["magnesium-aki"]["rules"]]


def orders(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a["resource"] for c in cards for s in c.get("suggestions", []) for a in s["actions"]
            if a["resource"]["resourceType"] == "MedicationRequest"]  # fmt: skip


def icu(mg: float, **more: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "patient": {"age": 58, "sex": "male"},
        "encounter": {"class": "inpatient", "start": "-20h", "icu": "-10h", "unit": "MICU"},
        "labs": {"serum-magnesium-mass": [[mg, "mg/dL", "-8h"]],
                 "creatinine": [[0.9, "mg/dL", "-8h"]], "body-weight": [[70, "kg", "-1d"]]},
    }  # fmt: skip
    for key, value in more.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) and key in spec else value
    return spec


# --- 1. text from values ----------------------------------------------------------------------


@pytest.mark.parametrize(("kg", "grams", "minutes"), [(60, "3", 20), (70, "3.5", 24), (90, "4.5", 30), (120, "6", 40)])
def test_laparoscopic_bolus_time_respects_150_mg_per_min(
    client: FlaskClient, k: Knowledge, kg: int, grams: str, minutes: int
) -> None:
    spec = {"patient": {"age": 60, "sex": "female"},
            "encounter": {"class": "inpatient", "start": "-1d"},
            "labs": {"serum-magnesium-mass": [[2.0, "mg/dL", "-4h"]],
                     "creatinine": [[0.8, "mg/dL", "-4h"]], "body-weight": [[kg, "kg", "-1d"]]},
            "procedures": [{"set": "laparoscopic-abdominal-surgery", "planned": True}]}  # fmt: skip
    cards = hook(client, k, spec)
    text = read(cards)
    assert f"magnesium sulfate {grams} g ({50} mg/kg for {kg} kg)" in text
    assert f"at induction over {minutes} min (label maximum 150 mg/min, at least 15 min)" in text
    (order,) = orders(cards)
    repeat = order["dosageInstruction"][0]["timing"]["repeat"]
    assert (repeat["duration"], repeat["durationUnit"], repeat["count"]) == (minutes, "min", 1)
    assert order["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] == float(grams)


def test_no_dose_says_why_in_both_languages(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 52, "sex": "male"}, "encounter": {"class": "inpatient", "start": "-1d"},
            "labs": {"serum-magnesium-mass": [[2.0, "mg/dL", "-4h"]], "creatinine": [[0.9, "mg/dL", "-4h"]],
                     "body-weight": [[160, "kg", "-1d"]]},
            "procedures": [{"set": "laparoscopic-abdominal-surgery", "planned": True}]}  # fmt: skip
    en, zh = hook(client, k, spec), hook(client, k, spec, "zh-CN")
    assert "No dose computed: weight 160 kg is outside 40-150 kg." in read(en)
    assert "未计算剂量：体重 160 kg 不在 40~150 kg 范围内。" in read(zh)
    assert orders(en) == orders(zh) == []
    assert "n/a" not in read(en) + read(zh)


def test_vanco_pip_tazo_card_names_the_latest_mg(client: FlaskClient, k: Knowledge) -> None:
    spec = icu(1.7, medications=[{"set": "vancomycin"}, {"set": "piperacillin-tazobactam"}])
    cards = hook(client, k, spec)
    (card,) = [c for c in cards if "vanco-pip-tazo-mg" in c["extension"]["magnesium-aki"]["rules"]]
    assert card["detail"].startswith("**Serum Mg 1.7 mg/dL (0.70 mmol/L), ")
    assert "Keep serum Mg at ≥ 1.9 mg/dL" in card["detail"]


def test_procedures_by_name(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 69, "sex": "male"}, "encounter": {"class": "inpatient", "start": "-4d"},
            "labs": {"creatinine": [[0.9, "mg/dL", "-60h"], [1.5, "mg/dL", "-20h"], [1.7, "mg/dL", "-3h"]],
                     "serum-magnesium-mass": [[1.6, "mg/dL", "-40h"], [1.9, "mg/dL", "-3h"]]},
            "procedures": [{"set": "cardiac-surgery", "start": "-50h", "end": "-46h"}]}  # fmt: skip
    text = read(hook(client, k, spec))
    assert "(Coronary artery bypass grafting, ended " in text  # no SNOMED semantic tag
    assert not re.search(r"after the end of \d", text)


def test_zh_creatinine_threshold_is_a_creatinine_number(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 59, "sex": "male"}, "encounter": {"class": "inpatient", "start": "-2d"},
            "labs": {"serum-magnesium-mass": [[0.8, "mg/dL", "-2h"]], "creatinine": [[4.1, "mg/dL", "-2h"]],
                     "body-weight": [[72, "kg", "-1d"]]}, "conditions": ["esrd"]}  # fmt: skip
    zh = read(hook(client, k, spec, "zh-CN"))
    assert "血肌酐 362 µmol/L，≥ 309 µmol/L" in zh  # 3.5 mg/dL of creatinine, not of magnesium
    assert "1.44 mmol/L" not in zh
    en = read(hook(client, k, spec))
    assert "creatinine 4.1 mg/dL, ≥ 3.5 mg/dL" in en


def test_value_lines_show_the_value_the_rule_used(client: FlaskClient, k: Knowledge) -> None:
    child = {"patient": {"age": 8, "sex": "female"},
             "encounter": {"class": "inpatient", "start": "-12h", "icu": "-10h", "unit": "PICU"},
             "labs": {"serum-magnesium-mass": [[2.2, "mg/dL", "-9h"]], "albumin": [[2.5, "g/dL", "-9h"]],
                      "creatinine": [[0.5, "mg/dL", "-9h"]]}}  # fmt: skip
    (card,) = hook(client, k, child)
    assert card["detail"].startswith(
        "**Serum Mg 2.2 mg/dL with albumin 2.5 g/dL, "
    ) and ": albumin-corrected 2.38 mg/dL (0.98 mmol/L).**" in card["detail"].split("\n")[0]
    (zh,) = hook(client, k, child, "zh-CN")
    assert zh["detail"].startswith("**血清镁实测 0.91 mmol/L，白蛋白 25 g/L，")
    preop = {"patient": {"age": 64, "sex": "male"}, "encounter": {"class": "inpatient", "start": "-1d"},
             "labs": {"ionized-magnesium": [[0.42, "mmol/L", "-4h"]], "serum-magnesium-mass": [[1.9, "mg/dL", "-4h"]],
                      "creatinine": [[1.0, "mg/dL", "-4h"]], "body-weight": [[80, "kg", "-1d"]]},
             "procedures": [{"set": "cardiac-surgery", "planned": True}]}  # fmt: skip
    lead = hook(client, k, preop)[0]
    assert lead["extension"]["magnesium-aki"]["rules"] == ["cardiac-surgery-preop-ionized-low"]
    assert lead["detail"].startswith("**Ionized Mg 0.42 mmol/L (1.02 mg/dL), ")


# --- 2. the gate as evidence.md says ----------------------------------------------------------


def test_no_egfr_sent_the_gate_computes_it(client: FlaskClient, k: Knowledge) -> None:
    spec = icu(1.5, patient={"age": 85, "sex": "female"},
               labs={"creatinine": [[3.0, "mg/dL", "-8h"]], "body-weight": [[62, "kg", "-1d"]]})  # fmt: skip
    cards = hook(client, k, spec)
    assert orders(cards) == []
    lead = cards[0]
    assert lead["extension"]["magnesium-aki"]["withheld"] == ["egfr-low"]
    assert "eGFR 15 mL/min/1.73 m² computed (CKD-EPI 2021) from creatinine 3.0 mg/dL" in lead["detail"]
    zh = hook(client, k, spec, "zh-CN")[0]
    assert "eGFR 15 mL/min/1.73 m²，由血肌酐 265 µmol/L 按 CKD-EPI 2021 公式计算" in zh["detail"]


def test_coded_ckd_5_withholds(client: FlaskClient, k: Knowledge) -> None:
    cards = hook(client, k, icu(1.5, conditions=["ckd-stage-4-5"]))
    assert orders(cards) == []
    assert "ckd-advanced" in cards[0]["extension"]["magnesium-aki"]["withheld"]
    assert "advanced chronic kidney disease coded (" in cards[0]["detail"]


def test_the_gate_positive_control_gives_a_bounded_order_stated_once(client: FlaskClient, k: Knowledge) -> None:
    cards = hook(client, k, icu(1.5))
    (order,) = orders(cards)
    dosage = order["dosageInstruction"][0]
    assert dosage["timing"]["repeat"]["boundsDuration"] == {"value": 3, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 5.9
    text = read(cards)
    assert "magnesium 48 mEq (5.9 g magnesium sulfate) IV in 250 mL 0.9 % sodium chloride over 24 h, daily for 3 days" in text
    assert "Magnesium sulfate 5.9 g IV over 24 h, daily for 3 days" in text


# --- 3. withheld cards --------------------------------------------------------------------------


def test_withheld_leads_with_the_withholding_and_no_card_advises_repletion(
    client: FlaskClient, k: Knowledge
) -> None:
    spec = icu(1.5, conditions=["esrd"], medications=[{"set": "proton-pump-inhibitor"}])
    for locale, word, regimen in (("en", "withheld", "Trial regimen: magnesium 48 mEq"),
                                  ("zh-CN", "暂缓", "试验方案：每日静脉补镁 48 mEq")):  # fmt: skip
        cards = hook(client, k, spec, locale)
        lead = cards[0]
        assert word in lead["summary"]
        assert lead["extension"]["magnesium-aki"]["withheld"] == ["dialysis"]
        what = [ln for ln in lead["detail"].split("\n") if ln.startswith(("**What to do:**", "**处理建议：**"))]
        assert all("5.9 g" not in ln for ln in what)  # the dose is not advised...
        assert regimen in lead["detail"]  # ...it stays under Evidence
        assert orders(cards) == []
        text = read(cards)
        assert "replete per local protocol" not in text and "按本院方案补镁" not in text
    assert "drug-induced-hypomagnesemia" in rules(hook(client, k, spec))


# --- 5. one coherent answer ---------------------------------------------------------------------


def test_toxic_mg_is_never_beside_a_low_card(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 77, "sex": "female"}, "encounter": {"class": "emergency", "start": "-20h"},
            "labs": {"serum-magnesium-mass": [[1.2, "mg/dL", "-19h"], [8.6, "mg/dL", "-1h"]],
                     "creatinine": [[2.0, "mg/dL", "-1h"]]},
            "medications": [{"set": "magnesium-sulfate", "as": "given", "at": "-6h"}]}  # fmt: skip
    cards = hook(client, k, spec)
    assert "hypermagnesemia-toxic" in rules(cards)
    assert "admission-u-shape" not in rules(cards)
    assert "hypomagnesaemia" not in read(cards)


def test_an_old_admission_value_is_not_shown_a_month_later(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 70, "sex": "male"}, "encounter": {"class": "inpatient", "start": "-33d"},
            "labs": {"serum-magnesium-mass": [[1.2, "mg/dL", "-33d"], [1.9, "mg/dL", "-2h"]],
                     "creatinine": [[1.0, "mg/dL", "-2h"]]}}  # fmt: skip
    assert "admission-u-shape" not in rules(hook(client, k, spec))
    fresh = {**spec, "encounter": {"class": "inpatient", "start": "-3d"},
             "labs": {"serum-magnesium-mass": [[1.2, "mg/dL", "-3d"], [1.9, "mg/dL", "-2h"]],
                      "creatinine": [[1.0, "mg/dL", "-2h"]]}}  # fmt: skip
    assert "admission-u-shape" in rules(hook(client, k, fresh))


def test_reference_range_only_without_a_specific_card(client: FlaskClient, k: Knowledge) -> None:
    alone = {"patient": {"age": 45, "sex": "female"},
             "labs": {"serum-magnesium-mass": [[1.6, "mg/dL", "-3h"]], "creatinine": [[0.8, "mg/dL", "-3h"]],
                      "body-weight": [[60, "kg", "-2d"]]}}  # fmt: skip
    assert rules(hook(client, k, alone)) == ["reference-range"]
    specific = {**alone, "medications": [{"set": "proton-pump-inhibitor"}]}
    assert "reference-range" not in rules(hook(client, k, specific))


def test_mg_2_0_before_pci_is_in_range_not_hypomagnesaemia(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 61, "sex": "male"}, "encounter": {"class": "inpatient", "start": "-30h"},
            "labs": {"serum-magnesium-mass": [[2.0, "mg/dL", "-5h"]], "creatinine": [[1.0, "mg/dL", "-5h"]],
                     "body-weight": [[82, "kg", "-1d"]]},
            "procedures": [{"set": "pci-angiography", "planned": True}]}  # fmt: skip
    (card,) = hook(client, k, spec)
    assert card["detail"].startswith("**Serum Mg 2.0 mg/dL (0.82 mmol/L), ")  # 2.0 as reported
    assert "lower part of the reference range" in card["summary"]
    assert "hypomagnesaemia" not in card["summary"] + card["detail"]
    assert "no repletion is suggested for it" in card["detail"]
    (zh,) = hook(client, k, spec, "zh-CN")
    assert "在参考范围内、偏低" in zh["summary"] and "低镁血症" not in zh["summary"] + zh["detail"]


def test_trend_card_is_led_by_the_latest_value(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 80, "sex": "female"},
            "labs": {"serum-magnesium-mass": [[2.4, "mg/dL", "-60h"], [1.9, "mg/dL", "-30h"], [1.4, "mg/dL", "-2h"]],
                     "creatinine": [[1.0, "mg/dL", "-2h"]]}}  # fmt: skip
    card = next(c for c in hook(client, k, spec) if "mg-trend" in c["extension"]["magnesium-aki"]["rules"])
    assert card["summary"].startswith("Serum Mg falling to 1.4 mg/dL")
    assert card["extension"]["magnesium-aki"]["magnesium"]["value_mg_dl"] == 1.4


def test_aki_card_latest_baseline_criterion_and_peak(client: FlaskClient, k: Knowledge) -> None:
    spec = {"patient": {"age": 73, "sex": "male"}, "encounter": {"class": "inpatient", "start": "-6d"},
            "labs": {"creatinine": [[1.0, "mg/dL", "-5d"], [2.8, "mg/dL", "-2d"], [2.2, "mg/dL", "-2h"]],
                     "serum-magnesium-mass": [[2.0, "mg/dL", "-2h"]]}}  # fmt: skip
    card = next(c for c in hook(client, k, spec) if c["extension"]["magnesium-aki"]["rules"] == ["aki-kdigo"])
    assert card["summary"] == "AKI stage 2 (KDIGO): creatinine 2.2 mg/dL (194 µmol/L)"
    assert "Baseline: 1.0 mg/dL (88 µmol/L), the lowest in the 7 days before (" in card["detail"]
    assert "Criterion met: 2.2 × baseline." in card["detail"]
    assert "Peak of this episode: 2.8 mg/dL (248 µmol/L) (" in card["detail"]
    falling = {**spec, "labs": {"creatinine": [[1.0, "mg/dL", "-4d"], [2.1, "mg/dL", "-20h"], [1.9, "mg/dL", "-2h"]],
                                "serum-magnesium-mass": [[1.75, "mg/dL", "-20h"]]}}  # fmt: skip
    card = next(c for c in hook(client, k, falling) if c["extension"]["magnesium-aki"]["rules"] == ["aki-kdigo"])
    assert card["summary"] == "AKI stage 2 (KDIGO): creatinine 1.9 mg/dL (168 µmol/L)"
    assert re.search(r"Criterion met: creatinine 2\.1 mg/dL \([^)]+\), 2\.1 × baseline\.", card["detail"])


# --- over HL7 v2 ------------------------------------------------------------------------------------


def oru(control_id: str, at: datetime, mg: float, creatinine: float) -> bytes:
    """An 85-year-old woman (born 1939) in the MICU: serum Mg and creatinine, no eGFR."""
    ts = at.strftime("%Y%m%d%H%M%S") + "+0000"
    return "\r".join([
        f"MSH|^~\\&|LIS|GENHOSP|CDS|GENHOSP|{ts}||ORU^R01^ORU_R01|{control_id}|P|2.5.1",
        "PID|1||MRN8585^^^GENHOSP^MR||Testpatient^Ada||19390101|F",
        "PV1|1|I|MICU^3^A^GENHOSP||||||||||||||||V8585|||||||||||||||||||||||||20240508080000+0000",
        f"OBR|1|ORD-{control_id}^CPOE|FIL-{control_id}^LIS|80048^Basic metabolic panel^C4|||{ts}",
        f"OBX|1|NM|19123-9^Magnesium [Mass/volume] in Serum or Plasma^LN||{mg}|mg/dL|1.7-2.5||||F|||{ts}",
        f"OBX|2|NM|2160-0^Creatinine [Mass/volume] in Serum or Plasma^LN||{creatinine}|mg/dL|0.6-1.2||||F|||{ts}",
    ]).encode() + b"\r"  # fmt: skip


@pytest.fixture
def ing(tmp_path: Path) -> Iterator[Ingestor]:
    url = f"sqlite:///{tmp_path / 'hl7.sqlite'}"
    yield make_ingestor(url)
    dispose_engine(url)


def test_over_hl7_creatinine_only_the_gate_computes_egfr_and_withholds(ing: Ingestor) -> None:
    at = datetime(2024, 5, 10, 8, tzinfo=UTC)
    ing.clock = lambda: at + timedelta(minutes=30)
    out = ing.handle(oru("CR1", at, 1.5, 3.0))
    assert msa(out.ack)[1] == "AA"
    renderer = CardRenderer(ing.deps.knowledge, OrderCodes(ROOT / "mappings" / "orders.yaml"))
    for locale, phrase, value in (
        ("en", "computed (CKD-EPI 2021) from creatinine 3.0 mg/dL",
         "**Serum Mg 1.5 mg/dL (0.62 mmol/L), 2024-05-10 08:00 UTC (lab reference range: 1.7-2.5 mg/dL).**"),
        ("zh-CN", "由血肌酐 265 µmol/L 按 CKD-EPI 2021 公式计算",
         "**血清镁 0.62 mmol/L（1.5 mg/dL），2024-05-10 08:00 UTC（检验科参考范围：1.7-2.5 mg/dL）。**"),
    ):  # fmt: skip
        cards = [c for ev in out.evaluations for c in renderer.cards(ev.advice, ev.snapshot, locale, ev.now)]
        lead = next(c for c in cards if c["extension"]["magnesium-aki"].get("withheld"))
        assert "egfr-low" in lead["extension"]["magnesium-aki"]["withheld"]
        assert phrase in lead["detail"]
        assert lead["detail"].startswith(value)  # the range in the unit the laboratory sent
        assert orders(cards) == []
