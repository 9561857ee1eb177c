"""Every job that starts Spark leaves its outcome in audit.job_runs: a success, a failure
with its one-line reason; a read-only command leaves nothing."""

from __future__ import annotations

from jobs import load_catalog, maintain, status
from pipelines.config import load_config
from pipelines.runtime.delta_tables import read_table
from tests.settings import job_args


def test_outcomes_are_recorded_per_run(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}"])
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,name\nA1,Mug\n", encoding="utf-8")

    assert maintain.main(job_args(tmp_path, "--skip-vacuum")) == 0
    assert load_catalog.main(job_args(tmp_path, "--feed", str(feed), "--columns", "product_id=item_code")) == 2
    assert status.main(job_args(tmp_path)) == 0
    capsys.readouterr()

    runs = sorted(read_table(spark, config.table("audit.job_runs")).collect(), key=lambda run: run.started_at)
    assert [(run.job, run.env, run.outcome, run.exit_code) for run in runs] == [
        ("maintain", "local", "succeeded", 0), ("load_catalog", "local", "failed", 2)]
    assert runs[0].error is None
    assert runs[1].error.startswith("--columns: column 'item_code' is not in the feed")
    assert all(run.finished_at >= run.started_at and run.duration_s >= 0 for run in runs)
    assert runs[0].run_id != runs[1].run_id
