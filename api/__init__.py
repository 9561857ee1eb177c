"""The content API: a Flask application factory in the shape of Flask's tutorial (flaskr).

    from api import create_app
    app = create_app()                                   # conf/base.yaml + conf/local.yaml
    app = create_app({"TAILOR_CONFIG": config})          # a Config built by the caller (tests, `tailor serve`)
    app = create_app({"TAILOR_ENV": "emr", "TAILOR_SET": ["serving.type=redis"]})

One blueprint per resource (content, traits, preferences, webhooks, admin, health); the
serving store is opened lazily per thread and dropped at teardown after a failure
(api/store.py, flaskr's db.py). Runs on small web hosts without Spark: nothing under
`api` may import pyspark. Every error is JSON (api/errors.py).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from pipelines.config import Config, load_config


def _config(app: Flask) -> Config:
    given = app.config.get("TAILOR_CONFIG")
    if isinstance(given, Config):
        return given
    overrides = app.config.get("TAILOR_SET") or []
    return load_config(app.config["TAILOR_ENV"], list(overrides))


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Create and configure an instance of the API."""
    app = Flask(__name__)
    app.config.from_mapping(TAILOR_ENV=os.environ.get("TAILOR_ENV", "local"), TAILOR_SET=[])
    if test_config:
        app.config.update(test_config)
    config = _config(app)
    if app.config.get("MAX_CONTENT_LENGTH") is None:
        app.config["MAX_CONTENT_LENGTH"] = config.api.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if config.api.trusted_proxies:
        # Behind a load balancer every request comes from its address: per-subscriber limits
        # would be one bucket for everyone. Only the configured hops are believed.
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.api.trusted_proxies)  # type: ignore[method-assign]
    app.extensions.setdefault("tailor", {})["config"] = config
    # The pipeline's HMAC key: audit lines name a person by its keyed subject_hash. Only that
    # key: the API decrypts nothing, so it never holds the key to every stored email. A
    # missing key stops the start-up with one line naming the variable.
    from pipelines.pii import load_hmac_key

    app.extensions["tailor"]["pii_hmac_key"] = load_hmac_key(config)

    from api import auth, errors, limits, logs, metrics, rows, store

    logs.init_app(app)
    metrics.init_app(app)
    errors.init_app(app)
    store.init_app(app, config)
    auth.init_app(app, config)
    rows.init_app(app, config)

    from api import admin, consent, content, docs, health, preferences, traits, webhooks

    for blueprint in (health.bp, docs.bp, content.bp, traits.bp, preferences.bp, webhooks.bp, admin.bp):
        app.register_blueprint(blueprint)
    app.extensions["tailor"]["limiter"] = limits.init_app(app, config, {
        "content:read": [content.bp], "traits:read": [traits.bp], "admin": [admin.bp],
        "preferences:write": [preferences.bp], "subscriber": [webhooks.bp],
    })
    # Registered last, so it runs first: no other teardown's failure can skip it.
    app.teardown_request(consent.store_audit)
    return app
