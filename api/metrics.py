"""Prometheus metrics (prometheus-client), one registry per app so that tests can build
many apps.

Under `tailor serve` (gunicorn, several worker processes) PROMETHEUS_MULTIPROC_DIR is set
before any worker starts (jobs/serve.py): prometheus-client then keeps every value in a
file per process in that directory, and `/metrics`, whichever worker answers, adds up
every process's files (MultiProcessCollector), the workers that have exited included.
Without the variable (tests, a single process) the app's own registry is served. The
variable is read once, when prometheus_client is imported: set it before that."""

from __future__ import annotations

import os
import time
from typing import Any

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("tailor_api_requests_total", "Requests by route and status",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("tailor_api_request_seconds", "Request latency by route", ["route"],
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
                                 registry=self.registry)
        self.fallbacks = Counter("tailor_api_fallbacks_total", "Content rows served as fallback, by reason",
                                 ["reason"], registry=self.registry)
        self.rows = Counter("tailor_api_content_rows_total", "Content rows answered (one per person asked, "
                            "batchGet included), by status: the base of the fallback share", ["status"],
                            registry=self.registry)
        self.gone = Counter("tailor_api_gone_total", "Content reads answered 410, by reason", ["reason"],
                            registry=self.registry)
        self.store_errors = Counter("tailor_api_store_errors_total", "Serving store calls that failed or were "
                                    "refused by the open circuit", registry=self.registry)
        self.cache = Counter("tailor_api_cache_lookups_total", "In-process content cache lookups (hit rate: "
                             "hit / all)", ["result"], registry=self.registry)
        # livemax: across workers, 1 while any live worker's circuit is not closed (each has its own breakers).
        self.circuit_open = Gauge("tailor_api_circuit_open", "1 while a lane's circuit is open or half-open "
                                  "(from opening until a trial succeeds), by lane: read or consent", ["lane"],
                                  multiprocess_mode="livemax", registry=self.registry)
        self._children: dict[tuple[object, tuple[str, ...]], Any] = {}

    def labelled(self, metric: Counter | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, remembered: the same child prometheus-client returns,
        without its checks and lock on every request."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child


def metrics(app: Flask | None = None) -> Metrics:
    found: Metrics = (app or current_app).extensions["tailor"]["metrics"]
    return found


def _start() -> None:
    g.started = time.perf_counter()


def _finish(response: Response) -> Response:
    route = request.url_rule.rule if request.url_rule is not None else "unmatched"
    found = metrics()
    found.labelled(found.requests, route, request.method, str(response.status_code)).inc()
    started = g.get("started")
    if started is not None:
        found.labelled(found.latency, route).observe(time.perf_counter() - started)
    return response


def metrics_response() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        body = generate_latest(registry)
    else:
        body = generate_latest(metrics().registry)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.extensions.setdefault("tailor", {})["metrics"] = Metrics()
    app.before_request(_start)
    app.after_request(_finish)
