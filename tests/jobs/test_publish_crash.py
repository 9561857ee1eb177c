"""An export killed with SIGKILL halfway, then run again, ends with the serving store
equal to gold.email_content: the kill is placed by holding SQLite's write lock once the
export has written some of its rows, so the job is frozen mid-export when it dies."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs.publish_content import main as publish_main
from pipelines.config import load_config
from pipelines.runtime.delta_tables import delta_table, read_table
from pipelines.schemas import INTERACTIONS, PRODUCTS, PROFILES, RECOMMENDATIONS, user_features_schema
from pipelines.serving import open_store
from tests.jobs.test_publish_content import _append, _profile, name_keys, renamed
from tests.settings import SPARK_TEST_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
T = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
PEOPLE = 300
pytestmark = pytest.mark.usefixtures(name_keys.__name__)


def test_export_killed_mid_way_then_rerun_ends_equal_to_the_table(spark, tmp_path, capsys):
    overrides = [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, "holdout.share=0.0",
                 "publish.export_batch_rows=1", "serving.sqlite.busy_timeout_ms=600000"]
    config = load_config("local", overrides)
    users = [f"u{n:03d}" for n in range(PEOPLE)]
    _append(spark, config, "silver.profiles", PROFILES,
            [_profile(user, "Old", "en-GB", "granted", "granted") for user in users], cdf=True)
    _append(spark, config, "gold.user_features",
            user_features_schema(config.features.windows_days, config.features.rate_window_days), [], cdf=True)
    _append(spark, config, "silver.products", PRODUCTS, [
        ("p1", "Mug", "kitchen", 5.0, "GBP", None, "https://x.test/p1", True, True, T)])
    _append(spark, config, "silver.interactions", INTERACTIONS, [
        ("e1", "u000", "purchase", T, T.date(), "web", None, None, None, None, "GBP", None, "o1",
         [("p1", 1, 5.0)], 5.0, False, None, None, T)], cdf=True)
    _append(spark, config, "gold.recommendations", RECOMMENDATIONS, [], cdf=True)
    argv = [part for override in overrides for part in ("--set", override)]
    assert publish_main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    # Everyone plus the defaults: seven segments and the global row, all in en-GB.
    assert (first["export"]["mode"], first["export"]["upserted"]) == ("full", PEOPLE + 8)

    # Everyone renamed: the next export rewrites every content row, one per transaction.
    delta_table(spark, config.table("silver.profiles")).update("true", renamed("New"))
    store_path = config.under_root(config.serving.sqlite.path)
    log_path = tmp_path / "publish.log"
    with open(log_path, "w") as log_file:
        job = subprocess.Popen([sys.executable, "-m", "jobs.cli", "publish", *argv], cwd=ROOT, stdout=log_file,
                               stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "PYSPARK_PYTHON": sys.executable})
        watcher = sqlite3.connect(store_path, timeout=60, isolation_level=None)
        renamed_sql = "SELECT count(*) FROM records WHERE kind = 'content' AND body LIKE '%Hi New%'"
        deadline = time.monotonic() + 300
        try:
            while watcher.execute(renamed_sql).fetchone()[0] < 5 and time.monotonic() < deadline and job.poll() is None:
                time.sleep(0.01)
            # The job's next write waits for this lock: it is frozen mid-export when killed.
            watcher.execute("BEGIN IMMEDIATE")
            assert job.poll() is None, log_path.read_text()[-3000:]
        finally:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
            if watcher.in_transaction:
                watcher.rollback()
    written_before_kill = watcher.execute(renamed_sql).fetchone()[0]
    resume_point = watcher.execute("SELECT value FROM meta WHERE name = 'state:exported:gold.email_content'").fetchone()
    watcher.close()
    assert 5 <= written_before_kill < PEOPLE, f"{written_before_kill} of {PEOPLE} rows: not killed mid-export"
    assert json.loads(resume_point[0])["version"] == 1, "the resume point moved before the rows it covers were written"

    assert publish_main(argv) == 0
    rerun = json.loads(capsys.readouterr().out)
    # The tables were published by the killed run; the rerun only exports, from version 1 again.
    assert rerun["tables"]["gold.email_content"] == {"inserted": 0, "updated": 0, "deleted": 0}
    assert (rerun["export"]["mode"], rerun["export"]["upserted"]) == ("incremental", PEOPLE)

    table = {row.user_id: row for row in read_table(spark, config.table("gold.email_content")).collect()}
    defaults = {row.key: row for row in read_table(spark, config.table("gold.content_defaults")).collect()}
    with open_store(config) as store:
        served = {}
        for start in range(0, PEOPLE, 100):
            served |= store.read_many("content", users[start:start + 100])
            assert store.read_many("traits", users[start:start + 100]) == {}  # no features: no traits
            assert store.read_many("suppression", users[start:start + 100]) == {}
        served_defaults = store.read_many("default", [*defaults, "segment:nobody:en-GB"])
        assert json.loads(store.get_state("exported:gold.email_content"))["version"] == \
            delta_table(spark, config.table("gold.email_content")).history(1).first().version
    assert set(served) == set(table) == set(users)
    assert set(served_defaults) == set(defaults) and len(defaults) == 8
    assert {key: body["content_version"] for key, body in served_defaults.items()} == \
        {key: row.content_version for key, row in defaults.items()}
    for user, body in served.items():
        row = table[user]
        assert (body["content_version"], body["greeting"], body["fallback"]) == (
            row.content_version, {"first_name": "New", "text": "Hi New"}, "cold_start"), user
        assert [product["product_id"] for product in body["products"]] == ["p1"]
