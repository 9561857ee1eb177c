"""SIGKILL the running ingest job mid-stream, restart it, and lose or duplicate nothing:
not an event, and not a batch's counts in bronze.ingest_metrics."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from pipelines.config import load_config
from pipelines.synthetic.generator import Faults, WorldSpec, generate_world
from pipelines.synthetic.producers import write_jsonl
from tests.jobs.ingest_helpers import expected_outcome, landed
from tests.settings import SPARK_TEST_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.spark  # each test runs the ingest job in a subprocess


def _commits(table_path: str) -> int:
    log = Path(table_path) / "_delta_log"
    return len(list(log.glob("*.json"))) if log.exists() else 0


# `tailor ...`, with the bronze append of batch 1 followed by SIGKILL to the job's process
# group (the driver and its JVM), as a crash at that instant would leave things.
KILLED_AFTER_SECOND_BRONZE_COMMIT = """
import os, signal, sys
import pipelines.ingest.writes as writes
from jobs.cli import main

append = writes.append_once

def append_then_die(frame, table, app_id, version):
    append(frame, table, app_id, version)
    if table.layer_name == "bronze.events" and version == 1:
        os.killpg(os.getpgid(0), signal.SIGKILL)

writes.append_once = append_then_die
sys.exit(main(sys.argv[1:]))
"""


def _rows(spark, table_path: str) -> int:
    return spark.read.format("delta").load(table_path).count()


def test_sigkill_mid_batch_then_restart_reconciles_events_and_metrics(spark, tmp_path):
    # Progress is flushed only when the job stops, which a SIGKILL never lets it do: the
    # metrics of the batches committed before the kill must be in the table by then.
    overrides = [f"storage.root={tmp_path}", "source.files.max_files_per_trigger=1",
                 "ingest.metrics_flush_seconds=3600", *SPARK_TEST_SETTINGS]
    config = load_config("local", overrides)
    world = generate_world(WorldSpec(seed=61, users=40, products=20, days=4,
                                     faults=Faults.parse("duplicate=0.03,malformed_json=0.01")))
    events_dir = Path(config.under_root(config.source.files.path))
    batches = world.event_batches(12)
    for number, batch in enumerate(batches):
        write_jsonl(events_dir, f"events-{number:02d}", batch)

    # The job kills itself, and its JVM with it, right after the second batch's bronze
    # commit: inside that batch, before its quarantine and metrics writes.
    command = [sys.executable, "-c", KILLED_AFTER_SECOND_BRONZE_COMMIT, "ingest", "--trigger-interval", "1 second"]
    for override in overrides:
        command += ["--set", override]
    with open(tmp_path / "ingest.log", "w") as log_file:
        job = subprocess.Popen(command, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                               start_new_session=True, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
        try:
            job.wait(timeout=240)
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
                job.wait()
    assert job.returncode == -signal.SIGKILL, (tmp_path / "ingest.log").read_text()[-3000:]
    bronze_path = config.table("bronze.events").path
    committed_before_restart = _commits(bronze_path) - 1  # commit 0 created the table
    assert committed_before_restart == 2
    # Every batch committed to bronze has its counts stored, but the one the kill cut short.
    metrics_path = config.table("bronze.ingest_metrics").path
    assert _rows(spark, metrics_path) == committed_before_restart - 1, "the kill did not land inside a batch"

    # The restart takes the remaining files in one batch: maxFilesPerTrigger only shapes new batches.
    restart_command = [sys.executable, "-m", "jobs.cli", "ingest", "--once"]
    for override in overrides[:1] + overrides[2:]:
        restart_command += ["--set", override]
    restart = subprocess.run(restart_command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert restart.returncode == 0, restart.stdout[-3000:] + restart.stderr[-3000:]

    bronze, quarantine, metrics = landed(spark, config)
    valid_ids, codes, duplicates = expected_outcome([line.encode() for line in world.events], [])
    rows = bronze.select("event_id").collect()
    assert len(rows) == len({r.event_id for r in rows}), "duplicates in bronze after restart"
    assert {r.event_id for r in rows} == valid_ids, "events lost across the kill"
    quarantined = [(r.source_partition, r.source_offset) for r in
                   quarantine.select("source_partition", "source_offset").collect()]
    assert len(quarantined) == len(set(quarantined)) == sum(codes.values())
    assert len(world.events) == len(rows) + len(quarantined) + duplicates
    # Both runs' metrics land in one table; no batch is in it twice, and they add up to
    # what landed: every line read once, as bronze, quarantine or a duplicate.
    stored = [(r.query_id, r.batch_id) for r in metrics.select("query_id", "batch_id").collect()]
    assert stored and len(stored) == len(set(stored))
    totals = metrics.agg(*[F.sum(name).alias(name) for name in
                           ("input_rows", "valid_rows", "quarantined_rows", "duplicate_rows")]).first()
    assert (totals.input_rows, totals.valid_rows, totals.quarantined_rows, totals.duplicate_rows) == (
        len(world.events), len(rows), len(quarantined), duplicates)


def test_sigterm_stops_the_continuous_job_cleanly(tmp_path):
    overrides = [f"storage.root={tmp_path}", "ingest.metrics_flush_seconds=1", *SPARK_TEST_SETTINGS]
    config = load_config("local", overrides)
    world = generate_world(WorldSpec(seed=62, users=10, products=10, days=2))
    write_jsonl(Path(config.under_root(config.source.files.path)), "events", world.events)
    command = [sys.executable, "-m", "jobs.cli", "ingest", "--trigger-interval", "1 second"]
    for override in overrides:
        command += ["--set", override]
    job = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True, env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    bronze_path = config.table("bronze.events").path
    deadline = time.monotonic() + 180
    while _commits(bronze_path) < 2 and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    assert _commits(bronze_path) >= 2
    job.send_signal(signal.SIGTERM)
    try:
        output, _ = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, output[-3000:]
    assert "SIGTERM: stopping ingest_events; a batch cut short is replayed at the next start" in output
    assert "stopped after batch" in output
