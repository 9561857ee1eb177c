"""Operations: /metrics for Prometheus, JSON logs with a request id and no PII, the preview."""

from __future__ import annotations

import json
import logging

from api.logs import JsonFormatter
from tests.api.conftest import KEYS, headers

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
