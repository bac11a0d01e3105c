"""``mappings/delta-checks.yaml`` is validated at load: each mistake names the file and the key."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from cds_service.rules.loader import MappingError, load_knowledge
from cds_service.rules.model import Knowledge

ROOT = Path(__file__).parents[2]
MAPPINGS = ROOT / "mappings"
FILE = "delta-checks.yaml"

# (case, text in the file, replacement, key path named in the message)
CASES = [
    ("misspelt-top-level-key", "dilution:", "dilutoin:", "dilutoin"),
    ("misspelt-nested-key", "  fall_ge_pct: 40", "  fall_ge_percent: 40", "fall_ge_percent"),
    ("missing-key", "  same_draw_within: 5m          # collected within 5 min of each other\n", "",
     "same_draw_within"),
    ("bad-duration", "same_draw_within: 5m", "same_draw_within: 5 minutes", "dilution.same_draw_within"),
    ("negative-duration", "  within: 24h", "  within: -24h", "resolution.within"),
    ("percent-out-of-range", "refuted_within_pct: 25", "refuted_within_pct: 250",
     "resolution.refuted_within_pct"),
    ("percent-not-a-number", "fall_ge_pct: 40", "fall_ge_pct: forty", "dilution.fall_ge_pct"),
    ("unknown-test", "tests: [serum-mg, creatinine]", "tests: [serum-mg, creatinin]", "dilution.tests[1]"),
    ("one-test-is-no-draw", "tests: [serum-mg, creatinine]", "tests: [serum-mg]", "dilution.tests"),
    ("rise-unit-of-another-quantity", "rise_ge: {value: 2.0, unit: mg/dL}",
     "rise_ge: {value: 2.0, unit: umol/L}", "jump.rise_ge.unit"),
    ("rise-not-a-number", "rise_ge: {value: 2.0,", "rise_ge: {value: two,", "jump.rise_ge.value"),
    ("value-set-absent", "magnesium_given: [magnesium-sulfate, oral-magnesium]",
     "magnesium_given: [magnesium-sulphate, oral-magnesium]", "jump.magnesium_given[0]"),
    ("rule-unknown", "still_used_by: [hypermagnesemia-toxic]", "still_used_by: [hypermagnesaemia-toxic]",
     "still_used_by[0]"),
    ("rule-without-a-latest-value", "still_used_by: [hypermagnesemia-toxic]",
     "still_used_by: [admission-u-shape]", "still_used_by[0]"),
    ("repeat-order-missing-a-test", "  creatinine: {system: http://loinc.org, code: 2160-0", "  creat: {system: http://loinc.org, code: 2160-0",
     "repeat_order"),
    ("repeat-order-code-of-another-test", "code: 2160-0, display", "code: 19123-9, display",
     "repeat_order.creatinine"),
    ("citation-without-url", "    url: https://clsi.org/shop/standards/ep33\n", "", "source[0]"),
]  # fmt: skip


def _load_with(tmp_path: Path, old: str, new: str) -> Knowledge:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    path = root / FILE
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {FILE}: fix the test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return load_knowledge(root, site=root / "site" / "example.yaml")


@pytest.mark.parametrize(("old", "new", "key"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_mistake_is_refused_naming_file_and_key(
    tmp_path: Path, old: str, new: str, key: str
) -> None:
    with pytest.raises(MappingError) as info:
        _load_with(tmp_path, old, new)
    message = str(info.value)
    assert FILE in message and key in message, message


def test_missing_file_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, root)
    (root / FILE).unlink()
    with pytest.raises(MappingError, match=FILE):
        load_knowledge(root, site=root / "site" / "example.yaml")


def test_real_file_loads_as_evidence_md_says(knowledge: Knowledge) -> None:
    p = knowledge.delta
    assert p.dilution_tests == ("serum-mg", "creatinine") and p.jump_test == "serum-mg"
    assert (p.same_draw, p.fall_pct, p.fall_within) == (
        timedelta(minutes=5),
        40,
        timedelta(hours=48),
    )
    assert (p.rise, p.jump_within) == (2.0, timedelta(hours=24))
    assert (p.resolve_within, p.refute_pct) == (timedelta(hours=24), 25)
    assert p.still_used_by == {"hypermagnesemia-toxic"}
    assert p.magnesium_sets == ("magnesium-sulfate", "oral-magnesium")


def test_a_changed_limit_changes_the_cards(tmp_path: Path) -> None:
    """The limits are data: a 50 % dilution limit no longer flags a 40 % fall."""
    from tests.unit.builders import NOW, H
    from tests.unit.suspect_support import cards, diluted, icu_patient, no_suspect

    k = _load_with(tmp_path, "fall_ge_pct: 40", "fall_ge_pct: 50")
    snap = icu_patient(k, **diluted(k, NOW - H, (2.5, 1.5), (2.0, 1.2)))
    assert no_suspect(cards(k, snap))
