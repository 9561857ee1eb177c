"""tailor maintain on tables as the jobs leave them: many small files, an older table
without clustering, one clustered by keys that changed, a partitioned one, a deleted
person, and a checkpoint folder no query uses any more."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
from delta.tables import DeltaTable

from jobs import maintain
from pipelines.config import load_config
from pipelines.pii import load_keys, subject_hash
from pipelines.runtime.delta_tables import read_table
from pipelines.schemas import PROFILE_TOMBSTONES, QUARANTINE
from tests.settings import job_args

SHORT_RETENTION = ("--retention-hours", "0", "--set", "maintenance.allow_short_retention=true")


def _append(spark, path: str, rows: list[tuple], ddl: str, partition_by: tuple[str, ...] = ()) -> None:
    spark.createDataFrame(rows, ddl).coalesce(1).write.format("delta").mode("append").partitionBy(
        *partition_by).save(path)


def _detail(spark, path: str):
    return spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()


def _parquet_values(folder: Path) -> str:
    return json.dumps([pq.read_table(path).to_pylist() for path in sorted(folder.rglob("*.parquet"))])


def _checkpoint(root: Path, name: str, idle_hours: float = 48) -> Path:
    folder = root / "_checkpoints" / name
    (folder / "commits").mkdir(parents=True)
    (folder / "metadata").write_text('{"id":"0"}', encoding="utf-8")
    (folder / "commits" / "0").write_text("v1", encoding="utf-8")
    then = time.time() - idle_hours * 3600
    for path in folder.rglob("*"):
        os.utime(path, (then, then))
    return folder


def test_maintain_compacts_clusters_bounds_history_and_makes_deletes_final(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}"])
    profiles, products = config.table("silver.profiles").path, config.table("silver.products").path
    traits, events = config.table("gold.user_traits").path, config.table("bronze.events").path
    # silver.profiles as an older Tailor made it: no clustering; three commits, then a delete.
    for batch in (["u-1", "u-2"], ["u-3", "u-gone"], ["u-4"]):
        _append(spark, profiles, [(user, f"{user}-city") for user in batch], "user_id string, city string")
    DeltaTable.forPath(spark, profiles).delete("user_id = 'u-gone'")
    # silver.products clustered by a key CLUSTERED_BY no longer names.
    (DeltaTable.create(spark).location(products).addColumn("product_id", "string").addColumn("sku", "string")
     .clusterBy("sku").execute())
    for number in range(3):
        _append(spark, products, [(f"p-{number}", f"sku-{number}")], "product_id string, sku string")
    # gold.user_traits partitioned, so it cannot be clustered; it is still compacted.
    for user in ("u-1", "u-2"):
        _append(spark, traits, [(user, "gold")], "user_id string, tier string", partition_by=("tier",))
    # bronze.events: partitioned by day, not meant to be clustered.
    for day, event in (("2026-11-01", "e-1"), ("2026-11-01", "e-2"), ("2026-11-02", "e-3")):
        _append(spark, events, [(event, day)], "event_id string, event_date string", partition_by=("event_date",))
    # Quarantined records of an erased person, which no ingest batch purged (they came in
    # before her erasure), and one of someone else.
    keys = load_keys(config)
    spark.createDataFrame([(subject_hash(keys, "u-gone"), (1_000, None, None), datetime(2026, 11, 1))],
                          PROFILE_TOMBSTONES).write.format("delta").save(config.table("silver.profile_tombstones").path)
    quarantined = [(f"q-{n}", raw.encode(), "files", "landing", "f", str(n), None, "events", "malformed_json", "bad",
                    datetime(2026, 10, 30), "1", None, None, None)
                   for n, raw in enumerate(['{"user_id": "u-gone", "payload": {"first_name": "Gone"',
                                            '{"user_id":"u-gone"}', '{"user_id": "u-1", "event_type": "?"}'])]
    spark.createDataFrame(quarantined, QUARANTINE).write.format("delta").save(config.table("bronze.quarantine").path)
    orphan = _checkpoint(tmp_path, "build_features")  # renamed to build_features_v2
    _checkpoint(tmp_path, "ingest_events")
    # An older deployment's query still running during an upgrade: written to an hour ago.
    running = _checkpoint(tmp_path, "merge_profiles_v0", idle_hours=1)
    (tmp_path / "_checkpoints" / "notes").mkdir()
    (tmp_path / "_checkpoints" / "notes" / "readme.txt").write_text("not a checkpoint", encoding="utf-8")
    assert "u-gone" in _parquet_values(Path(profiles))
    # An audit line the API wrote on a day gone by, not loaded yet.
    (tmp_path / "audit" / "api").mkdir(parents=True)
    (tmp_path / "audit" / "api" / "audit-2026-11-01.jsonl").write_text(
        '{"action":"erasure_requested","actor":"key:ops","after":null,"at":"2026-11-01T09:00:00.000Z",'
        '"audit_id":"a1","before":null,"request_id":"r1","subject_hash":"h1"}\n')

    assert maintain.main(job_args(tmp_path, *SHORT_RETENTION)) == 0

    printed = capsys.readouterr().out
    assert "deleted 2 quarantined record(s) naming erased people" in printed
    assert [row.quarantine_id for row in read_table(spark, config.table("bronze.quarantine")).collect()] == ["q-2"]
    assert b"u-gone" not in b"".join(path.read_bytes() for path in
                                     Path(config.table("bronze.quarantine").path).rglob("*.parquet"))
    assert "silver.profiles" in printed and "files     3 -> 1" in printed and "(clustering added)" in printed
    assert "audit.log: 1 API audit line(s) loaded, 1 file(s) of past days removed" in printed
    assert [(row.audit_id, row.action, row.outcome) for row in read_table(spark, config.table("audit.log")).collect()] \
        == [("api:a1", "erasure", "requested")]
    assert not list((tmp_path / "audit" / "api").iterdir())
    # audit.log, which the load created, is maintained with the rest.
    assert "1 orphaned checkpoint(s)" in printed and f"{orphan}" in printed and "maintained 7 table(s)" in printed
    assert orphan.exists()  # listed, not deleted, without the flag
    detail = _detail(spark, profiles)
    assert (detail.numFiles, list(detail.clusteringColumns)) == (1, ["user_id"])
    assert detail.properties["delta.logRetentionDuration"] == "interval 30 days"
    assert sorted(row.user_id for row in read_table(spark, config.table("silver.profiles")).collect()) == [
        "u-1", "u-2", "u-3", "u-4"]
    # The deleted person is gone from every file, old versions included.
    assert "u-gone" not in _parquet_values(Path(profiles))
    detail = _detail(spark, products)
    assert (detail.numFiles, list(detail.clusteringColumns)) == (1, ["product_id"])
    detail = _detail(spark, traits)
    assert (detail.numFiles, list(detail.clusteringColumns), list(detail.partitionColumns)) == (1, [], ["tier"])
    detail = _detail(spark, events)
    assert (detail.numFiles, list(detail.clusteringColumns)) == (2, [])  # one per day
    operations = [row.operation for row in DeltaTable.forPath(spark, events).history().collect()]
    # (No REORG commit: the table has no deletion vectors to purge.)
    assert operations == ["VACUUM END", "VACUUM START", "SET TBLPROPERTIES", "OPTIMIZE", *["WRITE"] * 3]

    # Once maintained, a second run changes nothing but removes the orphan when asked.
    assert maintain.main(job_args(tmp_path, "--skip-vacuum", "--remove-orphaned-checkpoints")) == 0
    printed = capsys.readouterr().out
    assert "(clustering added)" not in printed and "files     1 -> 1" in printed and "not vacuumed" in printed
    assert f"removed 1 orphaned checkpoint(s): {orphan}" in printed
    assert "audit.log: 0 API audit line(s) loaded, 0 file(s) of past days removed" in printed
    assert not orphan.exists()
    assert (tmp_path / "_checkpoints" / "ingest_events" / "metadata").exists() and running.exists()
    assert (tmp_path / "_checkpoints" / "notes" / "readme.txt").exists()


def test_maintain_refuses_a_short_retention_before_spark_starts(tmp_path, capsys):
    assert maintain.main(["--set", f"storage.root={tmp_path}", "--retention-hours", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tailor: maintenance.vacuum_retention_hours: 1 is below Delta's 168-hour")
    assert "\n" not in error


def test_a_table_that_fails_does_not_stop_the_others(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}"])
    products, events = config.table("silver.products").path, config.table("gold.user_traits").path
    for number in range(2):
        _append(spark, products, [(f"p-{number}", "sku")], "product_id string, sku string")
        _append(spark, events, [(f"u-{number}", "gold")], "user_id string, tier string")
    next(Path(products).glob("*.parquet")).unlink()  # a data file lost: OPTIMIZE cannot read it
    # audit.log cannot be made (a file stands where its folder goes): the load of the API's
    # audit lines fails too, is reported, and does not stop the tables either.
    (tmp_path / "audit" / "api").mkdir(parents=True)
    (tmp_path / "audit" / "api" / "audit-2026-11-01.jsonl").write_text('{"audit_id":"a1"}\n')
    Path(config.table("audit.log").path).write_text("not a table")

    assert maintain.main(job_args(tmp_path, *SHORT_RETENTION)) == 1

    printed = capsys.readouterr().out
    assert "audit.log: the API's audit lines were not loaded: " in printed
    assert "silver.products  FAILED: " in printed and "maintained 1 table(s), 1 failed" in printed
    assert _detail(spark, events).numFiles == 1  # maintained after the failure

