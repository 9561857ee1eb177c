"""tailor dashboard over recorded batches, validation runs, two model versions, job runs
and a live API's /metrics, opened in Debian's headless chromium: every plot drew (an SVG
with its lines and bars, on a page that is not blank); with nothing recorded, every panel
says what is missing instead."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from jobs import dashboard, maintain
from pipelines.config import load_config
from pipelines.contracts.events import ERROR_CODES
from pipelines.recommend.tracking import use_experiment
from pipelines.schemas import INGEST_METRICS, QUALITY_RESULTS, STREAMING_PROGRESS
from pipelines.services.kafka_broker import free_port
from tests.api.conftest import headers
from tests.settings import job_args

pytestmark = pytest.mark.slow
PLOTS = ("throughput", "freshness", "quarantine", "quality", "models", "api")
START = datetime(2026, 11, 28, 9, 0)


def _write(spark, config, name: str, schema, rows: list[tuple]) -> None:
    spark.createDataFrame(rows, schema).write.format("delta").mode("append").save(config.table(name).path)


def _record_a_world(spark, config) -> None:
    _write(spark, config, "audit.streaming_progress", STREAMING_PROGRESS, [
        (query, f"q-{query}", "r-1", batch, START + timedelta(minutes=batch), 1000 * (batch + 1),
         900.0 + batch, 1200.0 + 10 * batch, 1500 + 100 * batch, 0, None)
        for query in ("ingest_events", "merge_profiles") for batch in range(4)])
    _write(spark, config, "bronze.ingest_metrics", INGEST_METRICS, [
        ("ingest_events", "q-1", "r-1", batch, START + timedelta(minutes=batch), 1000, 990 - batch, 10 + batch,
         {ERROR_CODES[0]: 10 + batch}, 0, 0, 1500, 2.0 + batch, None, 0, 0) for batch in range(4)])
    _write(spark, config, "audit.quality_results", QUALITY_RESULTS, [
        (run, START + timedelta(hours=hour), "enabled", "silver.profiles", 1, f"check-{n}",
         "expect_column_values_to_not_be_null", "critical" if n == 0 else "warning", not (run == "b" and n < 2), None,
         None)
        for hour, run in ((1, "a"), (2, "b")) for n in range(5)])
    with mlflow.start_run(experiment_id=use_experiment(config)) as first:
        mlflow.log_metrics({"test.blend.ndcg_at_10": 0.21, "test.popular.ndcg_at_10": 0.12})
    with mlflow.start_run(experiment_id=use_experiment(config)) as second:
        mlflow.log_metrics({"test.blend.ndcg_at_10": 0.24, "test.popular.ndcg_at_10": 0.12})
    client, name = MlflowClient(), config.mlflow.registered_model
    client.create_registered_model(name)
    for run in (first, second):
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", "2")


@pytest.fixture
def api_metrics_url(client, served):
    client.get("/v1/content/u-1842", headers=headers("reader"))
    client.get("/v1/content/u-nobody", headers=headers("reader"))  # a fallback
    return f"{served}/metrics"


def _open(browser, page: Path):
    browser.set_window_size(1200, 3000)
    browser.get(page.as_uri())
    return browser


def _not_blank(png: bytes) -> float:
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("L")
    pixels = list(image.getdata())
    return sum(1 for value in pixels if value < 200) / len(pixels)


def test_every_plot_draws_in_a_real_browser(spark, tmp_path, api_metrics_url, browser, capsys):
    from selenium.webdriver.common.by import By

    root = tmp_path / "world"
    config = load_config("local", [f"storage.root={root}"])
    _record_a_world(spark, config)
    assert maintain.main(job_args(root, "--skip-vacuum")) == 0  # a job run, recorded
    capsys.readouterr()
    page = root / "dashboard" / "index.html"

    assert dashboard.main(job_args(root, "--api-metrics", api_metrics_url)) == 0
    assert capsys.readouterr().out.strip() == f"dashboard: {page}"

    _open(browser, page)
    assert browser.title == "Tailor dashboard"
    assert browser.find_elements(By.CSS_SELECTOR, "p.empty") == []
    for plot in PLOTS:
        svg = browser.find_element(By.CSS_SELECTOR, f"figure#{plot} svg")
        assert svg.size["width"] > 300 and svg.size["height"] > 150, plot
        # The artists that draw data (lines, bars) carry the id "data"; axes and text do not.
        drawn = browser.execute_script(
            "return [...arguments[0].querySelectorAll('g[id=\"data\"] path')]"
            ".filter(p => p.getBBox().width + p.getBBox().height > 0).length", svg)
        assert drawn >= 1, plot
    runs = browser.find_element(By.ID, "job-runs").text
    assert "maintain" in runs and "succeeded" in runs
    checks = browser.find_element(By.ID, "checks").text
    assert "STALE" in checks and "ingest_events has never committed a batch" in checks
    assert _not_blank(browser.get_screenshot_as_png()) > 0.02


def test_with_nothing_recorded_each_panel_says_what_is_missing(spark, tmp_path, browser, capsys):
    from selenium.webdriver.common.by import By

    root = tmp_path / "empty"
    assert dashboard.main(job_args(root, "--api-metrics", f"http://127.0.0.1:{free_port()}/metrics")) == 0
    _open(browser, root / "dashboard" / "index.html")
    assert browser.find_elements(By.CSS_SELECTOR, "figure") == []
    empty = {element.get_attribute("id"): element.text for element in browser.find_elements(By.CSS_SELECTOR, "p.empty")}
    assert set(empty) == {*PLOTS, "job-runs"}
    assert empty["quality"] == "no validation run yet"
    assert "URLError" in empty["api"] and "/metrics" in empty["api"]
