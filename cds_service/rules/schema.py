"""Every mapping file against its declared schema (``rules/schemas/*.yaml``, JSON Schema).

Each object of a schema lists its fields, so a misspelt key anywhere is refused; the
error names the file, the key path and what is wrong. Meaning (a fact's parameters, a
unit of the right quantity, ids that must exist elsewhere) is checked by the loaders.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from cds_service.rules.mapfile import MappingError

SCHEMAS = Path(__file__).with_name("schemas")
KINDS = (
    "rule",
    "valueset",
    "units",
    "measures",
    "gate",
    "aki",
    "egfr",
    "rule-order",
    "orders",
    "site",
    "push",
    "text",
    "icu-units",
    "specimens",
)


@cache
def _validators() -> dict[str, Draft202012Validator]:
    docs = {p.stem: yaml.safe_load(p.read_text(encoding="utf-8")) for p in SCHEMAS.glob("*.yaml")}
    registry: Registry[Any] = Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc, default_specification=_spec()))
        for doc in docs.values()
    )
    return {kind: Draft202012Validator(docs[kind], registry=registry) for kind in KINDS}


def _spec() -> Any:
    from referencing.jsonschema import DRAFT202012

    return DRAFT202012


def _where(error: ValidationError) -> str:
    path = ""
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _message(error: ValidationError) -> str:
    schema = error.schema
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        props = schema.get("properties") if isinstance(schema, dict) else None
        allowed = sorted((props or {}).keys())
        unknown = sorted(set(error.instance) - set(allowed))
        if allowed and unknown:
            return f"unknown key(s) {unknown} (known: {', '.join(allowed)})"
    if error.validator == "unevaluatedProperties":
        return error.message.replace("Unevaluated properties are not allowed", "unknown key(s)")
    return error.message


def check(kind: str, data: Any, path: Path | str) -> None:
    """Validate one parsed mapping file.

    :raises MappingError: the first problem, with the file and key path.
    """
    errors = sorted(
        _validators()[kind].iter_errors(data), key=lambda e: list(map(str, e.absolute_path))
    )
    if not errors:
        return
    error = _deepest(errors[0])
    raise MappingError(f"{path}: {_where(error)}: {_message(error)}")


def _deepest(error: ValidationError) -> ValidationError:
    """For a oneOf/anyOf failure, the alternative's error that went deepest."""
    if error.context:
        best = max(error.context, key=lambda e: (len(e.absolute_path), -len(e.schema_path)))
        return _deepest(best)
    return error
