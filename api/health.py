"""/healthz (the process answers), /readyz (the store answers; both lanes' circuits), /metrics (Prometheus)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify
from flask.typing import ResponseReturnValue

from api.metrics import metrics_response
from api.store import holder, probe_consent_lane
from pipelines.contracts.events import CONTRACT_VERSION
from pipelines.serving import DEFAULT, StoreUnavailable

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return jsonify(status="ok", contract_version=CONTRACT_VERSION)


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """Ready follows the read lane only: a node whose consent circuit is not closed still
    serves reads, so it stays in the balancer (200, "degraded"); taking every node out
    because changes fail would stop the reads too. A half-open consent circuit is tried
    here (probe_consent_lane), so it closes once the store takes writes again."""
    config = current_app.extensions["tailor"]["config"]
    store_holder = holder()
    try:
        # A real read through the breaker: an open circuit is "not ready" without a call.
        store_holder.guarded(lambda store: store.read(DEFAULT, f"global:{config.publish.default_locale}"))
        ready = True
    except StoreUnavailable:
        ready = False
    probe_consent_lane(store_holder)
    consent_circuit = store_holder.consent_breaker.state
    status = ("ready" if consent_circuit == "closed" else "degraded") if ready else "unavailable"
    body = jsonify(status=status, store=config.serving.type, circuit=store_holder.breaker.state,
                   consent_circuit=consent_circuit)
    return body if ready else (body, 503)


@bp.get("/metrics")
def prometheus_metrics() -> ResponseReturnValue:
    return metrics_response()
