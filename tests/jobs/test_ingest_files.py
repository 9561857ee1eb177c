"""The ingest job on the files source: every line lands in bronze or quarantine or is
counted as a duplicate, bad records never stop the query, and reruns add nothing."""

import json
from collections import Counter
from pathlib import Path

from chispa import assert_df_equality
from pyspark.sql import functions as F

from jobs.ingest_events import run
from pipelines.config import CHECKPOINTS, load_config
from pipelines.synthetic.generator import Faults, WorldSpec, crm_message, generate_world
from pipelines.synthetic.producers import write_jsonl
from tests.jobs.ingest_helpers import expected_outcome, landed
from tests.pipelines.ingest.test_validation import BAD_CORPUS
from tests.settings import SPARK_TEST_SETTINGS


def _config(root: Path):
    return load_config("local", [f"storage.root={root}", "ingest.metrics_flush_seconds=2", *SPARK_TEST_SETTINGS])


def test_files_reconcile_and_rerun_adds_nothing(spark, tmp_path):
    config = _config(tmp_path)
    world = generate_world(WorldSpec(seed=31, users=40, products=30, days=4, faults=Faults.parse("all=0.02")))
    events_dir = Path(config.under_root(config.source.files.path))
    crm_dir = Path(config.under_root(config.source.files.crm_path))
    for number, batch in enumerate(world.event_batches(3)):
        write_jsonl(events_dir, f"events-{number}", batch)
    write_jsonl(crm_dir, "crm", [crm_message(c, with_schema=number % 2 == 0)
                                 for number, c in enumerate(world.crm_changes)])
    bad = [record for record in BAD_CORPUS.values() if record is not None]
    (events_dir / "bad-corpus.jsonl").write_bytes(
        b"\n".join(r if isinstance(r, bytes) else r.encode("utf-8") for r in bad) + b"\n")

    assert run(config, once=True) == 0

    lines = [line.encode("utf-8") for line in world.events] + [
        r if isinstance(r, bytes) else r.encode("utf-8") for r in bad]
    valid_ids, codes, duplicates = expected_outcome(lines, world.crm_changes)
    bronze, quarantine, metrics = landed(spark, config)

    assert bronze.count() == bronze.select("event_id").distinct().count()
    assert {row.event_id for row in bronze.select("event_id").collect()} == valid_ids
    assert Counter(row.error_code for row in quarantine.select("error_code").collect()) == codes
    totals = metrics.agg(F.sum("input_rows").alias("input"), F.sum("duplicate_rows").alias("dups"),
                         F.sum("valid_rows").alias("valid"), F.sum("quarantined_rows").alias("quarantined")).first()
    produced = len(lines) + len(world.crm_changes)
    assert totals.input == produced
    assert totals.dups == duplicates
    # The generator's retries, plus the two valid corpus records that share event_id e-1.
    assert duplicates == world.manifest["faults"]["duplicate"]["count"] + 1
    assert totals.valid == bronze.count() and totals.quarantined == quarantine.count()
    assert bronze.count() + quarantine.count() + totals.dups == produced

    # Quarantine keeps the bytes as received and where they came from.
    not_utf8 = quarantine.where("error_code = 'not_utf8'").first()
    assert bytes(not_utf8.raw) == BAD_CORPUS["not_utf8"]
    assert not_utf8.source_partition.endswith("bad-corpus.jsonl")
    # source_offset is the byte offset where the line starts in its file.
    position = bad.index(BAD_CORPUS["not_utf8"])
    preceding = [r if isinstance(r, bytes) else r.encode("utf-8") for r in bad[:position]]
    assert int(not_utf8.source_offset) == sum(len(line) + 1 for line in preceding)

    # The dedup state commits what each batch changed (changelog checkpointing); the second
    # run below restarts from it (test_ingest_kill_restart restores it after a SIGKILL).
    state = Path(config.checkpoint(CHECKPOINTS["ingest_events"])) / "state"
    assert list(state.rglob("*.changelog"))

    # A second run over the same files adds nothing.
    before = (bronze.count(), quarantine.count())
    assert run(config, once=True) == 0
    bronze, quarantine, _ = landed(spark, config)
    assert (bronze.count(), quarantine.count()) == before


def test_new_file_lands_exactly_its_records(spark, tmp_path):
    config = _config(tmp_path)
    events_dir = Path(config.under_root(config.source.files.path))
    first = generate_world(WorldSpec(seed=41, users=10, products=10, days=2))
    write_jsonl(events_dir, "first", first.events)
    assert run(config, once=True) == 0
    second = generate_world(WorldSpec(seed=42, users=5, products=10, days=2))
    write_jsonl(events_dir, "second", second.events[:25])
    assert run(config, once=True) == 0
    bronze, _, _ = landed(spark, config)
    expected = spark.createDataFrame(
        [(line,) for line in
         sorted({json.loads(event)["event_id"] for event in first.events + second.events[:25]})],
        "event_id string")
    assert_df_equality(bronze.select("event_id"), expected, ignore_row_order=True, ignore_nullable=True)


def test_bronze_rows_carry_typed_fields_and_coordinates(spark, tmp_path):
    config = _config(tmp_path)
    events_dir = Path(config.under_root(config.source.files.path))
    line = ('{"event_id":"e-77","event_type":"email_open","schema_version":1,"user_id":"u-9",'
            '"occurred_at":"2026-11-20T21:15:00+01:00","source":"esp",'
            '"payload":{"campaign_id":"cmp-1","message_id":"m-1"}}')
    write_jsonl(events_dir, "one", [line])
    assert run(config, once=True) == 0
    bronze, _, _ = landed(spark, config)
    actual = bronze.select("event_id", "event_type", "schema_version", "user_id",
                           F.date_format("occurred_at", "yyyy-MM-dd HH:mm:ss").alias("occurred_utc"),
                           F.col("event_date").cast("string").alias("event_date"), "source",
                           F.get_json_object("payload", "$.campaign_id").alias("campaign"),
                           "source_kind", "source_offset")
    expected = spark.createDataFrame(
        [("e-77", "email_open", 1, "u-9", "2026-11-20 20:15:00", "2026-11-20", "esp", "cmp-1", "files", "0")],
        "event_id string, event_type string, schema_version int, user_id string, occurred_utc string, "
        "event_date string, source string, campaign string, source_kind string, source_offset string")
    assert_df_equality(actual, expected, ignore_nullable=True)
