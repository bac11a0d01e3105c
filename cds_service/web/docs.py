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
