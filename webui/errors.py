"""Errors: every API error is JSON ``{"error": {"status", "code", "message"}}``, never a stack trace.

Pages get the same message in an HTML page. Unexpected exceptions are logged
with their traceback on the server and answered with a generic 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, make_response, render_template, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from retrieval.query import QueryError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a message that says what to do."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
    414: "url_too_long", 415: "unsupported_type", 422: "unprocessable", 429: "too_many_requests",
    431: "headers_too_large", 500: "internal_error", 503: "unavailable",
}

HTTP_HINTS = {
    404: "there is nothing at this address",
    405: "this address does not accept that method",
    413: "the upload is larger than the server accepts",
}


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    """The error as JSON (the API, non-GET requests, clients asking for JSON) or as an HTML page."""
    if _wants_json():
        resp = jsonify({"error": {"status": status, "code": code, "message": message}})
    else:
        resp = make_response(render_template("error.html", status=status, message=message))
    return resp, status


def _wants_json() -> bool:
    """HTML only for a page a browser navigates to (GET/HEAD); everything else gets JSON."""
    return (request.path.startswith("/api/") or request.method not in ("GET", "HEAD")
            or request.accept_mimetypes.best == "application/json")


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        resp, status = error_response(exc.status, exc.code, exc.message)
        if getattr(exc, "retry_after", None):
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp, status

    @app.errorhandler(QueryError)
    def _query_error(exc: QueryError):  # raised by the query API with its own status and code
        return error_response(exc.status, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        status = exc.code or 500
        message = HTTP_HINTS.get(status, exc.description or exc.name)
        if status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"the upload is over the {limit / 1e6:g} MB limit; use a smaller file" if limit else message
        resp, status = error_response(status, HTTP_CODES.get(status, "error"), message)
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            resp.headers["Allow"] = ", ".join(exc.valid_methods)
        return resp, status

    @app.errorhandler(SQLAlchemyError)
    def _db_error(exc: SQLAlchemyError):
        log.error("database error: %s", exc)
        return error_response(503, "database_unavailable",
                              "the catalog database is not reachable; check DATABASE_URL and that the server runs")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "something went wrong on the server; the error was logged")
