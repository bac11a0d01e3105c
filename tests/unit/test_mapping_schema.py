"""Strict rules-as-data: a misspelt key anywhere in a mapping file refuses to load.

Each file kind is validated against its declared schema (cds_service/rules/schemas). Two
checks: (1) for every field key at every level of the files below, the misspelt key makes
the schema check fail, naming the file and the key path; (2) for one field key at each
level of each file kind, the whole ``load_knowledge`` refuses the copy, naming the file.
A key that names an id (a measure, a unit, a rule's text) is not a field: renaming it is
caught where the id is used, which other tests cover.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cds_service.render.fhir import OrderCodes
from cds_service.rules.loader import load_knowledge
from cds_service.rules.mapfile import MappingError, read_yaml
from cds_service.rules.schema import check
from tests.unit.test_loader import MAPPINGS

FILES: list[tuple[str, str]] = [
    *((f"rules/{p.name}", "rule") for p in sorted((MAPPINGS / "rules").glob("*.yaml"))),
    ("codes/ckd.yaml", "valueset"),
    ("units.yaml", "units"),
    ("measures.yaml", "measures"),
    ("gate.yaml", "gate"),
    ("aki.yaml", "aki"),
    ("egfr.yaml", "egfr"),
    ("rule-order.yaml", "rule-order"),
    ("orders.yaml", "orders"),
    ("site/example.yaml", "site"),
    ("push.yaml", "push"),
    ("text/en.yaml", "text"),
]
Path_ = tuple[Any, ...]


def key_paths(node: Any, path: Path_ = ()) -> Iterator[Path_]:
    """Every dict key of a document, as a path (parents before children)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from key_paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from key_paths(value, (*path, i))


def misspelt(doc: Any, path: Path_) -> Any:
    """A copy of the document with the key at ``path`` misspelt (an ``x`` appended)."""
    out = copy.deepcopy(doc)
    parent = out
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    parent[f"{key}x"] = parent.pop(key)
    return out


def shown(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def field_paths(doc: Any, kind: str) -> list[Path_]:
    """The key paths whose misspelling the schema refuses (fields, not ids)."""
    out = []
    for path in key_paths(doc):
        try:
            check(kind, misspelt(doc, path), "x.yaml")
        except MappingError:
            out.append(path)
    return out


@pytest.mark.parametrize(("rel", "kind"), FILES, ids=[f for f, _ in FILES])
def test_every_misspelt_field_is_refused_by_its_schema(rel: str, kind: str) -> None:
    doc = read_yaml(MAPPINGS / rel)
    check(kind, doc, rel)  # the file itself is valid
    fields = field_paths(doc, kind)
    assert fields, f"{rel}: the test found no field to misspell"
    for path in fields:
        with pytest.raises(MappingError) as info:
            check(kind, misspelt(doc, path), rel)
        message = str(info.value)
        parent = shown(path[:-1]) or "(top level)"
        assert message.startswith(f"{rel}: {parent}"), (path, message)
        assert f"{path[-1]}x" in message or "required" in message, (path, message)


def _one_field_per_level(doc: Any, kind: str) -> list[Path_]:
    by_depth: dict[int, Path_] = {}
    for path in field_paths(doc, kind):
        by_depth.setdefault(len(path), path)
    return [by_depth[d] for d in sorted(by_depth)]


# every kind once (for rules: one of each shape: measure, trigger, fixed and weight-based dose)
LEVEL_FILES = [
    (rel, kind)
    for rel, kind in FILES
    if not rel.startswith("rules/")
    or rel.endswith(("icu-hypomagnesemia-repletion.yaml", "monitoring-gap.yaml", "mg-trend.yaml",
                     "laparoscopic-intraop-mg.yaml", "hypermagnesemia-toxic.yaml"))
]  # fmt: skip


@pytest.mark.parametrize(("rel", "kind"), LEVEL_FILES, ids=[f for f, _ in LEVEL_FILES])
def test_a_misspelt_key_at_each_level_refuses_to_load(tmp_path: Path, rel: str, kind: str) -> None:
    doc = read_yaml(MAPPINGS / rel)
    levels = _one_field_per_level(doc, kind)
    assert levels
    for i, path in enumerate(levels):
        root = tmp_path / f"level-{i}"
        shutil.copytree(MAPPINGS, root)
        (root / rel).write_text(
            yaml.safe_dump(misspelt(_plain(doc), path), allow_unicode=True), encoding="utf-8"
        )
        with pytest.raises(MappingError) as info:
            if kind == "orders":  # read by the card renderer (render/fhir.py), not the loader
                OrderCodes(root / rel)
            else:
                load_knowledge(root, site=root / "site" / "example.yaml")
        assert rel.rsplit("/", maxsplit=1)[-1] in str(info.value), (shown(path), str(info.value))


def _plain(node: Any) -> Any:
    """The document with floats as plain floats (for yaml.safe_dump)."""
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, float):
        return float(node)
    return node


def test_the_issue_cases(tmp_path: Path) -> None:
    """The cases the clinical-trust issue names: each refuses to load, naming the file."""
    cases = [
        ("rules/icu-hypomagnesemia-repletion.yaml", "population:", "populaton:", "populaton"),
        ("rules/icu-hypomagnesemia-repletion.yaml", "  dose: {amount: 5.9", "  dose: {amonut: 5.9", "amonut"),
    ]  # fmt: skip
    for rel, old, new, key in cases:
        root = tmp_path / key
        shutil.copytree(MAPPINGS, root)
        text = (root / rel).read_text(encoding="utf-8")
        assert old in text
        (root / rel).write_text(text.replace(old, new, 1), encoding="utf-8")
        with pytest.raises(MappingError) as info:
            load_knowledge(root)
        assert rel in str(info.value) and key in str(info.value), str(info.value)
    root = tmp_path / "no-icu-location"
    shutil.copytree(MAPPINGS, root)
    (root / "codes" / "icu-location.yaml").unlink()
    with pytest.raises(MappingError, match=r"codes: value sets the service reads are missing: \['icu-location'\]"):
        load_knowledge(root)
