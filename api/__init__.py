"""The content API: a Flask application factory (DESIGN.md, "The content row").

Runs on small web hosts without Spark: nothing under `api` may import pyspark.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify
from flask.typing import ResponseReturnValue

from pipelines.contracts.events import CONTRACT_VERSION


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(TAILOR_ENV="local")
    if test_config:
        app.config.update(test_config)

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify(status="ok", contract_version=CONTRACT_VERSION)

    @app.errorhandler(404)
    def not_found(_error: Exception) -> ResponseReturnValue:
        return jsonify(error="not_found", message="no such endpoint"), 404

    @app.errorhandler(405)
    def method_not_allowed(_error: Exception) -> ResponseReturnValue:
        return jsonify(error="method_not_allowed", message="method not allowed on this endpoint"), 405

    return app
