"""Rate limits per API key (Flask-Limiter), one limit per scope from api.rate_limit.

Counters live in Redis when Redis is the serving store (every gunicorn worker and host
shares them), in process memory otherwise. Over the limit: 429 with Retry-After and the
JSON error body. Callers without a key (a subscriber's preference link) are counted per
client address under the `subscriber` limit.
"""

from __future__ import annotations

import math
import time

from flask import Blueprint, Flask, Response, g, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from limits.storage import MemoryStorage

from api.errors import error_response
from pipelines.config import Config


class SweptMemoryStorage(MemoryStorage):
    """limits' memory storage, without a thread per request.

    MemoryStorage expires counters itself on read; its 10 ms timer thread only drops old
    keys, and a new one is started on any hit after the last has run: measured here,
    about 0.6 ms per request, more than the rest of a content read. This one sweeps
    in line, at most once a second."""

    STORAGE_SCHEME = ["tailor-memory"]
    sweep_every_s = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions, **options)
        self._swept_at = time.monotonic()

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides the name-mangled private method
        now = time.monotonic()
        if now - self._swept_at >= self.sweep_every_s:
            self._swept_at = now
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


def _caller() -> str:
    api_key = g.get("api_key")
    if api_key is not None:
        return f"key:{api_key.key_id}"
    return f"addr:{request.remote_addr or 'unknown'}"


def init_app(app: Flask, config: Config, scoped_blueprints: dict[str, list[Blueprint]]) -> Limiter:
    """One Limiter per app; every route of a blueprint in `scoped_blueprints[scope]`
    counts against that scope's limit, per caller. Register the blueprints first."""
    if config.serving.type == "redis":
        app.config.setdefault("RATELIMIT_STORAGE_URI", config.serving.redis.url)
        # The store's read timeout: a Redis that hangs must not hold every request at the
        # limiter (the error is swallowed and counting falls back to memory, as below).
        seconds = config.api.store_timeout_ms / 1000
        options: dict[str, object] = {"socket_timeout": seconds, "socket_connect_timeout": seconds}
        password = config.secret("redis_password")
        if password:
            options["password"] = password
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", options)
        app.config.setdefault("RATELIMIT_KEY_PREFIX", f"{config.serving.redis.key_prefix}:ratelimit")
    else:
        app.config.setdefault("RATELIMIT_STORAGE_URI", "tailor-memory://")
    # A rate-limit store that fails must not fail a content read: counters go to memory meanwhile.
    # No X-RateLimit-* headers on every answer (each costs a second counter read); 429 gets Retry-After.
    limiter = Limiter(key_func=_caller, app=app, headers_enabled=False, strategy="fixed-window",
                      swallow_errors=True, in_memory_fallback_enabled=True)
    subscriber = config.api.rate_limit.get("subscriber")
    for scope, blueprints in scoped_blueprints.items():
        limit = config.api.rate_limit.get(scope)
        for blueprint in blueprints:
            if limit and subscriber and scope != "subscriber":
                # A keyed caller counts against the scope's limit; a subscriber's link, per address.
                limiter.limit(lambda limit=limit: limit if g.get("api_key") else subscriber,  # type: ignore[misc]
                              scope=scope)(blueprint)
            elif limit:
                limiter.limit(limit, scope=scope)(blueprint)
            else:
                limiter.exempt(blueprint)

    @app.errorhandler(RateLimitExceeded)
    def too_many(error: RateLimitExceeded) -> Response:
        current = limiter.current_limit
        retry_after = max(1, math.ceil(current.window[0] - time.time())) if current else 1
        return error_response(429, "rate_limited", f"rate limit {error.description} exceeded for this key",
                              headers={"Retry-After": str(retry_after)})

    return limiter
