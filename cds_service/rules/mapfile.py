"""Reading one mapping file: YAML with decimals as reported, and field checks naming the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from cds_service.clinical.numbers import Reported


class MappingError(ValueError):
    """A mapping file is invalid; the message names the file and the field."""


_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available


class _Loader(_Base):  # type: ignore[misc]
    """A safe loader whose floats keep their decimal text (``1.70`` stays ``1.70`` in a card)."""


def _float(loader: Any, node: yaml.Node) -> float:
    text = str(loader.construct_scalar(node))
    try:
        return Reported(text.replace("_", ""))
    except ValueError:  # .inf, .nan
        return float(loader.construct_yaml_float(node))


_Loader.add_constructor("tag:yaml.org,2002:float", _float)


def read_yaml(path: Path) -> Any:
    """A YAML file's data (floats as ``Reported``).

    :raises MappingError: unreadable file or invalid YAML.
    """
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot read YAML: {exc}") from None


def read_mapping(path: Path, kind: str) -> Any:
    """A mapping file's data, validated against the schema of its kind (rules/schemas).

    :raises MappingError: unreadable, invalid YAML, or not of the schema (file and key path).
    """
    from cds_service.rules.schema import check

    data = read_yaml(path)
    check(kind, data, path)
    return data


def need(data: Any, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """A required field of a mapping, of the given type.

    :raises MappingError: missing, null, or of another type.
    """
    if not isinstance(data, dict) or key not in data or data[key] is None:
        raise MappingError(f"{where}: missing field '{key}'")
    if not isinstance(data[key], kind):
        raise MappingError(f"{where}.{key}: wrong type {type(data[key]).__name__}")
    return data[key]


# a number standing alone: not part of a name (COVID-19, IL-6, NF-κB) or a longer number
_NUMBER = re.compile(r"(?<![A-Za-z]-)(?<![\w.])\d+(?:\.\d+)?(?![\w])")


def numbers_in(node: Any, skip: frozenset[str] = frozenset()) -> set[float]:
    """Every number a YAML node holds (strings like ``72h`` or ``2-4 g`` included)."""
    out: set[float] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in skip:
                out |= numbers_in(value, skip)
    elif isinstance(node, list):
        for value in node:
            out |= numbers_in(value, skip)
    elif isinstance(node, bool):
        pass
    elif isinstance(node, int | float):
        out.add(float(node))
    elif isinstance(node, str):
        out |= {float(x) for x in re.findall(r"\d+(?:\.\d+)?", node)}
    return out


def numbers_of_text(text: str) -> set[float]:
    """The numbers written in a template (placeholders removed)."""
    bare = re.sub(r"\{[a-z_]+\}", " ", text)
    return {float(x) for x in _NUMBER.findall(bare)}
