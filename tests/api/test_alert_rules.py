"""conf/monitoring/api-alerts.yml names only metrics, labels and routes the API really
serves: read from a real /metrics after real requests, not from a list kept by hand."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.openapi import FALLBACK_REASONS
from tests.api.conftest import headers

RULES = Path(__file__).resolve().parents[2] / "conf" / "monitoring" / "api-alerts.yml"
SELECTOR = re.compile(r"\b(tailor_api_[a-z_]+|up)\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
# Labels Prometheus adds when it scrapes, or that a histogram's buckets carry.
SCRAPE_LABELS = {"job", "instance", "le"}
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def _rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def _served(client) -> dict[str, set[str]]:
    """Each sample name the API exposes -> its label names, after a personal row, a
    fallback and a 404 have been served."""
    client.get("/v1/content/u-1842", headers=headers("reader"))
    client.get("/v1/content/u-nobody", headers=headers("reader"))
    client.get("/v1/content/u-nobody?strict=true", headers=headers("reader"))
    text = client.get("/metrics").get_data(as_text=True)
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def test_every_rule_is_complete():
    rules = _rules()
    assert len(rules) >= 5
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in ("page", "warn"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


def test_rules_name_only_metrics_labels_and_routes_the_api_serves(app, client):
    served = _served(client)
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    checked = 0
    for rule in _rules():
        for metric, matchers in SELECTOR.findall(rule["expr"]):
            if metric == "up":
                continue
            assert metric in served, f"{rule['alert']}: the API serves no {metric}"
            for label, operator, value in MATCHER.findall(matchers):
                if label in SCRAPE_LABELS:
                    continue
                assert label in served[metric], f"{rule['alert']}: {metric} has no label {label}"
                if label == "route" and operator == "=":
                    assert value in routes, f"{rule['alert']}: the API has no route {value}"
                if label == "reason":
                    assert set(value.split("|")) <= set(FALLBACK_REASONS), f"{rule['alert']}: unknown reason {value}"
                checked += 1
    assert checked >= 4  # the check looked at something


def test_the_check_catches_a_misspelt_metric(client):
    served = _served(client)
    assert "tailor_api_request_seconds_bucket" in served
    assert "tailor_api_requests_seconds_bucket" not in served
    assert {"route", "method", "status"} <= served["tailor_api_requests_total"]


def test_content_rows_count_one_per_person_asked(client):
    client.post("/v1/content:batchGet", json={"user_ids": ["u-1842", "u-nobody", "u-hal"]}, headers=headers("reader"))
    text = client.get("/metrics").get_data(as_text=True)
    rows = {sample.labels["status"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "tailor_api_content_rows_total"}
    assert rows == {"200": 3.0}
