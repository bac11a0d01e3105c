"""Prometheus metrics: per-service request counts and latency (gunicorn multiprocess mode aware).

Under gunicorn, ``cds-service serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` before the workers
start, so every worker writes its samples there and ``/metrics`` sums them
(``prometheus_client.multiprocess``); ``cds_service.gunicorn_conf`` marks dead workers.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "cds_http_requests",
    "HTTP requests by route, service and status",
    ["route", "service", "status"],
)
LATENCY = Histogram(
    "cds_http_request_seconds",
    "HTTP request latency by route and service",
    ["route", "service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def init_metrics(app: Flask, services: frozenset[str]) -> None:
    """Time every request; label by route template and (known) service id only."""

    @app.before_request
    def _start() -> None:
        g.cds_started = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        started = g.pop("cds_started", None)
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        service = (request.view_args or {}).get("service_id", "")
        service = service if service in services else ""
        REQUESTS.labels(route, service, str(response.status_code)).inc()
        if started is not None:
            LATENCY.labels(route, service).observe(time.perf_counter() - started)
        return response


def render_metrics() -> Response:
    """The exposition text: all workers' samples in multiprocess mode, else this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        data = generate_latest(registry)
    else:
        data = generate_latest(REGISTRY)
    # content_type, not mimetype: Flask appends "; charset=utf-8" to a text/* mimetype,
    # and CONTENT_TYPE_LATEST already carries the charset
    return Response(data, content_type=CONTENT_TYPE_LATEST)
