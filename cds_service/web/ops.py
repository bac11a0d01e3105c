"""Liveness, readiness and metrics endpoints."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from cds_service.web.metrics import render_metrics

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the database answers and the mappings and services are loaded."""
    st = current_app.extensions["cds"]
    checks = {
        "database": bool(st.store.ping()),
        "mappings": bool(st.knowledge.rules),
        "services": bool(st.services),
    }
    ready = all(checks.values())
    response = jsonify(
        {"status": "ready" if ready else "unavailable", "checks": checks,
         "mappings_version": st.knowledge.version}
    )  # fmt: skip
    response.status_code = 200 if ready else 503
    return response


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus exposition."""
    return render_metrics()
