"""The API against its own /openapi.json with schemathesis: no 5xx, no answer outside
the document (status, content type, headers, body schema), bad input rejected with 4xx."""

from __future__ import annotations

import schemathesis
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode

from tests.api.conftest import KEYS


def test_openapi_document_is_31_and_lists_every_route(app: Flask, client):
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"] == "3.1.0"
    documented = {(path, method.upper()) for path, operations in spec["paths"].items() for method in operations}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        routed |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routed == documented


def test_docs_page_lists_the_endpoints(client):
    response = client.get("/docs")
    page = response.get_data(as_text=True)
    assert "<code>/v1/content:batchGet</code>" in page
    assert "<code>X-Api-Key</code>" in page
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_api_conforms_to_its_openapi_document(make_app):
    """Every operation, data that fits the document and data that does not (which must get
    a 4xx), checked by every schemathesis check. Driven by hand rather than by the pytest
    plugin, whose lazy fixture loader does not run under pytest 9."""
    # Limits high enough that the run is not all 429s (429 is documented, and tested elsewhere).
    app = make_app("api.rate_limit.admin=1000000 per minute", "api.rate_limit.subscriber=1000000 per minute")
    # 410 is a right answer to a well-formed read: the person was erased by an earlier DELETE.
    config = SchemathesisConfig.from_dict({"checks": {"positive_data_acceptance": {
        "expected-statuses": ["2XX", "3XX", 401, 403, 404, 409, 410, 429]}}})
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app, config=config)
    key = {"X-Api-Key": KEYS["ops"][0]}
    operations = [result.ok() for result in schema.get_all_operations()]
    # schemathesis leaves out the document's own path.
    assert sorted(operation.label for operation in operations) == [
        "DELETE /v1/users/{user_id}", "GET /docs", "GET /healthz", "GET /metrics", "GET /preferences/{token}",
        "GET /readyz", "GET /v1/content/{user_id}", "GET /v1/preferences/{token}", "GET /v1/preview/{user_id}",
        "GET /v1/users/{user_id}/preference-link", "GET /v1/users/{user_id}/traits", "POST /preferences/{token}",
        "POST /v1/content:batchGet", "POST /v1/unsubscribe/{token}", "POST /v1/webhooks/{provider}",
        "PUT /v1/preferences/{token}"]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck),
                      phases=[Phase.explicit, Phase.generate])
            def check(case):  # type: ignore[no-untyped-def]
                case.call_and_validate(headers=key)

            try:
                check()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label  # no inputs: nothing can be wrong
