"""Load ``push.yaml``: when advice pushed by events is pushed again (evidence.md §8)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from cds_service.rules.mapfile import MappingError, need, read_mapping
from cds_service.rules.model import PushRule


def load_push(path: Path, rule_ids: Collection[str]) -> dict[str, PushRule]:
    """The push policy of every rule (each rule listed once, no other id).

    :raises MappingError: not of the schema, a rule missing, or an unknown rule id.
    """
    raw = read_mapping(path, "push")
    listed = need(raw, "rules", str(path), dict)
    unknown = sorted(set(listed) - set(rule_ids))
    if unknown:
        raise MappingError(f"{path}: rules: unknown rule id(s) {unknown}")
    missing = [rid for rid in rule_ids if rid not in listed]
    if missing:
        raise MappingError(f"{path}: rules: rule(s) without a push policy: {missing}")
    return {
        rid: PushRule(str(spec["once_per"]), bool(spec.get("pushed", True)))
        for rid, spec in listed.items()
    }


def check_site_push(enabled: Collection[str], push: dict[str, PushRule], where: str) -> None:
    """A site's ``push.enable``: rules that exist.

    :raises MappingError: an unknown rule id.
    """
    for rid in enabled:
        if rid not in push:
            raise MappingError(f"{where}: push.enable: unknown rule id {rid!r}")
