"""CDS services as data: ``mappings/services/<id>.yaml`` → ``ServiceDef`` and discovery JSON."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cds_service.rules.loader import MappingError
from cds_service.rules.model import Knowledge

HOOKS = frozenset({"patient-view", "order-select", "order-sign", "result-review"})
CONTEXT_TYPES = frozenset({"string", "array", "object", "Bundle"})
USER_TOKENS = frozenset(
    {"userPractitionerId", "userPractitionerRoleId", "userPatientId", "userRelatedPersonId"}
)
_TOKEN = re.compile(r"\{\{(.*?)\}\}")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True, slots=True)
class ContextField:
    """One hook context field the service reads: its JSON type and whether it is required."""

    name: str
    type: str
    required: bool = False


@dataclass(frozen=True)
class ServiceDef:
    """One CDS service: discovery fields, rendered prefetch templates, context fields."""

    id: str
    hook: str
    title: str
    description: str
    prefetch: dict[str, str]
    required_prefetch: frozenset[str]
    context: tuple[ContextField, ...]
    usage_requirements: str | None = None
    source_file: str = ""

    def discovery(self) -> dict[str, Any]:
        """This service as an entry of the discovery response (no empty members)."""
        out: dict[str, Any] = {
            "hook": self.hook,
            "id": self.id,
            "title": self.title,
            "description": self.description,
        }
        if self.prefetch:
            out["prefetch"] = dict(self.prefetch)
        if self.usage_requirements:
            out["usageRequirements"] = self.usage_requirements
        return out


def _codes(where: str, spec: Any, knowledge: Knowledge) -> str:
    """``system|code`` list of value sets (plus the site's local codes for them)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("valuesets"), list):
        raise MappingError(f"{where}: code must be {{valuesets: [value-set ids]}}")
    out: list[str] = []
    for vs_id in spec["valuesets"]:
        if vs_id not in knowledge.valuesets:
            raise MappingError(f"{where}: value set {vs_id!r} is referenced but absent")
        vs = knowledge.valuesets.get(vs_id)
        if vs.ranges:
            raise MappingError(f"{where}: value set {vs_id!r} has code ranges (not searchable)")
        out.extend(f"{system}|{code}" for system, code in sorted(vs.codes))
        site = knowledge.site.lab_codes.values()
        out.extend(f"{c.system}|{c.code}" for c in site if c.value_set == vs_id and ":" in c.system)
    return ",".join(dict.fromkeys(out))


def _check_tokens(where: str, text: str, fields: dict[str, ContextField]) -> None:
    for token in _TOKEN.findall(text):
        name = token.removeprefix("context.")
        if token in USER_TOKENS:
            continue
        if not token.startswith("context.") or name not in fields:
            raise MappingError(f"{where}: token {{{{{token}}}}} is not a context field")
        if fields[name].type != "string":
            raise MappingError(f"{where}: token {{{{{token}}}}} is not a primitive field")


def _template(where: str, raw: Any, knowledge: Knowledge) -> str:
    if not isinstance(raw, dict):
        raise MappingError(f"{where}: expected a mapping")
    if "read" in raw:
        return f"{raw['read']}/{raw.get('id', '')}"
    resource, params = raw.get("resource"), raw.get("params") or {}
    if not isinstance(resource, str) or not isinstance(params, dict):
        raise MappingError(f"{where}: needs 'read' and 'id', or 'resource' and 'params'")
    parts = []
    for name, value in params.items():
        text = _codes(f"{where}.params.{name}", value, knowledge) if name == "code" else value
        parts.append(f"{name}={text}")
    return f"{resource}?{'&'.join(parts)}" if parts else resource


def load_service(path: Path, knowledge: Knowledge) -> ServiceDef:
    """One service file, validated.

    :raises MappingError: a missing or wrong field, named with the file.
    """
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{where}: cannot read: {exc}") from None
    if not isinstance(data, dict):
        raise MappingError(f"{where}: expected a mapping")
    for key in ("id", "hook", "title", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise MappingError(f"{where}: missing field '{key}'")
    if data["id"] != path.stem or not _ID.match(data["id"]):
        raise MappingError(f"{where}: id {data['id']!r} must equal the file name (a-z, 0-9, -)")
    if data["hook"] not in HOOKS:
        raise MappingError(f"{where}: hook {data['hook']!r} is not one of {sorted(HOOKS)}")
    fields: dict[str, ContextField] = {}
    for name, spec in (data.get("context") or {}).items():
        if not isinstance(spec, dict) or spec.get("type") not in CONTEXT_TYPES:
            raise MappingError(f"{where}: context.{name}.type must be one of {CONTEXT_TYPES}")
        fields[name] = ContextField(name, spec["type"], bool(spec.get("required", False)))
    prefetch: dict[str, str] = {}
    required: set[str] = set()
    for key, raw in (data.get("prefetch") or {}).items():
        w = f"{where}: prefetch.{key}"
        prefetch[str(key)] = _template(w, raw, knowledge)
        _check_tokens(w, prefetch[str(key)], fields)
        if raw.get("required"):
            required.add(str(key))
    usage = data.get("usageRequirements")
    return ServiceDef(
        id=data["id"],
        hook=data["hook"],
        title=data["title"].strip(),
        description=data["description"].strip(),
        prefetch=prefetch,
        required_prefetch=frozenset(required),
        context=tuple(fields.values()),
        usage_requirements=usage.strip() if isinstance(usage, str) and usage.strip() else None,
        source_file=where,
    )


def load_services(folder: Path, knowledge: Knowledge) -> dict[str, ServiceDef]:
    """Every ``<folder>/*.yaml`` service, by id.

    :raises MappingError: an invalid file, or no service at all.
    """
    services = {p.stem: load_service(p, knowledge) for p in sorted(folder.glob("*.yaml"))}
    if not services:
        raise MappingError(f"{folder}: no service files")
    return services


def discovery(services: dict[str, ServiceDef]) -> dict[str, Any]:
    """The discovery response: ``{"services": [...]}``."""
    return {"services": [s.discovery() for s in services.values()]}
