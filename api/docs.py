"""/openapi.json and /docs: the OpenAPI 3.1 document and a page that lists it (rendered
here, no script from elsewhere: the page works on a host without internet access)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.admin import html_page, templates
from api.openapi import document

bp = Blueprint("docs", __name__)
DOCS_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
               "frame-ancestors 'none'")


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return jsonify(document(current_app.extensions["tailor"]["config"]))


@bp.get("/docs")
def docs_page() -> ResponseReturnValue:
    spec = document(current_app.extensions["tailor"]["config"])
    html = templates().get_template("api_docs.html").render(spec=spec)
    return html_page(html, DOCS_POLICY)
