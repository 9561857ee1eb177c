"""Content reads: what the email tool calls while it renders a campaign.

    GET  /v1/content/<user_id>[?strict=true]     the row; ETag = content_version; 304, 410
    POST /v1/content:batchGet {"user_ids": [...]}  up to api.max_batch_ids rows, one store round trip per kind

A content read never answers 5xx: when the store fails, the row is fallback content with
`store_unavailable` (rows.py).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request
from flask.typing import ResponseReturnValue

from api.auth import require_scope
from api.errors import ApiError, error_response
from api.rows import STORE_UNAVAILABLE, Answer, encode_row, resolve
from api.validation import check_user_id, flag, json_body

bp = Blueprint("content", __name__)


def _gone(answer: Answer) -> Response:
    response = error_response(410, "gone", f"do not send: the person is {answer.reason}", reason=answer.reason,
                              user_id=answer.user_id)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/v1/content/<user_id>")
@require_scope("content:read")
def get_content(user_id: str) -> ResponseReturnValue:
    check_user_id(user_id)
    answer = resolve([user_id], strict=flag("strict"))[0]
    if answer.status == 410:
        return _gone(answer)
    if answer.status == 404:
        return error_response(404, "unknown_user", "no content for this user id (strict)")
    response = Response(answer.text, mimetype="application/json")
    if answer.reason == STORE_UNAVAILABLE:
        response.headers["Cache-Control"] = "no-store"
        return response
    response.set_etag(answer.etag or "none")
    max_age = current_app.extensions["tailor"]["config"].api.cache_max_age_s
    response.headers["Cache-Control"] = f"private, max-age={max_age}"
    if request.if_none_match.contains(answer.etag or "none"):
        response.status_code = 304
        response.set_data(b"")
    return response


@bp.post("/v1/content:batchGet")
@require_scope("content:read")
def batch_get() -> ResponseReturnValue:
    body = json_body()
    user_ids = body.get("user_ids")
    limit = current_app.extensions["tailor"]["config"].api.max_batch_ids
    if not isinstance(user_ids, list) or not user_ids:
        raise ApiError(400, "bad_request", "user_ids must be a non-empty array of user ids")
    if len(user_ids) > limit:
        raise ApiError(400, "batch_too_large", f"at most {limit} user ids per batch, not {len(user_ids)}")
    for position, user_id in enumerate(user_ids):
        check_user_id(user_id, f"user_ids[{position}]")
    unknown = sorted(set(body) - {"user_ids", "strict"})
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field {unknown[0]!r}; fields: strict, user_ids")
    strict = body.get("strict", False)
    if not isinstance(strict, bool):
        raise ApiError(400, "bad_request", "strict must be true or false")
    answers = resolve(user_ids, strict=strict)
    gone = [{"user_id": answer.user_id, "reason": answer.reason} for answer in answers if answer.status == 410]
    not_found = [answer.user_id for answer in answers if answer.status == 404]
    # Put together from each row's encoded text (rows.py): no second encoding of 100 rows.
    text = "".join(('{"rows":[', ",".join(answer.text for answer in answers if answer.status == 200),
                    '],"gone":', encode_row(gone), ',"not_found":', encode_row(not_found), "}"))
    return Response(text, mimetype="application/json")
