"""Load ``icu-units.yaml`` and ``specimens.yaml`` (names as data) with the site's ICU names.

Each file is checked against its schema (``rules/schemas/icu-units.yaml``,
``specimens.yaml``); the value sets ``specimens.yaml`` names must exist.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from cds_service.clinical.names import IcuNames, NameList, SpecimenWords
from cds_service.clinical.terminology import ValueSets
from cds_service.rules.mapfile import MappingError, read_mapping
from cds_service.rules.model import SiteMap

ICU_FILE = "icu-units.yaml"
SPECIMEN_FILE = "specimens.yaml"


def _names(values: Any) -> tuple[str, ...]:
    """Names as text (a unit named by a number, ``4``, is the name "4")."""
    return tuple(str(v).strip() for v in values or ())


def load_icu_names(path: Path, added: Collection[str], removed: Collection[str]) -> IcuNames:
    """ICU unit names: the shipped list plus the site's, minus the site's removed names.

    A removed name no longer matches, and a unit whose name contains it is not an ICU.

    :raises MappingError: not of the schema (file and key path).
    """
    data = read_mapping(path, "icu-units")
    kept = NameList(_names(data["names"])).without(removed)
    return IcuNames(
        icu=NameList((*kept, *added)),
        not_icu=NameList((*_names(data.get("not_icu")), *removed)),
    )


def load_specimen_words(path: Path, valuesets: ValueSets) -> SpecimenWords:
    """Words and specimen-type value sets that say "not serum" (and "whole blood").

    :raises MappingError: not of the schema, or a value set that does not exist.
    """
    data = read_mapping(path, "specimens")
    ignore = _names(data.get("ignore"))
    groups: dict[str, tuple[NameList, tuple[str, ...]]] = {}
    for key in ("not_serum", "whole_blood"):
        sets = _names(data[key].get("value_sets"))
        for set_id in sets:
            if set_id not in valuesets:
                raise MappingError(
                    f"{path}: {key}.value_sets: value set {set_id!r} is referenced but absent"
                )
        groups[key] = (NameList(_names(data[key]["words"]), ignore), sets)
    return SpecimenWords(
        not_serum=groups["not_serum"][0],
        whole_blood=groups["whole_blood"][0],
        not_serum_sets=groups["not_serum"][1],
        whole_blood_sets=groups["whole_blood"][1],
    )


def load_names(root: Path, site: SiteMap, valuesets: ValueSets) -> dict[str, Any]:
    """The Knowledge fields ``icu_names`` (with the site's names) and ``specimen_words``.

    :raises MappingError: an invalid file, named with the key path.
    """
    return {
        "icu_names": load_icu_names(
            root / ICU_FILE, sorted(site.icu_units), sorted(site.icu_units_removed)
        ),
        "specimen_words": load_specimen_words(root / SPECIMEN_FILE, valuesets),
    }
