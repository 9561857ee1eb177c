"""JSON logs, one object a line, with a request id and no PII.

Each request gets an id (the caller's X-Request-Id when it is a plain token, else a new
one), echoed in the response and on every log line of the request. The access line
names the route's pattern (`/v1/content/<user_id>`), never the path, so user ids and
preference tokens stay out of the logs; the API key appears as its key id only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, has_request_context, request

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
access_log = logging.getLogger("tailor.api.access")
_FIELDS = ("route", "method", "status", "duration_ms", "key_id")
_encode = json.JSONEncoder(separators=(",", ":")).encode  # built once: json.dumps builds one per call


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        if has_request_context():
            entry["request_id"] = g.get("request_id")
        fields = record.__dict__
        for name in _FIELDS:
            if name in fields:
                entry[name] = fields[name]
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return _encode(entry)


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr for the tailor.api loggers (gunicorn's own logs are left alone)."""
    logger = logging.getLogger("tailor.api")
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def _start() -> None:
    given = request.headers.get("X-Request-Id", "")
    g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    g.log_started = time.perf_counter()


def _finish(response: Response) -> Response:
    state = g._get_current_object()
    response.headers["X-Request-Id"] = state.get("request_id", "")
    if access_log.isEnabledFor(logging.INFO):
        api_key = state.get("api_key")
        rule = request.url_rule
        fields = {"route": rule.rule if rule is not None else "unmatched", "method": request.method,
                  "status": response.status_code,
                  "duration_ms": round((time.perf_counter() - state.get("log_started", time.perf_counter())) * 1000, 2),
                  "key_id": api_key.key_id if api_key is not None else None}
        # The record Logger.info would make and handle, without its walk up the stack for
        # the caller's file and line (no line shows them).
        access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, "request", (), None,
                                                func="_finish", extra=fields))
    return response


def init_app(app: Flask) -> None:
    configure_logging()
    app.before_request(_start)
    app.after_request(_finish)
