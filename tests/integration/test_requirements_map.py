"""Every service requirement row of the CDS Hooks 2.0 CSV is mapped to a test or a reason."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from tests.integration.hooks_support import SPEC
from tests.integration.requirements_map import REQUIREMENTS

CSV = SPEC / "requirements" / "cds-hooks_2.0_requirements_service.csv"
HERE = Path(__file__).parent


def test_every_row_is_mapped() -> None:
    with CSV.open(encoding="utf-8") as fh:
        ids = {row["ID"] for row in csv.DictReader(fh)}
    assert sorted(ids - set(REQUIREMENTS), key=int) == []
    assert sorted(set(REQUIREMENTS) - ids, key=int) == []


def test_mapped_tests_exist() -> None:
    for target in REQUIREMENTS.values():
        match = re.match(r"^((?:\.\./unit/)?test_[a-z_]+\.py)::(test_[a-z0-9_]+)", target)
        if match is None:
            continue
        source = (HERE / match.group(1)).read_text(encoding="utf-8")
        assert f"def {match.group(2)}(" in source, target
