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

from cds_service.render.rules_html import rules_html
from cds_service.render.rules_table import rules_json

bp = Blueprint("docs", __name__)
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>|\{[^}]+\}")


@bp.get("/rules")
def rules() -> Response:
    """The rules with evidence and citations: JSON, or HTML when the client prefers it."""
    doc = rules_json(current_app.extensions["cds"].knowledge)
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    if best == "text/html":
        return Response(rules_html(doc), mimetype="text/html")
    return jsonify(doc)


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


@bp.get("/openapi.json")
def openapi() -> Response:
    """GET /openapi.json."""
    routes = [rule.rule for rule in current_app.url_map.iter_rules()]
    body = json.dumps(openapi_document(routes), ensure_ascii=False)
    return Response(body, mimetype="application/json")
