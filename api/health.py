"""/healthz (the process answers), /readyz (the store answers), /metrics (Prometheus)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.metrics import metrics_response
from api.store import holder
from pipelines.contracts.events import CONTRACT_VERSION
from pipelines.serving import DEFAULT, StoreUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok", contract_version=CONTRACT_VERSION)


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    config = current_app.extensions["tailor"]["config"]
    store_holder = holder()
    try:
        # A real read through the breaker: an open circuit is "not ready" without a call.
        store_holder.guarded(lambda store: store.read(DEFAULT, f"global:{config.publish.default_locale}"))
    except StoreUnavailable:
        return jsonify(status="unavailable", store=config.serving.type, circuit=store_holder.breaker.state), 503
    return jsonify(status="ready", store=config.serving.type, circuit=store_holder.breaker.state)


@bp.get("/metrics")
def prometheus_metrics() -> ResponseReturnValue:
    return metrics_response()
