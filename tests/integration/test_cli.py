"""`cds-service evaluate` end to end: real fixtures in, the CLI JSON contract out.

The expectations below were written from the fixture data (tests/fixtures/fhir/, the
MIMIC-IV demo README) and clinical/evidence.md, each with the reasoning beside it,
before the output was looked at. A few cases run the installed console script in a
subprocess; the rest call ``cds_service.cli.main`` in-process (fast).
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cds_service.cli import main

ROOT = Path(__file__).parents[2]
FHIR = ROOT / "tests" / "fixtures" / "fhir"
MIMIC = FHIR / "mimic-iv-demo"
SITE = ROOT / "mappings" / "site" / "example.yaml"
SCRIPT = Path(sys.executable).parent / "cds-service"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``cds-service [--site example] evaluate ...`` in-process: (exit code, stdout, stderr)."""
    code = main(["--site", str(SITE), "evaluate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def evaluate(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """The JSON document of a successful evaluate."""
    code, out, err = run(capsys, *args)
    assert code == 0, err
    doc: dict[str, Any] = json.loads(out)
    return doc


def only_patient(doc: dict[str, Any]) -> dict[str, Any]:
    assert len(doc["patients"]) == 1
    patient: dict[str, Any] = doc["patients"][0]
    return patient


def cards(patient: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Advice by direction (one card per direction, evidence.md §6)."""
    directions = [a["direction"] for a in patient["advice"]]
    assert len(directions) == len(set(directions)), f"duplicate direction: {directions}"
    return {a["direction"]: a for a in patient["advice"]}


def all_rules(patient: dict[str, Any]) -> set[str]:
    return {r for a in patient["advice"] for r in a["rules"]}


def check_contract(doc: dict[str, Any]) -> None:
    """Shape of the design.md JSON output, and every summary under 140 characters."""
    assert set(doc) == {"patients"}
    for p in doc["patients"]:
        assert {"patient", "advice", "excluded"} <= set(p)
        for a in p["advice"]:
            assert {
                "rules", "direction", "indicator", "summary", "detail", "suggestions", "withheld",
            } <= set(a)  # fmt: skip
            assert a["indicator"] in ("info", "warning", "critical")
            assert 0 < len(a["summary"]) < 140, a["summary"]
            assert a["rules"] and a["detail"]
            assert sum(
                s["resource"]["resourceType"] == "MedicationRequest" for s in a["suggestions"]
            ) <= 1
            for s in a["suggestions"]:
                assert s["label"] and isinstance(s["isRecommended"], bool)
                assert s["resource"]["resourceType"] in ("MedicationRequest", "ServiceRequest")
            for w in a["withheld"]:
                assert w["rule"] and w["conditions"]
        for e in p["excluded"]:
            assert set(e) == {"resource", "reason"} and e["reason"]
    meds = [
        s
        for p in doc["patients"]
        for a in p["advice"]
        for s in a["suggestions"]
        if s["resource"]["resourceType"] == "MedicationRequest"
    ]
    assert len(meds) <= len(doc["patients"])  # at most one magnesium order per response


def with_weight(src: Path, kg: float, when: str, tmp_path: Path) -> Path:
    """A copy of a fixture bundle with a body weight (LOINC 29463-7) recorded at ``when``.

    The MIMIC-IV demo carries no weights, and the safety gate withholds magnesium doses
    when no weight of the last 30 days is known; the positive cases add one.
    """
    bundle = json.loads(src.read_text(encoding="utf-8"))
    patient = next(e["resource"]["id"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    bundle["entry"].append({"fullUrl": "urn:uuid:weight-added-by-test", "resource": {
        "resourceType": "Observation", "id": "weight-added-by-test", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}]},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": when,
        "valueQuantity": {"value": kg, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
    }})  # fmt: skip
    out = tmp_path / src.name
    out.write_text(json.dumps(bundle), encoding="utf-8")
    return out


# --- the five MIMIC-IV demo patients ---------------------------------------------------


def test_10002428_micu_admission_mg_1_4(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Emergency admission 2156-04-12 14:16, MICU from 16:24, first Mg 1.4 mg/dL at 19:24.

    Age 81, creatinine 0.8 at 19:24 (renal function known, no AKI), no active magnesium
    (the MgSO4 order starts at 23:00), conditions are only recorded at discharge (04-29).
    - admission Mg (earliest in [adm - 12 h, adm + 24 h]) 1.4 < 1.5: admission-u-shape
    - ICU-admission Mg 1.4 < 1.6: icu-admission-low
    - adult ICU, latest 1.4 in (1.1, 1.7): icu-hypomagnesemia-repletion, no gate condition,
      so its MgSO4 48 mEq/day (5.9 g) over 24 h for 3 days suggestion is offered.
    One low card; all three rules are warnings with a population, so the lead is the
    first in table order: admission-u-shape. reference-range does not fire (§4: only when
    no other association rule fires); not severe (1.4 > 1.1); one Mg only: no trend.
    """
    doc = evaluate(capsys, str(with_weight(MIMIC / "10002428.json", 70, "2156-04-12T18:00:00Z", tmp_path)), "--now", "2156-04-12T20:00:00Z")
    check_contract(doc)
    p = only_patient(doc)
    assert p["patient"] == "mimic-10002428"
    by = cards(p)
    assert set(by) == {"low"}
    low = by["low"]
    assert low["rules"] == ["admission-u-shape", "icu-admission-low", "icu-hypomagnesemia-repletion"]
    assert low["lead"] == "admission-u-shape"
    assert low["indicator"] == "warning"
    assert low["magnesium"] == {
        "value_mg_dl": 1.4, "effective": "2156-04-12T19:24:00+00:00", "loinc": "19123-9",
    }  # fmt: skip
    assert low["withheld"] == []
    assert low["summary"] == "Admission Mg 1.4 mg/dL (< 1.5 mg/dL): associated with higher AKI risk"
    (med,) = low["suggestions"]
    assert med["rule"] == "icu-hypomagnesemia-repletion" and med["isRecommended"] is True
    res = med["resource"]
    assert res["resourceType"] == "MedicationRequest" and res["status"] == "draft"
    assert res["subject"] == {"reference": "Patient/mimic-10002428"}
    dose = res["dosageInstruction"][0]
    assert dose["doseAndRate"][0]["doseQuantity"]["value"] == 5.9
    assert dose["doseAndRate"][0]["doseQuantity"]["code"] == "g"
    assert dose["route"]["text"] == "IV"
    assert dose["timing"]["repeat"]["boundsDuration"]["value"] == 3
    # 5.9 g over 24 h is about 4.1 mg/min, far under the label's 150 mg/min
    assert dose["doseAndRate"][0]["rateQuantity"]["value"] == pytest.approx(4.1, abs=0.05)
    assert "48 mEq" in low["detail"] and "250 mL" in low["detail"]
    assert "associated" in low["detail"]  # association, never "causes"
    assert "causes" not in low["detail"]
    assert "reference-range" not in all_rules(p)


def test_10002428_extreme_mg_8_6(capsys: pytest.CaptureFixture[str]) -> None:
    """At 02:00 on 04-13 the latest Mg is 8.6 mg/dL (01:41): >= 4.8, hypermagnesemia-toxic
    (critical, high). The admission and ICU-admission measures still pick the earliest
    value (1.4), but a newer serum Mg lies above the reference range: the low rules are
    silent (evidence.md §2), and no card of the answer says "treat the cause of
    hypomagnesaemia" beside "stop all magnesium" (§6). Two Mg in 72 h: no trend."""
    doc = evaluate(capsys, str(MIMIC / "10002428.json"), "--now", "2156-04-13T02:00:00Z")
    check_contract(doc)
    by = cards(only_patient(doc))
    assert set(by) == {"high"}
    high = by["high"]
    assert high["rules"] == ["hypermagnesemia-toxic"]
    assert high["indicator"] == "critical"
    assert high["magnesium"]["value_mg_dl"] == 8.6
    assert high["suggestions"] == []
    assert re.search(r"reflex", high["summary"] + high["detail"], re.I)
    assert "calcium" in high["detail"].lower()
    assert "hypomagnes" not in high["summary"] + high["detail"]


def test_10004235_aki_stage_3_with_dialysis(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """CCU since 2196-02-24 17:07; hemodialysis (ICD-9 39.95) on 02-26; Mg falls to 1.2 at
    10:25 on 02-26 (creatinine 2.8 then, falling from 8.3 after dialysis).

    - KDIGO stage 3 (dialysis started, §3): aki card, aki_stage 3.
    - adult ICU, latest 1.2 in (1.1, 1.7): icu-hypomagnesemia-repletion, but the gate
      withholds the magnesium order: dialysis and AKI stage >= 2 (creatinine 2.8 < 3.5,
      so not creatinine-high).
    - 10 Mg in 72 h, latest 1.2 < 1.7 and 1.1 below the highest (2.3): mg-trend falling,
      with its recheck ServiceRequest, which is then the only suggestion.
    - admission and ICU-admission Mg are both 2.2 (12:40 on 02-24): no admission rule;
      reference-range does not fire beside the low card (evidence.md §4).
    """
    doc = evaluate(capsys, str(with_weight(MIMIC / "10004235.json", 70, "2196-02-25T08:00:00Z", tmp_path)), "--now", "2196-02-26T11:00:00Z")
    check_contract(doc)
    by = cards(only_patient(doc))
    assert set(by) == {"aki", "low"}
    assert by["aki"]["rules"] == ["aki-kdigo"]
    assert by["aki"]["aki_stage"] == 3
    assert "stage 3" in by["aki"]["summary"]
    low = by["low"]
    assert low["lead"] == "icu-hypomagnesemia-repletion"
    assert set(low["rules"]) == {"icu-hypomagnesemia-repletion", "mg-trend"}
    assert low["magnesium"]["value_mg_dl"] == 1.2
    assert low["aki_stage"] == 3
    # creatinine 2.8 mg/dL at 64 also gives a computed eGFR below 30 (CKD-EPI 2021)
    assert low["withheld"] == [
        {"rule": "icu-hypomagnesemia-repletion", "conditions": ["egfr-low", "aki-stage", "dialysis"]}
    ]
    assert [s["resource"]["resourceType"] for s in low["suggestions"]] == ["ServiceRequest"]
    lab = low["suggestions"][0]["resource"]
    assert lab["code"]["coding"][0] == {
        "system": "http://loinc.org", "code": "19123-9",
        "display": "Magnesium [Mass/volume] in Serum or Plasma",
    }  # fmt: skip
    # the card says what to do instead (reduced dose, Mg every 6-12 h, max 20 g in 48 h)
    assert "6-12 h" in low["detail"] and "20 g" in low["detail"]
    assert "withheld" in low["summary"]


def test_10020944_micu_low_mg_repletion_offered(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """MICU since 2131-02-27 16:40; Mg 1.8 (13:30), 1.6 (18:00), 1.3 (23:49); creatinine
    1.6 -> 1.2 (falling, no AKI); age 72; the MgSO4 order is not active and the
    cirrhosis/sepsis codes are recorded only at discharge (03-13).
    - latest 1.3 in (1.1, 1.7): icu-hypomagnesemia-repletion, nothing in the gate: the
      5.9 g MgSO4 MedicationRequest is offered and recommended;
    - 1.8 -> 1.3 within 72 h (3 values, drop 0.5 >= 0.4): mg-trend falling, recheck;
    - ICU-admission Mg is the earliest, 1.8: no icu-admission-low; no admission rule;
      reference-range does not fire beside the low card."""
    doc = evaluate(capsys, str(with_weight(MIMIC / "10020944.json", 70, "2131-02-27T08:00:00Z", tmp_path)), "--now", "2131-02-28T00:00:00Z")
    check_contract(doc)
    by = cards(only_patient(doc))
    assert set(by) == {"low"}
    low = by["low"]
    assert low["lead"] == "icu-hypomagnesemia-repletion"
    assert set(low["rules"]) == {"icu-hypomagnesemia-repletion", "mg-trend"}
    assert low["withheld"] == []
    kinds = {s["resource"]["resourceType"]: s for s in low["suggestions"]}
    assert set(kinds) == {"MedicationRequest", "ServiceRequest"}
    assert kinds["MedicationRequest"]["isRecommended"] is True
    assert kinds["ServiceRequest"]["isRecommended"] is False
    assert "1.8 mg/dL" in low["detail"] and "1.3 mg/dL" in low["detail"]  # the trend values
    assert "icu-admission-low" not in all_rules(only_patient(doc))


def test_10020944_cirrhosis_default_now(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --now, now is the newest time in the file: the discharge 2131-03-13 17:01,
    when the ICD-9 codes are recorded (alcoholic cirrhosis 571.2, AKI 584.9).
    - cirrhosis-high needs latest serum Mg >= 2.4: the latest is 1.8 (05:27): no.
    - creatinine 1.5 (03-07) -> 2.3 (03-10): ratio 1.53 to the 7-day lowest, KDIGO stage 1
      in the episode; the aki card leads with the latest creatinine (1.7, evidence.md §3)
      and gives the baseline and the episode's peak (2.3).
    - latest Mg 1.8 is normal and no association rule fires: no other card."""
    doc = evaluate(capsys, str(MIMIC / "10020944.json"))
    check_contract(doc)
    p = only_patient(doc)
    assert p["now"] == "2131-03-13T17:01:00+00:00"
    assert "cirrhosis-high" not in all_rules(p)
    by = cards(p)
    assert set(by) == {"aki"}
    assert by["aki"]["aki_stage"] == 1
    assert by["aki"]["summary"].startswith("AKI stage 1 (KDIGO): creatinine 1.7 mg/dL")
    assert "Peak of this episode: 2.3 mg/dL" in by["aki"]["detail"]


def test_10005348_after_cabg_postop_high(capsys: pytest.CaptureFixture[str]) -> None:
    """CABG (36.11) and valve replacement (35.21) on 2130-10-27 (date only: end = 00:00);
    first post-operative Mg 2.5 mg/dL at 20:14; age 78; creatinine 0.8-1.0 (no AKI).
    - post-operative Mg (earliest in [end, end + 24 h]) 2.5 >= 2.3:
      cardiac-surgery-postop-high, in the 2.3 to <2.7 band (OR 1.30, 1.12-1.52).
    - no Mg in the 7 days before surgery: no pre-operative rule; none before the
      angiography of 10-26 either: no contrast-u-shape. Not toxic (2.5 < 4.8)."""
    doc = evaluate(capsys, str(MIMIC / "10005348.json"), "--now", "2130-10-27T21:00:00Z")
    check_contract(doc)
    by = cards(only_patient(doc))
    assert "high" in by
    high = by["high"]
    assert high["lead"] == "cardiac-surgery-postop-high"
    assert high["indicator"] == "warning"
    assert high["magnesium"]["value_mg_dl"] == 2.5
    assert "2.3 to <2.7" in high["summary"] + high["detail"]
    assert "1.30" in high["detail"] and "1.12-1.52" in high["detail"]
    assert "Xiong" in high["detail"] and "6,124" in high["detail"]
    assert "doi.org/10.1080/0886022X.2023.2170244" in high["detail"]
    assert high["suggestions"] == [] and high["withheld"] == []
    rules = all_rules(only_patient(doc))
    assert not rules & {
        "contrast-u-shape", "cardiac-surgery-preop-low", "hypermagnesemia-toxic", "aki-kdigo",
    }  # fmt: skip


def test_10005348_icu_admission_high_from_cvicu_start(capsys: pytest.CaptureFixture[str]) -> None:
    """CVICU from 10-27 12:06: ICU-admission Mg (earliest in [start - 6 h, start + 24 h]) is
    2.5 > 2.4: icu-admission-high (info) joins the high card."""
    doc = evaluate(capsys, str(MIMIC / "10005348.json"), "--now", "2130-10-27T21:00:00Z")
    high = cards(only_patient(doc))["high"]
    assert "icu-admission-high" in high["rules"]


def test_10023239_magnesium_already_given(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """MICU/SICU since 2140-10-03; Mg 1.5 at 03:10 on 10-05; MgSO4 replacement given (eMAR)
    at 04:37. At 05:00: repletion rule fires but the gate withholds it (magnesium already
    given); the trend (2.5 -> 1.5 in 72 h) asks for a recheck."""
    doc = evaluate(capsys, str(with_weight(MIMIC / "10023239.json", 70, "2140-10-04T08:00:00Z", tmp_path)), "--now", "2140-10-05T05:00:00Z")
    check_contract(doc)
    by = cards(only_patient(doc))
    assert set(by) == {"low"}
    low = by["low"]
    assert low["withheld"] == [{"rule": "icu-hypomagnesemia-repletion", "conditions": ["mg-active"]}]
    assert [s["resource"]["resourceType"] for s in low["suggestions"]] == ["ServiceRequest"]
    assert low["magnesium"]["value_mg_dl"] == 1.5


def test_10023239_coded_aki_without_onset(capsys: pytest.CaptureFixture[str]) -> None:
    """N17.9 is recorded at discharge (2140-10-08 15:28) with no onset; creatinine falls
    1.1 -> 0.6 and never meets KDIGO, so there is no AKI onset to anchor "Mg at AKI
    diagnosis": aki-recovery-low must not fire on the 1.5 mg/dL of 10-08 06:50."""
    doc = evaluate(capsys, str(MIMIC / "10023239.json"), "--now", "2140-10-08T16:00:00Z")
    assert "aki-recovery-low" not in all_rules(only_patient(doc))


# --- other inputs -------------------------------------------------------------------------


def test_hl7_be_serum_mmol_and_rbc_excluded(capsys: pytest.CaptureFixture[str]) -> None:
    """Serum Mg 2601-3 0.89 mmol/L = 2.163 mg/dL (normal: no advice); erythrocyte Mg 2593-2
    is not serum and is listed in "excluded" with the reason."""
    doc = evaluate(capsys, str(FHIR / "hl7-be-macsys-mg-rbc.json"))
    check_contract(doc)
    p = only_patient(doc)
    assert p["advice"] == []
    (ex,) = p["excluded"]
    assert "serum" in ex["reason"] and "whole-blood" in ex["reason"]


def test_hl7_be_mmol_shown_in_mg_dl(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """The same bundle plus a PCI the next day: the pre-procedure Mg 0.89 mmol/L is < 0.91
    mmol/L (the canonical unit of contrast-u-shape, compared unrounded): the card shows
    0.89 mmol/L and 2.16 mg/dL, and the extension value in mg/dL."""
    bundle = json.loads((FHIR / "hl7-be-macsys-mg-rbc.json").read_text(encoding="utf-8"))
    mg = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and any(c.get("code") == "2601-3" for c in e["resource"]["code"].get("coding", []))
    )
    proc = {
        "resourceType": "Procedure",
        "id": "pci-1",
        "status": "completed",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "415070008"}]},
        "subject": copy.deepcopy(mg["subject"]),
        "performedDateTime": "2021-12-18T09:00:00+01:00",
    }
    bundle["entry"].append({"fullUrl": "urn:uuid:6f1f7a0e-0000-4000-8000-000000000001", "resource": proc})
    path = tmp_path / "with-pci.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    doc = evaluate(capsys, str(path), "--now", "2021-12-18T12:00:00+01:00")
    check_contract(doc)
    p = only_patient(doc)
    (card,) = [a for a in p["advice"] if "contrast-u-shape" in a["rules"]]
    assert card["magnesium"]["value_mg_dl"] == pytest.approx(2.163, abs=0.001)
    assert card["magnesium"]["loinc"] == "2601-3"
    assert "0.89 mmol/L" in card["detail"] and "2.16 mg/dL" in card["detail"]
    assert p["excluded"] and all(e["reason"] for e in p["excluded"])


def test_hl7_be_ucum_code_only_unit(capsys: pytest.CaptureFixture[str]) -> None:
    """Mg 19123-9 = 1.0 with only the UCUM code mmol/L is a unit (2.43 mg/dL, normal, no
    data-quality card); the creatinine with status registered is excluded with its reason."""
    doc = evaluate(capsys, str(FHIR / "hl7-be-mips-mg-code-only-unit.json"))
    check_contract(doc)
    p = only_patient(doc)
    assert p["advice"] == []
    assert [e["reason"] for e in p["excluded"]] == ["status is registered, not final"]


def test_locale_zh_cn(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    doc = evaluate(
        capsys, str(with_weight(MIMIC / "10002428.json", 70, "2156-04-12T18:00:00Z", tmp_path)), "--now", "2156-04-12T20:00:00Z", "--locale", "zh-CN"
    )
    check_contract(doc)
    (low,) = only_patient(doc)["advice"]
    han = re.compile(r"[\u4e00-\u9fff]")
    assert han.search(low["summary"]) and han.search(low["detail"])
    assert han.search(low["suggestions"][0]["label"])
    # mmol/L first in Chinese cards, mg/dL in brackets
    assert "0.58 mmol/L" in low["summary"] and "0.58 mmol/L（1.4 mg/dL）" in low["detail"]


def test_format_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, str(MIMIC / "10004235.json"), "--now", "2196-02-26T11:00:00Z", "--format", "text"
    )
    assert code == 0
    assert out.startswith("Patient mimic-10004235 (now 2196-02-26T11:00:00+00:00)")
    assert "[critical] AKI stage 3" in out
    assert "withheld (icu-hypomagnesemia-repletion): egfr-low, aki-stage, dialysis" in out
    assert "suggestion: " in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)


def test_cds_hooks_request_order_select(capsys: pytest.CaptureFixture[str]) -> None:
    """A CDS Hooks order-select request as input: a magnesium draft order while a gate
    condition holds gives mg-order-unsafe; the other patient's Mg in prefetch is excluded."""
    doc = evaluate(capsys, str(FHIR / "cds-order-select.json"))
    check_contract(doc)
    p = only_patient(doc)
    assert p["patient"] == "p9"
    by = cards(p)
    assert by["safety"]["rules"] == ["mg-order-unsafe"]
    assert by["safety"]["indicator"] in ("warning", "critical")
    assert {"resource": "Observation/mg-other", "reason": "belongs to another patient"} in p[
        "excluded"
    ]


def test_now_defaults_to_newest_time_in_input(capsys: pytest.CaptureFixture[str]) -> None:
    """10002428's newest time is its last discharge (2156-05-22 14:16), never the clock."""
    doc = evaluate(capsys, str(MIMIC / "10002428.json"))
    assert only_patient(doc)["now"] == "2156-05-22T14:16:00+00:00"
    doc = evaluate(capsys, str(FHIR / "hl7-be-macsys-mg-rbc.json"))
    assert only_patient(doc)["now"] == "2021-12-17T00:00:00+01:00"


def test_two_patients_each_alone(capsys: pytest.CaptureFixture[str]) -> None:
    doc = evaluate(capsys, str(FHIR / "two-patients-transaction.json"))
    check_contract(doc)
    ids = [p["patient"] for p in doc["patients"]]
    assert len(ids) == 2 and len(set(ids)) == 2


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read"),
        ("not json {", "is not JSON"),
        ('{"resourceType": "Patient", "id": "x"}', "neither a FHIR Bundle nor a CDS Hooks request"),
        ("[1, 2]", "expected a JSON object"),
    ],
    ids=["missing-file", "not-json", "neither-bundle-nor-hook", "json-array"],
)
def test_unreadable_input_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / "input.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    code, out, err = run(capsys, str(path))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and message in err and err.startswith("error: ")


