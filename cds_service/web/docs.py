"""GET /rules (JSON, HTML for browsers) and GET /openapi.json (only the routes that exist)."""

from __future__ import annotations

import copy
import json
import re
from functools import cache
from importlib import resources
from typing import Any

import yaml
from flask import Blueprint, Response, current_app, jsonify, request

from cds_service.hooks.services import ServiceDef
from cds_service.render.rules_html import rules_html
from cds_service.render.rules_table import rules_json

bp = Blueprint("docs", __name__)
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>|\{[^}]+\}")


LOCALES = ("en", "zh-CN")


def _locale(default: str) -> str:
    """``?lang=`` (en or zh-CN), else the best of ``Accept-Language``, else ``default``."""
    asked = request.args.get("lang", "")
    for code in LOCALES:
        if asked.lower() == code.lower():
            return code
    return request.accept_languages.best_match(LOCALES) or default


@bp.get("/rules")
def rules() -> Response:
    """The rules for review (evidence, doses, gate): JSON, or HTML when the client prefers it."""
    state = current_app.extensions["cds"]
    locale = _locale(state.settings.locale)
    doc = rules_json(state.knowledge, locale)
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    if best == "text/html":
        page = rules_html(doc, state.knowledge.texts[doc["locale"]]["reviewer"])
        response = Response(page, mimetype="text/html")
    else:
        response = jsonify(doc)
    response.headers["Content-Language"] = doc["locale"]
    response.vary.update(("Accept", "Accept-Language"))
    return response


@cache
def _document() -> dict[str, Any]:
    text = resources.files("cds_service.web").joinpath("openapi.yaml").read_text("utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    # the request schema the service validates with, so the two cannot drift apart
    schema_text = resources.files("cds_service.hooks").joinpath(
        "schemas", "cds-request.schema.json"
    )
    schema = json.loads(schema_text.read_text("utf-8"))
    for key in ("$schema", "$id"):
        schema.pop(key, None)
    doc["components"]["schemas"]["CdsRequest"] = schema
    return doc


def _shape(path: str) -> str:
    return _PARAM.sub("{}", path)


def openapi_document(routes: list[str]) -> dict[str, Any]:
    """The hand-written OpenAPI document, limited to the paths the app serves."""
    doc = copy.deepcopy(_document())
    served = {_shape(r) for r in routes}
    doc["paths"] = {p: item for p, item in doc["paths"].items() if _shape(p) in served}
    return doc


_BUNDLE = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"const": "Bundle"}},
}
_CONTEXT_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string", "minLength": 1},
    "array": {"type": "array"},
    "object": {"type": "object"},
    "Bundle": _BUNDLE,
}


def _request_schema(service: ServiceDef) -> dict[str, Any]:
    """The CDS request schema narrowed to one service: its hook and its context fields."""
    context = {
        "type": "object",
        "required": [f.name for f in service.context if f.required],
        "properties": {f.name: _CONTEXT_TYPES[f.type] for f in service.context},
    }
    narrowed = {"properties": {"hook": {"const": service.hook}, "context": context}}
    return {"allOf": [{"$ref": "#/components/schemas/CdsRequest"}, narrowed]}


def per_service(doc: dict[str, Any], services: dict[str, ServiceDef], auth: str) -> dict[str, Any]:
    """``doc`` with one path per CDS service (its own hook and context: a request valid for one
    service is not valid for another), and without security requirements when auth is off."""
    paths: dict[str, Any] = {}
    for path, item in doc["paths"].items():
        if "{id}" not in path:
            paths[path] = item
            continue
        for sid, service in services.items():
            concrete = copy.deepcopy(item)
            for operation in concrete.values():
                operation["parameters"] = [
                    p
                    for p in operation.get("parameters", [])
                    if p.get("$ref", "").split("/")[-1] != "serviceId"
                ]
                if not operation["parameters"]:
                    del operation["parameters"]
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                if body is not None and path == "/cds-services/{id}":
                    body["schema"] = _request_schema(service)
            paths[path.replace("{id}", sid)] = concrete
    doc["paths"] = paths
    if auth == "off":  # nothing is checked: say so rather than promise a 401
        for item in paths.values():
            for operation in item.values():
                operation.pop("security", None)
    return doc


@bp.get("/openapi.json")
def openapi() -> Response:
    """GET /openapi.json."""
    routes = [rule.rule for rule in current_app.url_map.iter_rules()]
    state = current_app.extensions["cds"]
    doc = per_service(openapi_document(routes), state.services, state.settings.auth)
    body = json.dumps(doc, ensure_ascii=False)
    return Response(body, mimetype="application/json")
