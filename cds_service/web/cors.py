"""CORS for browser CDS clients: allowed origins from ``CDS_CORS_ORIGINS``, preflight included."""

from __future__ import annotations

from flask import Flask, Response, request

ALLOW_METHODS = "GET, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, Accept-Language"
MAX_AGE = "600"


def init_cors(app: Flask, origins: tuple[str, ...]) -> None:
    """Add CORS headers for allowed origins (``*`` allows any); others get none."""
    allowed = frozenset(o.rstrip("/") for o in origins)

    @app.after_request
    def _cors(response: Response) -> Response:
        origin = request.headers.get("Origin")
        if not origin or not allowed:
            return response
        if "*" in allowed:
            response.headers["Access-Control-Allow-Origin"] = "*"
        elif origin.rstrip("/") in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.vary.add("Origin")
        else:
            return response
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
            response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            response.headers["Access-Control-Max-Age"] = MAX_AGE
        return response
