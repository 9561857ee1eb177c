"""GET /v1/users/<user_id>/traits: segments and features, no PII (the publish job's
gold.user_traits row holds none; only the fields named here are passed on)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from api.auth import require_scope
from api.errors import ApiError
from api.store import holder
from api.validation import check_user_id
from pipelines.serving import TRAITS, StoreUnavailable

bp = Blueprint("traits", __name__)

TRAIT_FIELDS = ("user_id", "segments", "primary_segment", "lifecycle_stage", "rfm_cell", "engagement_score",
                "best_send_hour", "cart_state", "cart_value", "top_categories", "in_holdout", "features_as_of",
                "content_version", "generated_at")


@bp.get("/v1/users/<user_id>/traits")
@require_scope("traits:read")
def get_traits(user_id: str) -> ResponseReturnValue:
    check_user_id(user_id)
    try:
        row = holder().guarded(lambda store: store.read(TRAITS, user_id))
    except StoreUnavailable:
        raise ApiError(503, "store_unavailable", "the serving store cannot be reached; try again",
                       headers={"Retry-After": "1"}) from None
    if row is None:
        raise ApiError(404, "unknown_user", "no traits for this user id")
    return jsonify({name: row.get(name) for name in TRAIT_FIELDS} | {"user_id": user_id})
