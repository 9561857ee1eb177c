"""Operations: /metrics for Prometheus, JSON logs with a request id and no PII, the preview."""

from __future__ import annotations

import json
import logging
import re

import pytest

from api.admin import safe_url
from api.logs import JsonFormatter
from tests.api.conftest import DATA, KEYS, headers, seed

READER = headers("reader")


def test_metrics_count_requests_fallbacks_and_cache(client):
    client.get("/v1/content/u-ada", headers=READER)
    client.get("/v1/content/u-ada", headers=READER)
    client.get("/v1/content/u-nobody", headers=READER)
    client.get("/v1/content/u-gone", headers=READER)
    text = client.get("/metrics").get_data(as_text=True)
    expected = [
        'tailor_api_requests_total{method="GET",route="/v1/content/<user_id>",status="200"} 3.0',
        'tailor_api_requests_total{method="GET",route="/v1/content/<user_id>",status="410"} 1.0',
        'tailor_api_fallbacks_total{reason="unknown_user"} 1.0',
        'tailor_api_gone_total{reason="unsubscribed"} 1.0',
        'tailor_api_cache_lookups_total{result="hit"} 1.0',
        'tailor_api_cache_lookups_total{result="miss"} 3.0',
        'tailor_api_request_seconds_count{route="/v1/content/<user_id>"} 4.0',
        "tailor_api_store_errors_total 0.0",
    ]
    for line in expected:
        assert line in text, line
    assert "u-ada" not in text


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_logs_are_json_with_a_request_id_and_no_user_ids_or_keys(client):
    collect = Collect()
    logger = logging.getLogger("tailor.api")
    logger.addHandler(collect)
    try:
        client.get("/v1/content/u-ada", headers={**READER, "X-Request-Id": "req-abcdef12"})
        client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ["u-bob", "u-cy"]})
        client.get("/v1/users/u-ada/traits", headers={"X-Api-Key": "a-key-nobody-issued"})
    finally:
        logger.removeHandler(collect)
    entries = [json.loads(line) for line in collect.lines]
    assert [(entry["route"], entry["status"], entry["key_id"]) for entry in entries] == [
        ("/v1/content/<user_id>", 200, "reader"), ("/v1/content:batchGet", 200, "reader"),
        ("/v1/users/<user_id>/traits", 401, None)]
    assert entries[0]["request_id"] == "req-abcdef12"
    assert len(entries[1]["request_id"]) == 32
    text = "\n".join(collect.lines)
    for secret_or_pii in ("u-ada", "u-bob", "u-cy", KEYS["reader"][0], "a-key-nobody-issued"):
        assert secret_or_pii not in text


def test_preview_renders_the_row_into_a_sample_email(client):
    response = client.get("/v1/preview/u-ada", headers=headers("ops"))
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert '<p class="greeting">Hi Ada</p>' in html
    assert '<a href="https://shop.example/o/winback-10">10% off your next order</a>' in html
    assert "<td>12.75 GBP</td>" in html
    assert 'data-reason="because_you_viewed"' in html
    gone = client.get("/v1/preview/u-gone", headers=headers("ops"))
    assert (gone.status_code, gone.get_json()["reason"]) == (410, "unsubscribed")


@pytest.mark.parametrize(("given", "expected"), [
    ("https://shop.example/p/1", "https://shop.example/p/1"),
    ("HTTP://shop.example/p/1", "HTTP://shop.example/p/1"),
    (" https://shop.example/p/1\n", "https://shop.example/p/1"),
    ("https://shop.\nexample/p/1", "https://shop.example/p/1"),
    ("javascript:alert(1)", None),
    ("  JaVaScRiPt:alert(1)", None),
    ("\tJAVASCRIPT:alert(1)", None),
    ("java\tscript:alert(1)", None),
    ("java\nscript:alert(1)", None),
    ("\x00\x1fjavascript:alert(1)", None),
    ("data:text/html,<script>alert(1)</script>", None),
    ("vbscript:msgbox(1)", None),
    ("mailto:ada@example.com", None),
    ("//shop.example/p/1", None),
    ("/p/1", None),
    ("https:shop.example", None),
    ("http://[::1", None),
    ("", None),
    (None, None),
    (42, None),
])
def test_safe_url_keeps_absolute_http_and_https_urls_only(given, expected):
    assert safe_url(given) == expected


def product(number: int, url: str) -> dict:
    return {"product_id": f"p-{number}", "title": f"Product {number}", "price": {"amount": 5.0, "currency": "GBP"},
            "image_url": None, "url": url, "reason": "top_seller"}


def test_preview_links_only_http_urls_and_sends_a_strict_csp(app, client):
    row = {**DATA["content"]["u-ada"], "user_id": "u-eve",
           "hero": {"offer_id": "o-1", "headline": "Half price", "url": " \tJaVaScRiPt:alert('hero')"},
           "products": [product(1, "javascript:alert(1)"), product(2, "  JAVASCRIPT:alert(2)"),
                        product(3, "java\tscript:alert(3)"), product(4, "data:text/html,<script>alert(4)</script>"),
                        product(5, "vbscript:msgbox(5)"), product(6, "https://shop.example/p/6"),
                        product(7, "http://shop.example/p/7")]}
    seed(app.extensions["tailor"]["config"], {"content": {"u-eve": row}})
    response = client.get("/v1/preview/u-eve", headers=headers("ops"))
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert re.findall(r'(?:href|src)="([^"]*)"', html) == ["https://shop.example/p/6", "http://shop.example/p/7"]
    assert '<h1 class="hero">Half price</h1>' in html
    assert "<td>Product 1</td>" in html and "<td>Product 5</td>" in html
    assert '<td><a href="https://shop.example/p/6">Product 6</a></td>' in html
    for unsafe in ("script:", "alert", "data:", "msgbox"):
        assert unsafe not in html.lower()
    assert response.headers["Content-Security-Policy"] == (
        "default-src 'none'; img-src https: http:; style-src 'unsafe-inline'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
