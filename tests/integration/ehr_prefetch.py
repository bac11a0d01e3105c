"""What an EHR sends as prefetch: the discovery templates with their tokens filled, run on its
FHIR server. Written as the CDS Hooks spec (and the Sandbox) describe it, not from our code:

- tokens are ``{{context.<root primitive field>}}`` and the user tokens derived from
  ``context.userId`` (``Practitioner/abc`` -> ``{{userPractitionerId}}``);
- a template whose tokens cannot all be filled is not sent (the key is absent: "the CDS Client
  MUST NOT send any prefetch template key that it chooses not to satisfy");
- ``includes=False``: an EHR that limits prefetch to plain reads and searches drops
  ``_include`` from the query (the service then reads the references itself).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import requests

TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")
USER = {"Practitioner": "userPractitionerId", "PractitionerRole": "userPractitionerRoleId",
        "Patient": "userPatientId", "RelatedPerson": "userRelatedPersonId"}  # fmt: skip


def tokens(context: dict[str, Any]) -> dict[str, str]:
    """The values an EHR fills in: root primitive context fields and the user tokens."""
    out = {f"context.{k}": str(v) for k, v in context.items() if isinstance(v, str | int | float)}
    user = context.get("userId")
    if isinstance(user, str) and user.count("/") == 1:
        kind, rid = user.split("/")
        if kind in USER:
            out[USER[kind]] = rid
    return out


def fill(template: str, context: dict[str, Any]) -> str | None:
    """The relative FHIR URL, or None when a token has no value (the key is not sent)."""
    values = tokens(context)
    names = TOKEN.findall(template)
    if any(n not in values for n in names):
        return None
    return TOKEN.sub(lambda m: quote(values[m.group(1)], safe=""), template)


def without_include(url: str) -> str:
    """The query with its ``_include`` parameters removed."""
    path, _, query = url.partition("?")
    kept = [p for p in query.split("&") if p and not p.startswith("_include=")]
    return f"{path}?{'&'.join(kept)}" if kept else path


def ehr_prefetch(
    base: str, templates: dict[str, str], context: dict[str, Any], *, includes: bool = True
) -> dict[str, Any]:
    """Every template the context can fill, run against ``base``: key -> the server's answer."""
    out: dict[str, Any] = {}
    for key, template in templates.items():
        url = fill(template, context)
        if url is None:
            continue
        if not includes:
            url = without_include(url)
        resp = requests.get(f"{base}/{url}", headers={"Accept": "application/fhir+json"}, timeout=10)
        assert resp.status_code in (200, 404), (key, resp.status_code, resp.text[:300])
        out[key] = resp.json() if resp.status_code == 200 else None  # a read of nothing: null
    return out
