"""Follow-up reads after prefetch: Locations and Specimens named by reference, not included.

An EHR that ignores ``_include`` (many limit prefetch to plain reads and searches), or a
server that does not support it, leaves ``Encounter.location`` and ``Observation.specimen``
as bare references (``{"reference": "Location/123"}``, no display): the unit's type and
name, and the specimen's type, are then unknown. For every template with
``_include=Encounter:location`` or ``_include=Observation:specimen``, the targets its
resources (and, for specimens, the hook's ``context.results``) reference but the request does
not hold are read from the allowlisted ``fhirServer`` under the hook's one deadline, and
added to that key's Bundle as ``search.mode = include`` entries: what a server honouring the
``_include`` would have returned. Contained (``#id``) targets need no read; references to
another server are not followed. At most ``MAX_READS`` targets per include are read, in the
order the resources come (newest results first). Targets that cannot be read are reported as
``locations`` or ``specimens`` in the outcome's missing data.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cds_service.clinical.fhir_common import ref_key

MAX_READS = 10
#: _include value -> (referring type, reference field, target type, name when unobtainable)
INCLUDES: dict[str, tuple[str, str, str, str]] = {
    "Encounter:location": ("Encounter", "location", "Location", "locations"),
    "Observation:specimen": ("Observation", "specimen", "Specimen", "specimens"),
}
_INCLUDE = re.compile(r"[?&]_include=([A-Za-z]+:[A-Za-z]+)")

Fetcher = Callable[[dict[str, str]], dict[str, tuple[Any, str | None]]]


@dataclass
class Followed:
    """What following the references added, and what could not be read."""

    prefetch: dict[str, Any]
    missing: list[str] = field(default_factory=list)
    bad_resources: int = 0
    reads: int = 0


def _resources(value: Any) -> list[dict[str, Any]]:
    """The resources of a prefetch value (a resource or a Bundle's entries)."""
    if not isinstance(value, dict):
        return []
    if value.get("resourceType") != "Bundle":
        return [value]
    entries = value.get("entry")
    out = []
    for entry in entries if isinstance(entries, list) else ():
        res = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(res, dict):
            out.append(res)
    return out


def _held(values: Iterable[Any], targets: set[str]) -> set[str]:
    """``Type/id`` of the resources of the ``targets`` types the request holds (id, fullUrl)."""
    held: set[str] = set()
    for value in values:
        if not isinstance(value, dict):
            continue
        entries = (
            value.get("entry") if value.get("resourceType") == "Bundle" else [{"resource": value}]
        )
        for entry in entries if isinstance(entries, list) else ():
            res = entry.get("resource") if isinstance(entry, dict) else None
            if not isinstance(res, dict) or res.get("resourceType") not in targets:
                continue
            kind, rid, url = res["resourceType"], res.get("id"), entry.get("fullUrl")
            if isinstance(rid, str):
                held.add(f"{kind}/{rid}")
            if isinstance(url, str):
                held.add(ref_key(url))
    return held


def _references(res: dict[str, Any], field_name: str) -> list[str]:
    """The literal references of ``Encounter.location[].location`` / ``Observation.specimen``."""
    raw = res.get(field_name)
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        ref = item.get("location") if field_name == "location" else item
        reference = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(reference, str) and reference and not reference.startswith(("#", "urn:")):
            out.append(reference)
    return out


@dataclass
class Wanted:
    """The targets of one include still to read: ``Type/id`` -> (reference as written, key)."""

    include: str
    refs: dict[str, tuple[str, str]] = field(default_factory=dict)


def wanted(
    prefetch: Mapping[str, Any], templates: Mapping[str, str], extra: list[dict[str, Any]]
) -> list[Wanted]:
    """The targets per include that the request references but does not hold.

    Every key whose template has the include is scanned (``encounter`` and ``encounters``
    both); a target goes to the key of the resource that references it. ``extra``: resources
    outside prefetch (``context.results``), whose targets go to the first such key.
    """
    found: dict[str, Wanted] = {}
    for key, template in templates.items():
        for include in _INCLUDE.findall(template):
            if include not in INCLUDES:
                continue
            source, field_name, target, _ = INCLUDES[include]
            first = include not in found
            todo = found.setdefault(include, Wanted(include))
            for res in [*_resources(prefetch.get(key)), *(extra if first else [])]:
                if res.get("resourceType") != source:
                    continue
                for reference in _references(res, field_name):
                    name = ref_key(reference)
                    if name.startswith(f"{target}/") and name not in todo.refs:
                        todo.refs[name] = (reference, key)
    if not any(w.refs for w in found.values()):
        return []
    targets = {INCLUDES[include][2] for include, w in found.items() if w.refs}
    held = _held([*prefetch.values(), *extra], targets)
    out = []
    for w in found.values():
        refs = [(name, ref) for name, ref in w.refs.items() if name not in held]
        if refs:
            out.append(Wanted(w.include, dict(refs[:MAX_READS])))
    return out


def _with_includes(value: Any, found: list[dict[str, Any]]) -> dict[str, Any]:
    """The key's value as a Bundle with the read targets appended as include entries."""
    adds = [{"resource": r, "search": {"mode": "include"}} for r in found]
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        return {**value, "entry": [*(entries if isinstance(entries, list) else []), *adds]}
    head = [{"resource": value}] if isinstance(value, dict) else []
    return {"resourceType": "Bundle", "type": "searchset", "entry": [*head, *adds]}


def follow_references(
    prefetch: dict[str, Any],
    templates: Mapping[str, str],
    extra: list[dict[str, Any]],
    fetch: Fetcher | None,
) -> Followed:
    """Read the referenced targets that are not included (``fetch``: None without a server)."""
    todo = wanted(prefetch, templates, extra)
    out = Followed(dict(prefetch))
    if not todo:
        return out
    if fetch is None:
        out.missing = sorted({INCLUDES[w.include][3] for w in todo})
        return out
    urls = {f"{w.include}|{name}": ref for w in todo for name, (ref, _) in w.refs.items()}
    answers = fetch(urls)
    out.reads = len(urls)
    missing: set[str] = set()
    found: dict[str, list[dict[str, Any]]] = {}
    for w in todo:
        target, label = INCLUDES[w.include][2], INCLUDES[w.include][3]
        for name, (_, key) in w.refs.items():
            value, failure = answers.get(f"{w.include}|{name}", (None, "not read"))
            if failure is not None:
                missing.add(label)
            elif isinstance(value, dict) and value.get("resourceType") == target:
                found.setdefault(key, []).append(value)
            elif value is not None:  # an answer that is not the resource asked for
                out.bad_resources += 1
    for key, resources in found.items():
        out.prefetch[key] = _with_includes(out.prefetch.get(key), resources)
    out.missing = sorted(missing)
    return out
