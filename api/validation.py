"""Checks on what a request carries: ids, JSON bodies. Each failure is a 4xx ApiError."""

from __future__ import annotations

import json
import re
from typing import Any

from flask import current_app, request

from api.errors import ApiError

# The event contract allows user ids up to 128 characters; these characters keep them
# safe as store keys and in URLs.
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$"
_USER_ID = re.compile(USER_ID_PATTERN)


def check_user_id(user_id: Any, where: str = "user_id") -> str:
    if not isinstance(user_id, str) or not _USER_ID.match(user_id):
        raise ApiError(400, "bad_user_id", f"{where} must be 1-128 of A-Z a-z 0-9 . _ : @ + -, starting with a "
                       "letter or digit")
    return user_id


def body_bytes() -> bytes:
    """The request body, or 413 when it is over MAX_CONTENT_LENGTH.

    A chunked body has no Content-Length. gunicorn de-chunks it and says the stream ends
    (wsgi.input_terminated); Werkzeug would then stop reading at the limit and hand over the
    first `limit` bytes as the whole body. So such a body is read here, one byte past the
    limit, to tell a body at the limit from a longer one."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and (request.content_length or 0) > limit:
        raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    if limit is None or request.content_length is not None or not request.environ.get("wsgi.input_terminated"):
        return request.get_data(cache=True)
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = request.input_stream.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    return b"".join(chunks)


def json_body() -> dict[str, Any]:
    """The request's JSON object, or 400/413/415 with a JSON error."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "send a JSON body with Content-Type: application/json")
    try:
        body = json.loads(body_bytes())
    except ValueError:  # UnicodeDecodeError is one too
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    return body


def flag(name: str) -> bool:
    value = request.args.get(name, "false")
    if value not in ("true", "false"):
        raise ApiError(400, "bad_parameter", f"{name} must be true or false")
    return value == "true"