def test_bad_now_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(MIMIC / "10002428.json"), "--now", "yesterday")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--now" in err


def test_nothing_applies_exit_0_empty_advice(capsys: pytest.CaptureFixture[str]) -> None:
    """10002428 at the end of its last stay: Mg 2.0, creatinine 0.3-0.4: nothing applies."""
    doc = evaluate(capsys, str(MIMIC / "10002428.json"), "--now", "2156-05-22T12:00:00Z")
    assert only_patient(doc)["advice"] == []


# --- the real console script ----------------------------------------------------------


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "--site", str(SITE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_script_evaluate_json() -> None:
    proc = script("evaluate", str(MIMIC / "10005348.json"), "--now", "2130-10-27T21:00:00Z")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    check_contract(doc)
    assert cards(only_patient(doc))["high"]["lead"] == "cardiac-surgery-postop-high"


def test_script_cds_hooks_result_review() -> None:
    """result-review request: 2601-3 0.6 mmol/L = 1.46 mg/dL, below the reference range."""
    proc = script("evaluate", str(FHIR / "cds-result-review.json"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    check_contract(doc)
    p = only_patient(doc)
    assert p["patient"] == "p9"
    assert all(len(a["summary"]) < 140 for a in p["advice"])


def test_script_missing_file_exit_2(tmp_path: Path) -> None:
    proc = script("evaluate", str(tmp_path / "nope.json"))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1


def test_no_recorded_weight_withholds_the_dose(capsys: pytest.CaptureFixture[str]) -> None:
    """The raw MIMIC-IV demo bundle has no body weight: the repletion rule still fires, but
    the gate withholds its magnesium order ("weight-unknown") and the card says why."""
    doc = evaluate(capsys, str(MIMIC / "10002428.json"), "--now", "2156-04-12T20:00:00Z")
    low = cards(only_patient(doc))["low"]
    assert "icu-hypomagnesemia-repletion" in low["rules"]
    assert low["withheld"] == [{"rule": "icu-hypomagnesemia-repletion", "conditions": ["weight-unknown"]}]
    assert [s["resource"]["resourceType"] for s in low["suggestions"]] == []
    assert "no body weight in the last 30 days" in low["detail"]
