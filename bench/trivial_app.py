"""The benchmark's comparison endpoint (bench/bench_http.py), never part of the product.

A Flask app with the product's route shape: ``POST /cds-services/<id>`` reads the body,
parses it with ``json.loads`` (the same JSON the product parses), checks it is an object
with a ``hook`` and answers one fixed card. ``GET /healthz`` for start-up polling. It runs
under the same gunicorn settings as ``cds-service serve`` (gthread, same worker and thread
counts, same config module), so the ratio of the two isolates the product's own work:
request checks, prefetch policy, extraction, rules, rendering and validation of the
suggested resources, and recording the cards.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, jsonify, request

CARD: dict[str, Any] = {
    "uuid": "7f0e6f1a-2b9c-4c4e-9d3a-5b8f1c2d3e4f",
    "summary": "Serum Mg 1.4 mg/dL: below the reference range (1.7-2.5 mg/dL)",
    "indicator": "info",
    "detail": "Fixed card of the benchmark's trivial endpoint.",
    "source": {"label": "bench", "topic": {"system": "urn:bench", "code": "fixed"}},
}

app = Flask(__name__)


@app.get("/healthz")
def healthz() -> Response:
    """Liveness for the benchmark's start-up polling."""
    return jsonify({"status": "ok"})


@app.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response | tuple[Response, int]:
    """Parse the JSON body and answer one fixed card."""
    body = json.loads(request.get_data(cache=False))
    if not isinstance(body, dict) or "hook" not in body:
        return jsonify({"resourceType": "OperationOutcome"}), 400
    return jsonify({"cards": [CARD]})
