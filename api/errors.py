"""Every error the API gives is JSON: `{"error": "<code>", "message": "..."}`.

Views raise `ApiError`; Werkzeug's own HTTP errors (404, 405, 413, 429, a body that is
not JSON) are turned into the same shape here, so an email tool or a subscriber's
browser never gets an HTML error page.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger("tailor.api")

# Werkzeug's exception -> our code, for the statuses the API gives without raising ApiError.
_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 406: "not_acceptable", 410: "gone", 411: "length_required",
          413: "body_too_large", 415: "unsupported_media_type", 429: "rate_limited"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None,
                   **extra: Any) -> Response:
    response = jsonify(error=code, message=message, **extra)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers, **error.extra)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        message = {404: "no such endpoint", 405: "method not allowed on this endpoint",
                   413: "request body is larger than the limit"}.get(status, error.description or "")
        response = error_response(status, _CODES.get(status, "error"), message)
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        # The class only: a message may quote a request value (a user id, an email address).
        log.error("unhandled error: %s", type(error).__name__, exc_info=app.debug)
        return error_response(500, "internal_error", "the server failed to answer; the error is logged")
