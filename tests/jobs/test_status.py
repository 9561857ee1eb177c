"""tailor status reads what the jobs leave behind, and writes nothing: an empty root, then
one with a real streaming checkpoint a commit behind its table, one whose table was
re-created, two validation runs (the last with a critical failure), a champion in a real
MLflow store and a SQLite serving store an export behind."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from jobs import status
from pipelines.config import load_config
from pipelines.recommend.tracking import use_experiment
from pipelines.runtime.delta_tables import ensure_table
from pipelines.schemas import QUALITY_RESULTS
from pipelines.serving import open_store
from tests.settings import job_args


def _append(spark, path: str, ids: list[str]) -> None:
    spark.createDataFrame([(i,) for i in ids], "user_id string").coalesce(1).write.format("delta").mode(
        "append").save(path)


def _table_id(spark, path: str) -> str:
    return spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first().id


def test_status_of_an_empty_root_says_so_and_creates_nothing(spark, tmp_path, capsys):
    assert status.main(job_args(tmp_path)) == 0
    printed = capsys.readouterr().out
    assert "ingest_events    not started" in printed
    assert "silver.profiles            not created yet" in printed
    assert "validation\n  never run" in printed and "model\n  no champion registered" in printed
    assert "no store yet (nothing published)" in printed
    assert not (tmp_path / "mlflow").exists() and not (tmp_path / "serving").exists()


def _quality_row(run_id: str, at: str, expectation: str, severity: str, success: bool) -> tuple:
    return (run_id, datetime.fromisoformat(at), "enabled", "silver.profiles", 4, expectation,
            "expect_column_values_to_be_unique", severity, success, None, None)


def test_status_reports_batches_lag_validation_champion_and_store(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}"])
    events, content = config.table("bronze.events").path, config.table("gold.email_content").path
    _append(spark, events, ["u-1", "u-2"])
    _append(spark, events, ["u-3"])
    # merge_profiles: a real checkpoint that read versions 0 and 1; then version 2 lands.
    (spark.readStream.format("delta").load(events).writeStream.foreachBatch(lambda frame, batch: None)
     .option("checkpointLocation", config.checkpoint("merge_profiles")).trigger(availableNow=True)
     .start().awaitTermination())
    _append(spark, events, ["u-4"])
    # build_features: its checkpoint names a bronze table that has since been re-created.
    features_checkpoint = Path(config.checkpoint("build_features_v2"))
    for folder, text in (("offsets", 'v1\n{"batchWatermarkMs":0,"batchTimestampMs":1795934294179,"conf":{}}\n'
                                     '{"sourceVersion":1,"reservoirId":"0000-gone","reservoirVersion":3,"index":-1,'
                                     '"isStartingVersion":false}'),
                         ("commits", 'v1\n{"nextBatchWatermarkMs":0}')):
        (features_checkpoint / folder).mkdir(parents=True)
        (features_checkpoint / folder / "7").write_text(text, encoding="utf-8")
    ensure_table(spark, config.table("audit.quality_results"), QUALITY_RESULTS)
    spark.createDataFrame([
        _quality_row("run-old", "2026-11-20T08:00:00+00:00", "silver.profiles.user_id_unique", "critical", True),
        _quality_row("run-new", "2026-11-21T08:00:00+00:00", "silver.profiles.user_id_unique", "critical", False),
        _quality_row("run-new", "2026-11-21T08:00:00+00:00", "silver.profiles.email_valid", "warning", True),
    ], QUALITY_RESULTS).write.format("delta").mode("append").save(config.table("audit.quality_results").path)
    with mlflow.start_run(experiment_id=use_experiment(config)) as run:
        mlflow.log_metrics({"test.als.ndcg_at_10": 0.25, "test.popular.ndcg_at_10": 0.125})
        mlflow.log_dict({"model": "als"}, "recommender.json")
    client, name = MlflowClient(), config.mlflow.registered_model
    client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/recommender.json", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", version.version)
    _append(spark, content, ["u-1"])
    _append(spark, content, ["u-2"])
    with open_store(config) as store:
        store.write_batch("content", {"u-1": {"v": 1}, "u-2": {"v": 2}}, state={
            "exported:gold.email_content": json.dumps({"table_id": _table_id(spark, content), "version": 0})})
        store.write_batch("suppression", {"u-9": {"reason": "unsubscribed"}})

    assert status.main(job_args(tmp_path)) == 0

    printed = capsys.readouterr().out
    assert "merge_profiles   batch 0 at " in printed
    assert "bronze.events read through version 1, 1 version(s) behind" in printed
    assert "build_features   batch 7 at 2026-11-29T06:38:14Z" in printed
    assert "reads a table that no longer exists (re-created?)" in printed
    assert "ingest_events    not started" in printed
    assert "bronze.events              version 2     WRITE" in printed and "         4 rows" in printed
    assert "run run-new at 2026-11-21T08:00:00Z" in printed and "FAILED (critical expectations failed)" in printed
    assert "silver.profiles            version 4: 1 passed, 1 failed; critical failed: " \
           "silver.profiles.user_id_unique" in printed
    assert "version 1 (champion)" in printed and "test als.ndcg_at_10 0.250, popular.ndcg_at_10 0.125" in printed
    assert "records: content 2, default 0, traits 0, suppression 1, preferences 0" in printed
    assert "gold.email_content         exported at version 0 of 1 (1 version(s) behind)" in printed
    assert "gold.user_traits           never exported" in printed

    assert status.main(job_args(tmp_path, "--format", "json")) == 0
    report = json.loads(capsys.readouterr().out)
    merge = next(query for query in report["queries"] if query["query"] == "merge_profiles")
    assert merge["lag"] == {"source": "bronze.events", "read_through_version": 1, "versions_behind": 1}
    assert report["validation"]["passed"] is False and report["model"]["version"] == 1
    assert report["serving"]["exports"]["gold.email_content"] == {
        "exported_version": 0, "table_version": 1, "same_table": True}


def test_lag_reads_deltas_offset_as_the_last_version_read_whole():
    from pipelines.monitoring.status import _delta_lag

    tables = [{"table": "bronze.events", "id": "t-1", "version": 9}]
    offset = {"reservoirId": "t-1", "isStartingVersion": False}
    # (7, -1): versions up to 6 read, none of 7 yet; (7, 3): 7 read up to its 4th file.
    assert _delta_lag({**offset, "reservoirVersion": 7, "index": -1}, tables)["versions_behind"] == 3
    assert _delta_lag({**offset, "reservoirVersion": 7, "index": 3}, tables) == {
        "source": "bronze.events", "read_through_version": 6, "versions_behind": 3}
    assert _delta_lag({**offset, "reservoirVersion": 10, "index": -1}, tables)["versions_behind"] == 0
    starting = _delta_lag({**offset, "reservoirVersion": 9, "index": 40, "isStartingVersion": True}, tables)
    assert starting == {"source": "bronze.events", "note": "still reading bronze.events's first snapshot (version 9)"}
