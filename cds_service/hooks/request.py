"""CDS Hooks request checks (body, JSON shape, hook context) and card locale negotiation."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator

from cds_service.clinical import numbers
from cds_service.hooks.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from cds_service.hooks.services import ServiceDef

LOCALES = {"en": "en", "zh": "zh-CN", "zh-cn": "zh-CN", "zh-sg": "zh-CN", "zh-hans": "zh-CN"}
_JSON_TYPES = {"string": str, "array": list, "object": dict, "Bundle": dict}


@cache
def _validator(name: str) -> Draft202012Validator:
    text = resources.files("cds_service.hooks").joinpath("schemas", name).read_text("utf-8")
    return Draft202012Validator(json.loads(text))


def schema_errors(name: str, document: Any) -> list[str]:
    """Every error of ``document`` against ``schemas/<name>`` as ``path: message``."""
    out = []
    for err in sorted(_validator(name).iter_errors(document), key=lambda e: list(e.path)):
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        out.append(f"{path}: {err.message}")
    return out


def check_content_type(content_type: str | None) -> None:
    """Reject a body that is not declared as JSON.

    :raises UnsupportedMediaType: the content type is not JSON.
    """
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime != "application/json" and not mime.endswith("+json"):
        raise UnsupportedMediaType("Content-Type must be application/json")


def check_body(content_type: str | None, length: int | None, limit: int) -> None:
    """Reject an oversized or non-JSON body before reading it.

    :raises PayloadTooLarge: the declared length exceeds the limit.
    :raises UnsupportedMediaType: the content type is not JSON.
    """
    check_size(length, limit)
    check_content_type(content_type)


def check_size(length: int | None, limit: int) -> None:
    """Reject a body whose declared length exceeds the limit.

    :raises PayloadTooLarge: too large.
    """
    if length is not None and length > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")


def parse_request(raw: bytes, service: ServiceDef) -> dict[str, Any]:
    """The request body as a dict, checked against the spec shape and the service's hook.

    :raises BadRequest: malformed JSON, a missing or mistyped field, or a hook mismatch.
    """
    try:
        body = numbers.loads(raw)  # decimals keep their reported precision
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest("Request body is not valid JSON", diagnostics=str(exc)) from None
    errors = schema_errors("cds-request.schema.json", body)
    if errors:
        raise BadRequest("Request is not a CDS Hooks request", diagnostics="; ".join(errors[:5]))
    if body["hook"] != service.hook:
        raise BadRequest(
            f"Service {service.id} answers the {service.hook} hook, not {body['hook']}",
            expression=["hook"],
        )
    context = body["context"]
    for f in service.context:
        value, where = context.get(f.name), [f"context.{f.name}"]
        if value is None:
            if f.required:
                raise BadRequest(f"context.{f.name} is required", expression=where)
            continue
        if not _has_type(value, f.type):
            raise BadRequest(f"context.{f.name} must be a {f.type}", expression=where)
    return dict(body)


def _has_type(value: Any, kind: str) -> bool:
    if not isinstance(value, _JSON_TYPES[kind]):
        return False
    if kind == "Bundle":
        return bool(value.get("resourceType") == "Bundle")
    return value != "" if kind == "string" else True


def negotiate_locale(header: str | None, default: str) -> str:
    """The card locale from ``Accept-Language`` (q-values honoured), else ``default``."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag and quality > 0:
            ranked.append((-quality, i, tag.strip().lower()))
    for _, _, tag in sorted(ranked):
        if tag == "*":
            return default
        for prefix in (tag, "-".join(tag.split("-")[:2]), tag.split("-")[0]):
            if prefix in LOCALES and (prefix != "zh" or not _traditional(tag)):
                return LOCALES[prefix]
    return default


def _traditional(tag: str) -> bool:
    return any(p in ("hant", "tw", "hk", "mo") for p in tag.split("-")[1:])
