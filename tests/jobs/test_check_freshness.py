"""tailor check-freshness: one line, exit 1 when a query's last batch, the publish or the
quarantine rate crosses its threshold, exit 0 when all hold."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobs import check_freshness
from pipelines.config import CHECKPOINTS, load_config
from pipelines.schemas import INGEST_METRICS, JOB_RUNS
from tests.settings import job_args


def _checkpoint(folder: Path, batch: int, minutes_ago: float) -> None:
    """A query's checkpoint as Spark writes it: the batch's offsets (with when it was
    planned) and its commit marker."""
    planned_ms = int((time.time() - 60 * minutes_ago) * 1000)
    for kind, text in (("offsets", f'v1\n{json.dumps({"batchWatermarkMs": 0, "batchTimestampMs": planned_ms})}\n'
                                   '{"files": 3}'), ("commits", 'v1\n{"nextBatchWatermarkMs":0}')):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        (folder / kind / str(batch)).write_text(text, encoding="utf-8")


def _one_line(capsys) -> str:
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


def test_an_empty_root_is_stale_in_one_line(spark, tmp_path, capsys):
    assert check_freshness.main(job_args(tmp_path)) == 1
    line = _one_line(capsys)
    assert line == ("tailor check-freshness: STALE: ingest_events has never committed a batch; merge_profiles has "
                    "never committed a batch; build_features has never committed a batch; nothing has been "
                    "published yet")


def test_thresholds_on_batches_publish_and_quarantine(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}"])
    for query in CHECKPOINTS.values():
        _checkpoint(Path(config.checkpoint(query)), 4, minutes_ago=5)
    spark.createDataFrame([("u-1",)], "user_id string").write.format("delta").option(
        "userMetadata", json.dumps({"tailor_publish": 1})).save(config.table("gold.email_content").path)
    recent = datetime.utcnow() - timedelta(hours=1)
    old = datetime.utcnow() - timedelta(hours=30)  # outside the 24-hour window: not counted
    metrics = [("ingest_events", "q", "r", 1, recent, 1000, 990, 10, {"malformed_json": 10}, 0, 0, 100, 1.0, None, 0,
                0),
               ("ingest_events", "q", "r", 0, old, 100, 0, 100, {"malformed_json": 100}, 0, 0, 100, 1.0, None, 0, 0)]
    ingest_metrics = config.table("bronze.ingest_metrics").path
    spark.createDataFrame(metrics, INGEST_METRICS).write.format("delta").save(ingest_metrics)

    assert check_freshness.main(job_args(tmp_path)) == 0
    line = _one_line(capsys)
    assert line.startswith("tailor check-freshness: ok: ingest_events last batch 5 min ago (limit 15 min); ")
    assert "last publish 0 min ago (limit 26 h)" in line
    assert line.endswith("quarantine rate 1.0% of 1000 records in 24 h (limit 2.0%)")

    assert check_freshness.main(job_args(tmp_path, "--set", "monitoring.max_batch_age_minutes.merge_profiles=2",
                                      "--set", "monitoring.max_quarantine_rate=0.005")) == 1
    assert _one_line(capsys) == ("tailor check-freshness: STALE: merge_profiles last batch 5 min ago (limit 2 min); "
                                 "quarantine rate 1.0% of 1000 records in 24 h (limit 0.5%)")


def test_an_unknown_query_threshold_is_a_config_error(tmp_path, capsys):
    assert check_freshness.main(["--set", f"storage.root={tmp_path}",
                                 "--set", "monitoring.max_batch_age_minutes.ingest=5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tailor: config error: monitoring.max_batch_age_minutes: unknown streaming query 'ingest'")


def test_a_publish_is_its_tagged_commit_or_its_job_run_not_any_write(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}"])
    for query in CHECKPOINTS.values():
        _checkpoint(Path(config.checkpoint(query)), 1, minutes_ago=1)
    content = config.table("gold.email_content").path
    # Written now, but not by a publish: an erasure's delete, after the table's creation.
    spark.createDataFrame([("u-1",), ("u-2",)], "user_id string").write.format("delta").save(content)
    spark.sql(f"DELETE FROM delta.`{content}` WHERE user_id = 'u-2'")
    finished = datetime.now(UTC) - timedelta(hours=30)
    spark.createDataFrame([("run-1", "publish_content", "local", finished - timedelta(minutes=3), finished, 180.0,
                            "succeeded", 0, None)], JOB_RUNS).write.format("delta").save(
        config.table("audit.job_runs").path)

    assert check_freshness.main(job_args(tmp_path)) == 1
    assert _one_line(capsys) == "tailor check-freshness: STALE: last publish 30.0 h ago (limit 26 h)"
