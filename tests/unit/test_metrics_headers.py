"""GET /metrics answers with the Prometheus exposition Content-Type, charset given once."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from cds_service.app import create_app


def test_metrics_content_type_is_the_exposition_type_with_one_charset() -> None:
    app = create_app({"auth": "off", "database_url": "sqlite://"})
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 200
    content_type = resp.headers["Content-Type"]
    assert content_type == CONTENT_TYPE_LATEST
    assert content_type.startswith("text/plain; version=")
    assert content_type.count("charset") == 1
    assert "cds_http_requests" in resp.get_data(as_text=True)
