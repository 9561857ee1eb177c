"""Repaired quarantine records go back through validation once; a rerun replays nothing."""

import json
from pathlib import Path

from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from jobs.ingest_events import run
from jobs.replay_quarantine import replay
from pipelines.config import load_config
from pipelines.synthetic.producers import write_jsonl
from tests.settings import SPARK_TEST_SETTINGS


def _event(event_id, version=1, **extra):
    return json.dumps({"event_id": event_id, "event_type": "email_open", "schema_version": version,
                       "user_id": "u-1", "occurred_at": "2026-11-20T08:00:00Z", "source": "esp",
                       "payload": {"campaign_id": "c", "message_id": "m"}, **extra})


def test_replay_fixed_records_once(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", "ingest.metrics_flush_seconds=1", *SPARK_TEST_SETTINGS])
    lines = [
        _event("ok-1"),
        _event("fix-me")[:40],                       # malformed: truncated
        _event("v9", version=9),                     # unknown schema version
        _event("still-bad")[:30],                    # will be "fixed" badly
        _event("ok-1", source="web")[:-1],           # malformed; its fix duplicates ok-1
        _event("left-alone")[:25],                   # nobody repairs this one
    ]
    write_jsonl(Path(config.under_root(config.source.files.path)), "replay", lines)
    assert run(config, once=True) == 0
    quarantine_path = config.table("bronze.quarantine").path
    assert spark.read.format("delta").load(quarantine_path).count() == 5

    # A record's source_offset is the byte offset where its line starts.
    starts = [sum(len(line.encode()) + 1 for line in lines[:number]) for number in range(len(lines))]
    at = {number: str(starts[number - 1]) for number in range(1, len(lines) + 1)}  # line number -> offset
    fixes = {at[2]: _event("fix-me"), at[3]: _event("v9"), at[4]: _event("still-bad", schema_version="1"),
             at[5]: _event("ok-1")}
    table = DeltaTable.forPath(spark, quarantine_path)
    for offset, fixed in fixes.items():
        table.update(F.col("source_offset") == offset, {"fixed_raw": F.lit(fixed.encode()).cast("binary")})

    summary = replay(spark, config)
    assert dict(summary) == {"landed": 2, "already_in_bronze": 1, "still_invalid:wrong_type": 1}

    bronze = spark.read.format("delta").load(config.table("bronze.events").path)
    expected = spark.createDataFrame([("ok-1",), ("fix-me",), ("v9",)], "event_id string")
    assert_df_equality(bronze.select("event_id"), expected, ignore_row_order=True, ignore_nullable=True)

    marks = (spark.read.format("delta").load(quarantine_path)
             .select("source_offset", F.regexp_extract("replay_outcome", r"^([a-z_]+(:[a-z_]+)?)", 1).alias("outcome"),
                     F.col("replayed_at").isNotNull().alias("replayed")))
    expected_marks = spark.createDataFrame([
        (at[2], "landed", True), (at[3], "landed", True), (at[4], "still_invalid:wrong_type", True),
        (at[5], "already_in_bronze", True), (at[6], None, False)],
        "source_offset string, outcome string, replayed boolean")
    assert_df_equality(marks, expected_marks, ignore_row_order=True, ignore_nullable=True)

    assert dict(replay(spark, config)) == {}
    assert bronze.count() == 3
    assert dict(replay(spark, config, include_unfixed=True)) == {"still_invalid:malformed_json": 1}
    assert dict(replay(spark, config, include_unfixed=True)) == {}
