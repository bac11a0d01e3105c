"""Prefetch templates to relative FHIR URLs: ``{{context.X}}`` and user tokens, URL-encoded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

TOKEN = re.compile(r"\{\{\s*([A-Za-z0-9_.]+)\s*\}\}")

#: user tokens of CDS Hooks 2.0 §prefetch tokens, from ``context.userId`` = ``Type/id``
USER_TOKENS = {
    "userPractitionerId": "Practitioner",
    "userPractitionerRoleId": "PractitionerRole",
    "userPatientId": "Patient",
    "userRelatedPersonId": "RelatedPerson",
}


def token_values(context: Mapping[str, Any]) -> dict[str, str]:
    """Every token a context can fill: its primitive root fields and the user tokens."""
    values: dict[str, str] = {}
    for name, value in context.items():
        if isinstance(value, bool):
            values[f"context.{name}"] = "true" if value else "false"
        elif isinstance(value, str | int | float) and str(value) != "":
            values[f"context.{name}"] = str(value)
    user = context.get("userId")
    if isinstance(user, str) and "/" in user:
        rtype, _, rid = user.rpartition("/")
        rtype = rtype.rsplit("/", 1)[-1]
        for token, wanted in USER_TOKENS.items():
            if rtype == wanted and rid:
                values[token] = rid
    return values


def render(template: str, values: Mapping[str, str]) -> str | None:
    """The template with every token replaced (URL-encoded), or None if one has no value."""
    missing = False

    def fill(match: re.Match[str]) -> str:
        nonlocal missing
        value = values.get(match.group(1))
        if value is None:
            missing = True
            return ""
        return quote(value, safe="")

    url = TOKEN.sub(fill, template)
    return None if missing else url.lstrip("/")
