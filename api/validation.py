"""Checks on what a request carries: ids, JSON bodies. Each failure is a 4xx ApiError."""

from __future__ import annotations

import io
import json
import re
from typing import Any

from flask import current_app, request
from werkzeug.datastructures import MultiDict

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


def _chunked() -> bool:
    return "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def body_bytes() -> bytes:
    """The request body, read at most once: 413 when it is over MAX_CONTENT_LENGTH, 411
    when it is chunked and the server cannot say where it ends.

    A chunked body has no Content-Length. gunicorn (and Werkzeug's own server) de-chunk it
    and say the stream ends (wsgi.input_terminated); Werkzeug would then stop reading at
    the limit and hand over the first `limit` bytes as the whole body. So such a body is
    read here, one byte past the limit, to tell a body at the limit from a longer one. A
    server that does not set wsgi.input_terminated gives no safe way to find the end of a
    chunked body, and Werkzeug would read it as empty: 411, so the client sends it again
    with a Content-Length, rather than a body taken for empty."""
    # Kept with the request, not on g: an outer app context can outlive several requests.
    if "tailor.body" in request.environ:
        body: bytes = request.environ["tailor.body"]
        return body
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if limit is not None and (request.content_length or 0) > limit:
        raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    if request.content_length is not None:
        body = request.get_data(cache=True)
    elif not request.environ.get("wsgi.input_terminated"):
        if _chunked():
            raise ApiError(411, "length_required", "this server cannot read a chunked body to its end: send the "
                           "body with a Content-Length")
        body = b""  # no length and no chunks: no body (what Werkzeug reads too)
    else:
        chunks: list[bytes] = []
        size = 0
        while limit is None or size <= limit:
            chunk = request.input_stream.read(65536 if limit is None else limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if limit is not None and size > limit:
            raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
        body = b"".join(chunks)
    request.environ["tailor.body"] = body
    return body


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def form_body() -> MultiDict[str, str]:
    """The request's form fields (urlencoded or multipart, as RFC 8058 allows both), parsed
    from `body_bytes()`: the same 411 and 413 as a JSON body, never a form cut short at the
    limit. Any other content type gives an empty form. Use this, never `request.form`."""
    if request.mimetype not in FORM_TYPES:
        return MultiDict()
    data = body_bytes()
    parser = request.make_form_data_parser()
    _, form, files = parser.parse(io.BytesIO(data), request.mimetype, len(data), request.mimetype_params)
    for _, stored in files.items(multi=True):  # no view takes files: drop any a multipart body carried
        stored.close()
    fields: MultiDict[str, str] = form
    return fields


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
    # No query string (the usual content read): no query to parse.
    value = request.args.get(name, "false") if request.query_string else "false"
    if value not in ("true", "false"):
        raise ApiError(400, "bad_parameter", f"{name} must be true or false")
    return value == "true"
