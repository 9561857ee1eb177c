"""Admin endpoints (scope `admin`):

    DELETE /v1/users/<user_id>    erasure: suppressed at once, an erasure_request event, audit;
                                  the next publish removes the person's rows
    GET    /v1/preview/<user_id>  the row rendered into a sample email (conf/templates/preview_email.html)
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, jsonify
from flask.typing import ResponseReturnValue
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api import consent
from api.auth import require_scope
from api.errors import error_response
from api.rows import resolve
from api.validation import check_user_id
from pipelines.config import bundled_conf_dir

bp = Blueprint("admin", __name__)
# The preview shows catalogue data: no script runs, no form posts, no other site frames it.
# Images load because a template in conf_dir may show the products' pictures.
PREVIEW_POLICY = ("default-src 'none'; img-src https: http:; style-src 'unsafe-inline'; base-uri 'none'; "
                  "form-action 'none'; frame-ancestors 'none'")
_TABS_AND_NEWLINES = re.compile(r"[\t\n\r]")
_CONTROLS_AND_SPACE = "".join(chr(code) for code in range(0x21))


@bp.delete("/v1/users/<user_id>")
@require_scope("admin")
def erase(user_id: str) -> ResponseReturnValue:
    check_user_id(user_id)
    request_id = f"erasure-{uuid.uuid4()}"
    actor = f"api-key:{g.api_key.key_id}"
    before = consent.read_suppression(user_id)
    consent.suppress(user_id, "erased")
    consent.delete_preferences(user_id)
    consent.emit([consent.make_event("erasure_request", user_id, "backoffice",
                                     {"request_id": request_id, "actor": actor})])
    consent.audit("erasure_requested", user_id, actor, before={"suppression": (before or {}).get("reason")},
                  after={"suppression": "erased"})
    return jsonify(user_id=user_id, request_id=request_id, status="erasure_requested"), 202


def safe_url(value: Any) -> str | None:
    """`value` if it is an absolute http(s) URL, else None. Product links come from the
    catalogue feed: a javascript: URL in an href would run in the page. The URL is first
    cleaned as a browser cleans it (tabs and newlines anywhere, control characters and spaces
    around it), so " JaVa\\tScript:..." is seen as javascript:."""
    if not isinstance(value, str):
        return None
    url = _TABS_AND_NEWLINES.sub("", value).strip(_CONTROLS_AND_SPACE)
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed host, such as an unclosed IPv6 bracket
        return None
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def html_page(html: str, policy: str, status: int = 200) -> Response:
    response = Response(html, status=status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Every page the API serves says frame-ancestors 'none' in its policy; this says it to
    # browsers that predate it.
    response.headers["X-Frame-Options"] = "DENY"
    return response


def templates() -> Environment:
    environment: Environment | None = current_app.extensions["tailor"].get("templates")
    if environment is None:
        config = current_app.extensions["tailor"]["config"]
        folders = [str(Path(config.conf_dir) / "templates"), str(bundled_conf_dir() / "templates")]
        environment = Environment(loader=FileSystemLoader(folders), autoescape=select_autoescape(["html"]))
        environment.filters["safe_url"] = safe_url
        current_app.extensions["tailor"]["templates"] = environment
    return environment


@bp.get("/v1/preview/<user_id>")
@require_scope("admin")
def preview(user_id: str) -> ResponseReturnValue:
    check_user_id(user_id)
    answer = resolve([user_id])[0]
    if answer.status != 200 or answer.row is None:
        return error_response(410, "gone", f"no email for this person: {answer.reason}", reason=answer.reason)
    html = templates().get_template("preview_email.html").render(row=answer.row)
    response = html_page(html, PREVIEW_POLICY)
    response.headers["Cache-Control"] = "no-store"  # a person's name and products
    return response
