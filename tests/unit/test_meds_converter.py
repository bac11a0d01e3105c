"""The MIMIC-IV demo MEDS -> FHIR R4 converter (tests/tools/meds_to_fhir.py) and its fixtures.

Tests that read the MEDS CSVs skip when the data folder is absent (set MIMIC_DEMO_MEDS_DIR);
the committed fixtures in tests/fixtures/fhir/mimic-iv-demo/ are always validated.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.tools import meds_to_fhir as m  # noqa: E402

DATA_DIR = m.DEFAULT_DATA_DIR
MAPPING_CSV = DATA_DIR.parent / "mimic-code-mapping" / "d_labitems_to_loinc.csv"
FIXTURES = REPO / "tests" / "fixtures" / "fhir" / "mimic-iv-demo"
SUBJECT = "10023239"  # ICU, Mg 1.5, AKI N17.9, vancomycin + Mg sulfate administered

needs_data = pytest.mark.skipif(
    not (DATA_DIR / m.LABS_CSV).exists(), reason=f"MIMIC-IV demo MEDS not found in {DATA_DIR}"
)


def _validate_bundle(bundle: dict[str, Any]) -> Counter[str]:
    get_fhir_model_class("Bundle").model_validate(bundle)
    types: Counter[str] = Counter()
    for entry in bundle["entry"]:
        res = entry["resource"]
        get_fhir_model_class(res["resourceType"]).model_validate(res)
        types[res["resourceType"]] += 1
    return types


def _references_resolve(bundle: dict[str, Any]) -> None:
    keys = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                assert ref in keys, f"unresolved reference {ref}"
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(bundle)


def _mg_rows(subject: str) -> list[dict[str, str]]:
    with gzip.open(DATA_DIR / m.LABS_CSV, "rt", newline="") as fh:
        return [
            r
            for r in csv.DictReader(fh)
            if r["subject_id"] == subject and r["code"].startswith("LAB//50960//")
        ]


def _has_coding(res: dict[str, Any], system: str, code: str) -> bool:
    return any(
        c.get("system") == system and c.get("code") == code
        for c in res.get("code", {}).get("coding", [])
    )


# ------------------------------------------------------------------ code helpers


@pytest.mark.parametrize(
    ("raw", "dotted"),
    [
        ("5715", "571.5"),
        ("5849", "584.9"),
        ("496", "496"),
        ("25000", "250.00"),
        ("E9352", "E935.2"),
        ("E8859", "E885.9"),
        ("V1582", "V15.82"),
        ("V08", "V08"),
    ],
)
def test_icd9_diagnosis_dots(raw: str, dotted: str) -> None:
    assert m.dot_icd9_dx(raw) == dotted
    assert m.icd_diagnosis_coding("9", raw) == {"system": m.ICD9CM, "code": dotted}


@pytest.mark.parametrize(
    ("raw", "dotted"), [("N179", "N17.9"), ("K7031", "K70.31"), ("I10", "I10"), ("E871", "E87.1")]
)
def test_icd10_cm_dots(raw: str, dotted: str) -> None:
    assert m.icd_diagnosis_coding("10", raw) == {"system": m.ICD10CM, "code": dotted}


def test_icd_procedure_codes() -> None:
    assert m.icd_procedure_coding("9", "3961") == {"system": m.ICD9CM, "code": "39.61"}
    assert m.icd_procedure_coding("9", "0066") == {"system": m.ICD9CM, "code": "00.66"}
    assert m.icd_procedure_coding("9", "403") == {"system": m.ICD9CM, "code": "40.3"}
    assert m.icd_procedure_coding("10", "02100Z9") == {"system": m.ICD10PCS, "code": "02100Z9"}


def test_hcpcs_rows() -> None:
    assert m.hcpcs_code("33533") == {"coding": [{"system": m.CPT, "code": "33533"}]}
    assert m.hcpcs_code("C9600") == {"coding": [{"system": m.HCPCS, "code": "C9600"}]}
    # the demo MEDS keeps only the HCPCS short description: text only, no invented code
    assert m.hcpcs_code("Perc drug-el cor stent sing") == {"text": "Perc drug-el cor stent sing"}


def test_admin_status() -> None:
    assert m.admin_status("Administered") == "completed"
    assert m.admin_status("Delayed Administered") == "completed"
    assert m.admin_status("Not Given") == "not-done"
    assert m.admin_status("Hold Dose") == "not-done"
    assert m.admin_status("Stopped - Unscheduled") == "stopped"
    assert m.admin_status("UNK") == "unknown"


@pytest.mark.skipif(not MAPPING_CSV.exists(), reason="mimic-code mapping not found")
def test_loinc_codes_match_mimic_code_mapping() -> None:
    with MAPPING_CSV.open(newline="", encoding="utf-8") as fh:
        mapping = {
            r["itemid (omop_source_code)"]: r["omop_concept_code"] for r in csv.DictReader(fh)
        }
    for itemid, (loinc, *_rest) in m.LAB_ITEMS.items():
        assert mapping[itemid] == loinc


# ------------------------------------------------------------------ conversion


@needs_data
def test_convert_one_patient_is_valid_fhir_r4() -> None:
    bundle = m.convert([SUBJECT], DATA_DIR)[SUBJECT]
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "collection"
    types = _validate_bundle(bundle)
    assert set(types) == {
        "Patient",
        "Location",
        "Encounter",
        "Condition",
        "Procedure",
        "Observation",
        "MedicationRequest",
        "MedicationAdministration",
    }
    _references_resolve(bundle)
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    assert all(u.startswith("urn:uuid:") for u in urls)
    # deterministic
    assert m.convert([SUBJECT], DATA_DIR)[SUBJECT] == bundle


@needs_data
def test_mg_count_and_values_match_csv() -> None:
    rows = _mg_rows(SUBJECT)
    bundle = m.convert([SUBJECT], DATA_DIR)[SUBJECT]
    mg = [
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and _has_coding(e["resource"], m.LOINC, "19123-9")
    ]
    assert len(rows) > 0
    assert len(mg) == len(rows)
    for obs in mg:
        assert _has_coding(obs, m.MIMIC_LABITEMS, "50960")
        assert obs["status"] == "final"
        assert obs["effectiveDateTime"].endswith("+00:00")
        q = obs["valueQuantity"]
        assert (q["unit"], q["system"], q["code"]) == ("mg/dL", m.UCUM, "mg/dL")
    assert sorted(o["valueQuantity"]["value"] for o in mg) == sorted(
        float(r["value"]) for r in rows
    )
    # ICU chart Mg (220635) is not converted
    assert not any(
        e["resource"]["resourceType"] == "Observation"
        and _has_coding(e["resource"], m.MIMIC_LABITEMS, "220635")
        for e in bundle["entry"]
    )


@needs_data
def test_patient_encounters_conditions() -> None:
    bundle = m.convert([SUBJECT], DATA_DIR)[SUBJECT]
    res = [e["resource"] for e in bundle["entry"]]
    patient = res[0]
    assert patient == {
        "resourceType": "Patient",
        "id": f"mimic-{SUBJECT}",
        "identifier": [{"system": m.PATIENT_ID_SYSTEM, "value": SUBJECT}],
        "gender": "female",
        "birthDate": "2108-01-01",
    }
    encs = {r["id"]: r for r in res if r["resourceType"] == "Encounter"}
    adm = encs[f"mimic-enc-{SUBJECT}-2"]
    assert adm["class"]["code"] == "EMER"  # "EW EMER."
    assert adm["status"] == "finished"
    assert adm["period"] == {
        "start": "2140-10-03T09:06:00+00:00",
        "end": "2140-10-08T15:28:00+00:00",
    }
    (loc,) = adm["location"]
    assert loc["period"]["start"] == "2140-10-03T09:07:56+00:00"
    location = next(r for r in res if r["resourceType"] == "Location")
    assert loc["location"]["reference"] == f"Location/{location['id']}"
    assert location["type"][0]["coding"][0] == {
        "system": m.ROLE_CODE,
        "code": "ICU",
        "display": "Intensive care unit",
    }
    assert encs[f"mimic-enc-{SUBJECT}-3"]["class"]["code"] == "IMP"  # "EU OBSERVATION"
    aki = [
        r for r in res if r["resourceType"] == "Condition" and _has_coding(r, m.ICD10CM, "N17.9")
    ]
    assert [a["encounter"]["reference"] for a in aki] == [
        f"Encounter/mimic-enc-{SUBJECT}-2",
        f"Encounter/mimic-enc-{SUBJECT}-3",
    ]
    assert aki[0]["recordedDate"] == "2140-10-08T15:28:00+00:00"
    admins = [r for r in res if r["resourceType"] == "MedicationAdministration"]
    names = {a["medicationCodeableConcept"]["text"] for a in admins}
    assert any("Magnesium" in n for n in names)
    assert any("Vancomycin" in n for n in names)
    assert all(any(k in n.lower() for k in m.ADMIN_KEYWORDS) for n in names)


@needs_data
def test_max_admissions_keeps_the_mg_richest() -> None:
    full = m.convert(["10002428"], DATA_DIR)["10002428"]
    cut = m.convert(["10002428"], DATA_DIR, max_admissions=1)["10002428"]
    _validate_bundle(cut)
    _references_resolve(cut)
    enc_ids = {
        e["resource"]["id"]
        for e in cut["entry"]
        if e["resource"]["resourceType"] == "Encounter"
        and e["resource"]["id"].startswith("mimic-enc")
    }
    assert enc_ids == {"mimic-enc-10002428-2"}  # 27 serum Mg results
    assert len(json.dumps(cut)) < len(json.dumps(full))


# ------------------------------------------------------------------ committed fixtures


FIXTURE_FILES = sorted(FIXTURES.glob("*.json"))


def test_fixture_set_present() -> None:
    assert len(FIXTURE_FILES) >= 5
    assert (FIXTURES / "README.md").exists()


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_is_valid_fhir_r4(path: Path) -> None:
    assert path.stat().st_size < 420_000
    bundle = json.loads(path.read_text(encoding="utf-8"))
    types = _validate_bundle(bundle)
    assert types["Patient"] == 1
    assert types["Observation"] > 0
    _references_resolve(bundle)


@needs_data
@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: p.stem)
def test_fixture_is_up_to_date(path: Path) -> None:
    """The committed fixture equals a fresh conversion (README: --max-admissions 3)."""
    bundle = m.convert([path.stem], DATA_DIR, max_admissions=3)[path.stem]
    assert json.loads(path.read_text(encoding="utf-8")) == bundle
