"""Typed HTTP errors → status code + OperationOutcome JSON; never a stack trace."""

from __future__ import annotations

import logging
import traceback
from typing import Any, ClassVar

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

# FHIR IssueType per HTTP status for errors werkzeug raises itself (unknown path, 405, 413)
_ISSUE_CODES = {400: "invalid", 401: "login", 404: "not-found", 405: "not-supported",
                412: "processing", 413: "too-costly", 415: "not-supported"}  # fmt: skip


class HookError(Exception):
    """An error the service answers with an OperationOutcome and a fixed status."""

    status: ClassVar[int] = 500
    issue_code: ClassVar[str] = "exception"

    def __init__(
        self, message: str, *, diagnostics: str | None = None, expression: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics
        self.expression = expression or []

    def headers(self) -> dict[str, str]:
        """Extra response headers for this error."""
        return {}


class BadRequest(HookError):
    """400: malformed JSON, a missing or wrong field, a hook that does not match the service."""

    status, issue_code = 400, "invalid"


class Unauthorized(HookError):
    """401: the caller is not authenticated (the body never says why)."""

    status, issue_code = 401, "login"

    def headers(self) -> dict[str, str]:
        """Ask for a bearer token."""
        return {"WWW-Authenticate": "Bearer"}


class ServiceNotFound(HookError):
    """404: no service with this id."""

    status, issue_code = 404, "not-found"


class PreconditionFailed(HookError):
    """412: required data could be neither read from prefetch nor fetched."""

    status, issue_code = 412, "processing"


class PayloadTooLarge(HookError):
    """413: the request body exceeds ``CDS_MAX_BODY_BYTES``."""

    status, issue_code = 413, "too-costly"


class UnsupportedMediaType(HookError):
    """415: the body is not JSON."""

    status, issue_code = 415, "not-supported"


def operation_outcome(
    code: str,
    text: str,
    *,
    diagnostics: str | None = None,
    expression: list[str] | None = None,
    severity: str = "error",
) -> dict[str, Any]:
    """An OperationOutcome with one issue (no empty members)."""
    issue: dict[str, Any] = {"severity": severity, "code": code, "details": {"text": text}}
    if diagnostics:
        issue["diagnostics"] = diagnostics
    if expression:
        issue["expression"] = expression
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def outcome_response(status: int, outcome: dict[str, Any], headers: dict[str, str]) -> Response:
    """A JSON response carrying an OperationOutcome."""
    response = jsonify(outcome)
    response.status_code = status
    response.headers.update(headers)
    return response


def _hook_error(exc: HookError) -> Response:
    body = operation_outcome(
        exc.issue_code, exc.message, diagnostics=exc.diagnostics, expression=exc.expression
    )
    return outcome_response(exc.status, body, exc.headers())


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    body = operation_outcome(_ISSUE_CODES.get(status, "exception"), exc.name)
    headers = dict(exc.get_headers())
    headers.pop("Content-Type", None)
    return outcome_response(status, body, headers)


def _unexpected(exc: Exception) -> Response:
    # the frames, not the message: a message may quote request data (identifiers)
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unhandled error %s\n%s", type(exc).__name__, frames)
    body = operation_outcome("exception", "Internal error")
    return outcome_response(500, body, {})


def _too_deep(exc: RecursionError) -> Response:
    # only input nested deeper than Python recursion reaches this (JSON parsing has its own)
    log.warning("request rejected: structure nested too deeply")
    body = operation_outcome("structure", "Request structure nested too deeply")
    return outcome_response(400, body, {})


def register_error_handlers(app: Flask) -> None:
    """Turn every error into an OperationOutcome response."""
    app.register_error_handler(HookError, _hook_error)
    app.register_error_handler(RecursionError, _too_deep)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected)
