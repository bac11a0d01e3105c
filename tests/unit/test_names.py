"""Names as data: ICU unit names (icu-units.yaml + site) and "not serum" words (specimens.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cds_service.clinical.names import NameList
from cds_service.rules.loader import MappingError, load_knowledge
from cds_service.rules.model import Knowledge

ROOT = Path(__file__).parents[2]
MAPPINGS = ROOT / "mappings"


@pytest.fixture(scope="module")
def bare() -> Knowledge:
    """The shipped mappings with no site file (``make run`` defaults)."""
    return load_knowledge(MAPPINGS)


@pytest.mark.parametrize(
    ("unit", "icu"),
    [
        ("ICU 3 North", True),
        ("MICU-2", True),
        ("MICU2", True),
        ("micu", True),
        ("PICU", True),  # paediatric ICU is an ICU (children's rules decide by age)
        ("NICU", True),  # neonatal ICU: an ICU; adult rules exclude neonates by age
        ("Medical Intensive Care Unit (MICU)", True),
        ("Trauma SICU (TSICU)", True),
        ("Cardiac Vascular Intensive Care Unit (CVICU)", True),
        ("Coronary Care Unit (CCU)", True),
        ("Intensive care", True),
        ("综合ICU", True),
        ("重症监护室", True),
        ("重症医学科3病区", True),
        ("PACU", False),  # post-anaesthesia care: "ICU" is not a whole word in it
        ("Neuro Stepdown", False),
        ("Neuro Intermediate", False),
        ("ICU step-down", False),
        ("Surgical ward 4 North", False),
    ],
)
def test_icu_unit_names_ship_without_a_site_file(bare: Knowledge, unit: str, icu: bool) -> None:
    assert (bare.icu_names.match(unit) is not None) is icu


def test_site_mapping_adds_and_removes_icu_names(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(
        "icu_units: [Ward 7B, 心外监护]\nicu_units_removed: [CCU]\n", encoding="utf-8"
    )
    k = load_knowledge(MAPPINGS, site=site)
    assert k.icu_names.match("Ward 7B") and k.icu_names.match("心外监护室")
    assert k.icu_names.match("CCU") is None
    assert k.icu_names.match("Coronary Care Unit (CCU)") is None  # a removed name never matches
    assert k.icu_names.match("MICU") == "MICU"  # the rest of the shipped list still does
    bare = load_knowledge(MAPPINGS)
    assert bare.icu_names.match("Ward 7B") is None and bare.icu_names.match("CCU") == "CCU"


@pytest.mark.parametrize(
    ("text", "serum", "ionized"),
    [
        ("Urine", True, True),
        ("Magnesium, urine", True, True),
        ("Urine, Random", True, True),
        ("尿镁", True, True),
        ("红细胞镁", True, True),
        ("RBC magnesium", True, True),
        ("Whole blood", True, False),  # whole blood: not serum, but ionized Mg is measured on it
        ("全血镁", True, False),
        ("Pleural fluid (thoracentesis fld)", True, True),
        ("血尿素氮", False, False),  # urea is a serum test: 尿素 is ignored
        ("Magnesium (Blood, Chemistry)", False, False),  # "blood" alone is serum chemistry
        ("Blood venous EDTA-volbloed", False, False),
        ("Magnesium [Mass/volume] in Serum or Plasma", False, False),
        ("Urinalysis panel", False, False),  # "urine" is a whole word only
    ],
)
def test_not_serum_words(bare: Knowledge, text: str, serum: bool, ionized: bool) -> None:
    words = bare.specimen_words
    assert (words.find([text], ionized=False) is not None) is serum
    assert (words.find([text], ionized=True) is not None) is ionized


def test_name_matching_rule() -> None:
    names = NameList(("ICU", "step down", "重症"), ignore=("重症肌",))
    assert names.find("icu") == "icu" and names.find("Room 4 ICU") == "ICU"
    assert names.find("ICUs") is None  # a letter after the name: not the same word
    assert names.find("step-down unit") and names.find("Step/Down") and names.find("stepdown")
    assert names.find("重症监护") == "重症" and names.find("重症肌无力") is None


@pytest.mark.parametrize(
    ("file", "text", "error"),
    [
        ("icu-units.yaml", "names: ICU\n", "names: 'ICU' is not of type 'array'"),
        ("icu-units.yaml", "names: [ICU]\nextra: 1\n", "unknown key(s) ['extra']"),
        ("icu-units.yaml", "not_icu: [HDU]\n", "'names' is a required property"),
        ("icu-units.yaml", "names: [ICU, '']\n", "names[1]: '' should be non-empty"),
        ("specimens.yaml", "not_serum: {words: [urine]}\n", "'whole_blood' is a required property"),
        (
            "specimens.yaml",
            "not_serum: {words: [urine], value_sets: [no-such-set]}\nwhole_blood: {words: [wb]}\n",
            "value set 'no-such-set' is referenced but absent",
        ),
        (
            "specimens.yaml",
            "not_serum: {words: [urine], codes: [UR]}\nwhole_blood: {words: [wb]}\n",
            "unknown key(s) ['codes']",
        ),
    ],
)
def test_a_bad_names_file_stops_loading_naming_file_and_field(
    tmp_path: Path, file: str, text: str, error: str
) -> None:
    root = tmp_path / "mappings"
    _copy_tree(MAPPINGS, root)
    (root / file).write_text(text, encoding="utf-8")
    with pytest.raises(MappingError) as err:
        load_knowledge(root)
    assert str(root / file) in str(err.value) and error in str(err.value)


def _copy_tree(src: Path, dst: Path) -> None:
    for path in src.rglob("*.yaml"):
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
