"""FHIR R4 JSON (bundles, CDS Hooks requests, prefetch) to ``ClinicalSnapshot``.

Pure functions: no I/O, no clock reads. Resources are walked as plain dicts;
one bad resource is skipped and recorded (``Excluded`` with ``bad-resource``),
never raised. How the current encounter is chosen: see ``fhir_assemble``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any

from cds_service.clinical import model as m
from cds_service.clinical.fhir_assemble import CLINICAL_TYPES, build_parts, freeze, patient_of
from cds_service.clinical.fhir_common import JsonDict, ResourceIndex, name_of
from cds_service.clinical.fhir_labs import bad_resource
from cds_service.rules.model import Knowledge

Item = tuple[Any, str | None]


def _flatten(items: Iterable[Any], out: list[Item], bad: list[m.Excluded]) -> None:
    """Resources from resources, Bundles (nested too) and nulls, with their fullUrl."""
    for item in items:
        if item is None:
            continue
        if not (isinstance(item, dict) and item.get("resourceType") == "Bundle"):
            out.append((item, None))
            continue
        entries = item.get("entry") or []
        if not isinstance(entries, list):
            bad.append(bad_resource(item, "Bundle.entry is not an array"))
            continue
        for entry in entries:
            if not isinstance(entry, dict):
                out.append((entry, None))
                continue
            res, url = entry.get("resource"), entry.get("fullUrl")
            if isinstance(res, dict) and res.get("resourceType") == "Bundle":
                _flatten([res], out, bad)
            elif res is not None:
                out.append((res, url if isinstance(url, str) else None))


def _index(items: list[Item], index: ResourceIndex, bad: list[m.Excluded]) -> list[JsonDict]:
    """Index readable resources (first of a duplicated ``Type/id`` wins); record the rest."""
    good: list[JsonDict] = []
    for res, url in items:
        if not isinstance(res, dict) or not isinstance(res.get("resourceType"), str):
            bad.append(bad_resource(res, "not a FHIR resource"))
        elif isinstance(res.get("id"), (str, type(None))):
            if index.add(res, url):
                good.append(res)
        else:
            bad.append(bad_resource(res, "id is not a string"))
    return good


def _patient_key(res: JsonDict, url: str | None) -> str:
    rid = res.get("id")
    return rid if isinstance(rid, str) else (url or "")


def snapshot_from_resources(
    resources: Iterable[Any],
    knowledge: Knowledge,
    *,
    patient_id: str | None,
    encounter_id: str | None = None,
    draft_orders: Iterable[Any] = (),
    tz: tzinfo = UTC,
    now: datetime | None = None,
    missing: Iterable[str] = (),
) -> m.ClinicalSnapshot:
    """One patient's snapshot from resources, Bundles or nulls (CDS Hooks prefetch values)."""
    bad: list[m.Excluded] = []
    items: list[Item] = []
    draft_items: list[Item] = []
    _flatten(resources, items, bad)
    _flatten(draft_orders, draft_items, bad)
    index = ResourceIndex()
    good = _index(items, index, bad)
    drafts = _index(draft_items, ResourceIndex(), bad)
    for res in drafts:
        index.add(res, None)
    if patient_id is None:
        patients = [r for r in good if r["resourceType"] == "Patient"]
        if len(patients) == 1:
            patient_id = _patient_key(patients[0], None)
        else:
            owners = (patient_of(r, index) for r in good if r["resourceType"] in CLINICAL_TYPES)
            patient_id = next((o for o in owners if o), None)
    parts = build_parts(good, drafts, knowledge, index=index, patient_id=patient_id, tz=tz, bad=bad)
    return freeze(parts, patient_id or "", encounter_id, now, missing)


def snapshots_from_bundle(
    bundle: dict[str, Any], knowledge: Knowledge, *, tz: tzinfo = UTC, now: datetime | None = None
) -> list[m.ClinicalSnapshot]:
    """One snapshot per patient of a Bundle (collection, searchset, transaction, document, batch).

    :raises ValueError: the input is not a FHIR Bundle.
    """
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ValueError("not a FHIR Bundle")
    bad: list[m.Excluded] = []
    items: list[Item] = []
    _flatten([bundle], items, bad)
    index = ResourceIndex()
    urls = {id(res): url for res, url in items}
    good = _index(items, index, bad)
    groups: dict[str, list[JsonDict]] = {}
    for res in good:
        if res["resourceType"] == "Patient":
            groups.setdefault(_patient_key(res, urls.get(id(res))), []).append(res)
    loose: list[JsonDict] = []
    for res in good:
        if res["resourceType"] in CLINICAL_TYPES:
            owner = patient_of(res, index)
            if owner is None:
                loose.append(res)
            else:
                groups.setdefault(owner, []).append(res)
    if loose and len(groups) <= 1:
        groups.setdefault(next(iter(groups), ""), []).extend(loose)
    snapshots = []
    for i, (pid, group) in enumerate(groups.items()):
        # unreadable entries belong to no patient: they are reported with the first one
        parts = build_parts(
            group, (), knowledge, index=index, patient_id=pid, tz=tz, bad=bad if i == 0 else []
        )
        snapshots.append(freeze(parts, pid, None, now, ()))
    return snapshots


def _bundle_resources(value: Any) -> list[Any]:
    """The resources of a Bundle (or a list of resources) from a hook context field."""
    items: list[Item] = []
    _flatten(value if isinstance(value, list) else [value], items, [])
    return [res for res, _ in items]


def snapshot_from_cds_request(
    request: dict[str, Any], knowledge: Knowledge, *, tz: tzinfo = UTC, now: datetime | None = None
) -> m.ClinicalSnapshot:
    """The snapshot for a CDS Hooks request: its context (draft orders, results) and prefetch."""
    context = request.get("context")
    context = context if isinstance(context, dict) else {}
    patient_id = context.get("patientId")
    encounter_id = context.get("encounterId")
    drafts = _bundle_resources(context.get("draftOrders"))
    selections = context.get("selections")
    if isinstance(selections, list):
        chosen = {s for s in selections if isinstance(s, str)}
        drafts = [
            d for d in drafts
            if isinstance(d, dict) and (name_of(d) in chosen or f"{d.get('id')}" in chosen)
        ]  # fmt: skip
    resources: list[Any] = list(_bundle_resources(context.get("results")))
    missing: set[str] = set()
    prefetch = request.get("prefetch")
    for key, value in prefetch.items() if isinstance(prefetch, dict) else ():
        if isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
            missing.add(str(key))
        elif value is not None:
            resources.append(value)
    return snapshot_from_resources(
        resources,
        knowledge,
        patient_id=patient_id if isinstance(patient_id, str) else None,
        encounter_id=encounter_id if isinstance(encounter_id, str) else None,
        draft_orders=drafts,
        tz=tz,
        now=now,
        missing=missing,
    )
