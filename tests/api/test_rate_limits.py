"""Rate limits count only the scoped blueprints' routes."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/healthz", "/v1/no-such-route"])
def test_routes_outside_the_scoped_blueprints_are_not_counted(make_app, path):
    app = make_app("api.rate_limit.subscriber=1 per minute", "api.rate_limit.content:read=1 per minute")
    client = app.test_client()
    assert {client.get(path).status_code for _ in range(3)} == {200 if path == "/healthz" else 404}
