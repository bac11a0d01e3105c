"""``mappings/hl7v2.yaml``: coding systems, tables and message types, loaded and validated."""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from cds_service.rules.loader import MappingError

ACTIONS = frozenset({"add", "replace", "retract"})
ADT_ACTIONS = frozenset(
    {"admit", "update", "transfer", "discharge", "cancel-admit", "cancel-discharge", "merge"}
)
ERROR_KEYS = (
    "segment_sequence required_field data_type table_value unsupported_message "
    "unsupported_event unsupported_processing_id unsupported_version internal"
).split()


@dataclass(frozen=True)
class ResultStatus:
    """What one OBX-11 value means: the FHIR status and the store action."""

    status: str
    action: str


@dataclass(frozen=True)
class Hl7Maps:
    """Everything ``mappings/hl7v2.yaml`` holds, validated."""

    coding_systems: dict[str, str]
    default_diagnosis_system: str
    default_procedure_system: str
    patient_class_system: str
    result_status: dict[str, ResultStatus]
    result_status_missing: str
    numeric_types: frozenset[str]
    results: frozenset[str]
    adt_events: dict[str, str]
    adt_context_events: frozenset[str]
    processing_ids: dict[str, str]
    charsets: dict[str, str]
    patient_identifier_types: tuple[str, ...]
    errors: dict[str, str]
    administrations: frozenset[str] = frozenset()
    administration_status: dict[str, str] = field(default_factory=dict)
    administration_status_missing: str = "completed"

    def system_uri(self, name: str) -> str:
        """The FHIR URI of an HL7 coding-system name (the name itself when unknown)."""
        return self.coding_systems.get(name.strip().upper(), name.strip())


def _need(data: dict[str, Any], key: str, path: Path, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise MappingError(f"{path}: field '{key}' missing or not a {kind.__name__}")
    return value


def _str_map(data: dict[str, Any], key: str, path: Path) -> dict[str, str]:
    raw = _need(data, key, path, dict)
    out = {}
    for k, v in raw.items():
        if not isinstance(v, str) or not v:
            raise MappingError(f"{path}: {key}.{k} must be a non-empty string")
        out[str(k)] = v
    return out


def _statuses(data: dict[str, Any], path: Path) -> dict[str, ResultStatus]:
    out = {}
    for code, spec in _need(data, "result_status", path, dict).items():
        if not isinstance(spec, dict) or spec.get("action") not in ACTIONS:
            raise MappingError(
                f"{path}: result_status.{code}.action must be one of {sorted(ACTIONS)}"
            )
        if not isinstance(spec.get("status"), str):
            raise MappingError(f"{path}: result_status.{code}.status must be a string")
        out[str(code)] = ResultStatus(spec["status"], spec["action"])
    return out


def _charsets(data: dict[str, Any], path: Path) -> dict[str, str]:
    out = _str_map(data, "charsets", path)
    for name, codec in out.items():
        try:
            codecs.lookup(codec)
        except LookupError:
            raise MappingError(f"{path}: charsets.{name}: unknown codec {codec!r}") from None
    return {k.upper(): v for k, v in out.items()}


def build_maps(data: Any, path: Path) -> Hl7Maps:
    """Validate the parsed YAML document.

    :raises MappingError: a missing or malformed field, named with the file.
    """
    if not isinstance(data, dict):
        raise MappingError(f"{path}: expected a mapping at the top level")
    adt = _str_map(data, "adt_events", path)
    for event, action in adt.items():
        if action not in ADT_ACTIONS:
            raise MappingError(f"{path}: adt_events.{event}: unknown action {action!r}")
    errors = _str_map(data, "errors", path)
    missing = [k for k in ERROR_KEYS if k not in errors]
    if missing:
        raise MappingError(f"{path}: errors: missing {', '.join(missing)}")
    return Hl7Maps(
        coding_systems={k.upper(): v for k, v in _str_map(data, "coding_systems", path).items()},
        default_diagnosis_system=_need(data, "default_diagnosis_system", path, str),
        default_procedure_system=_need(data, "default_procedure_system", path, str),
        patient_class_system=_need(data, "patient_class_system", path, str),
        result_status=_statuses(data, path),
        result_status_missing=_need(data, "result_status_missing", path, str),
        numeric_types=frozenset(_need(data, "numeric_types", path, list)),
        results=frozenset(_need(data, "results", path, list)),
        adt_events=adt,
        adt_context_events=frozenset(_need(data, "adt_context_events", path, list)),
        processing_ids=_str_map(data, "processing_ids", path),
        charsets=_charsets(data, path),
        patient_identifier_types=tuple(_need(data, "patient_identifier_types", path, list)),
        errors=errors,
        administrations=frozenset(_need(data, "administrations", path, list)),
        administration_status={
            k.upper(): v for k, v in _str_map(data, "administration_status", path).items()
        },
        administration_status_missing=_need(data, "administration_status_missing", path, str),
    )


@lru_cache(maxsize=4)
def load_hl7_maps(path: Path) -> Hl7Maps:
    """Load and validate ``hl7v2.yaml`` (cached per path).

    :raises MappingError: unreadable or invalid file.
    """
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot read YAML: {exc}") from None
    return build_maps(data, path)
