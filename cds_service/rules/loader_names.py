"""Load ``icu-units.yaml`` and ``specimens.yaml`` (names as data) with the site's ICU names.

Each file has a strict shape; a mistake raises ``NamesError`` naming the file and the
field (the loader turns it into ``MappingError``).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from cds_service.clinical.names import IcuNames, NameList, SpecimenWords

ICU_FILE = "icu-units.yaml"
SPECIMEN_FILE = "specimens.yaml"


class NamesError(ValueError):
    """A names file is invalid; the message names the file and the field."""


def _read(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise NamesError(f"{path}: cannot read YAML: {exc}") from None
    if not isinstance(data, dict):
        raise NamesError(f"{path}: expected a mapping")
    return data


def _only(data: dict[str, Any], where: str, allowed: set[str], required: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise NamesError(f"{where}: unknown key(s) {unknown} (known: {', '.join(sorted(allowed))})")
    missing = sorted(required - set(data))
    if missing:
        raise NamesError(f"{where}: missing field '{missing[0]}'")


def _strings(value: Any, where: str, *, empty_ok: bool = False) -> tuple[str, ...]:
    """A list of non-empty strings (numbers are read as text: unit names like 4 North)."""
    if value is None and empty_ok:
        return ()
    if not isinstance(value, list) or (not value and not empty_ok):
        raise NamesError(f"{where}: expected a list of names")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str | int) or isinstance(item, bool) or not str(item).strip():
            raise NamesError(f"{where}[{i}]: expected a non-empty name")
        out.append(str(item).strip())
    return tuple(out)


def load_icu_names(path: Path, added: Collection[str], removed: Collection[str]) -> IcuNames:
    """ICU unit names: the shipped list plus the site's, minus the site's removed names.

    A removed name no longer matches, and a unit whose name contains it is not an ICU.

    :raises NamesError: a wrong field, named with the file.
    """
    data = _read(path)
    _only(data, str(path), {"names", "not_icu"}, {"names"})
    names = _strings(data["names"], f"{path}: names")
    not_icu = _strings(data.get("not_icu"), f"{path}: not_icu", empty_ok=True)
    kept = NameList(names).without(removed)
    return IcuNames(
        icu=NameList((*kept, *added)),
        not_icu=NameList((*not_icu, *removed)),
    )


def load_specimen_words(path: Path, valuesets: Collection[str]) -> SpecimenWords:
    """Words and specimen-type value sets that say "not serum" (and "whole blood").

    :raises NamesError: a wrong field or a value set that does not exist.
    """
    data = _read(path)
    where = str(path)
    _only(data, where, {"not_serum", "whole_blood", "ignore"}, {"not_serum", "whole_blood"})
    ignore = _strings(data.get("ignore"), f"{where}: ignore", empty_ok=True)
    groups: dict[str, tuple[NameList, tuple[str, ...]]] = {}
    for key in ("not_serum", "whole_blood"):
        group = data[key]
        w = f"{where}: {key}"
        if not isinstance(group, dict):
            raise NamesError(f"{w}: expected a mapping")
        _only(group, w, {"words", "value_sets"}, {"words"})
        sets = _strings(group.get("value_sets"), f"{w}.value_sets", empty_ok=True)
        for set_id in sets:
            if set_id not in valuesets:
                raise NamesError(f"{w}.value_sets: value set {set_id!r} is referenced but absent")
        groups[key] = (NameList(_strings(group["words"], f"{w}.words"), ignore), sets)
    return SpecimenWords(
        not_serum=groups["not_serum"][0],
        whole_blood=groups["whole_blood"][0],
        not_serum_sets=groups["not_serum"][1],
        whole_blood_sets=groups["whole_blood"][1],
    )
