"""tailor evaluate-recs end to end on a small CSV: the printed JSON, the MLflow run, and
one-line answers to bad options."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta

import mlflow
import pytest

from jobs.evaluate_recs import main
from tests.settings import SPARK_TEST_SETTINGS

MODELS = {"popular", "buy_again", "als", "co_occurrence", "blend"}
METRICS = {"ndcg@5", "precision@5", "recall@5", "map@5", "coverage"}


def _write_world(path):
    """Two taste groups over 60 days; everyone reorders their favourite, and in the last
    20 days buys their group's items again."""
    start = datetime(2026, 9, 1)
    rows = []
    for group, prefix in (("g", "garden"), ("k", "kitchen")):
        for person in range(8):
            user = f"{group}{person}"
            for day in range(0, 60, 5):
                items = [f"{prefix}-{(person + day) % 6}", f"{prefix}-fav{person % 2}"]
                for item in items:
                    rows.append({"customer": user, "sku": item, "qty": 1,
                                 "ts": (start + timedelta(days=day)).isoformat(), "order": f"{user}-{day}"})
    rows.append({"customer": "", "sku": "garden-0", "qty": 1, "ts": start.isoformat(), "order": "guest"})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run(spark, tmp_path, *extra):
    data = tmp_path / "interactions.csv"
    if not data.exists():
        _write_world(data)
    overrides = [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, "recommend.als.max_iter=4",
                 "recommend.als.rank=4", "recommend.als.blocks=2",
                 "recommend.blend.grid_step=0.5", "recommend.blend.validation_days=15"]
    argv = ["--interactions", str(data), "--columns", "user=customer,item=sku,time=ts,basket=order", "--k", "5"]
    for override in overrides:
        argv += ["--set", override]
    return main([*argv, *extra])


def test_time_split_prints_every_model_and_logs_the_same_to_mlflow(spark, tmp_path, capsys):
    assert _run(spark, tmp_path, "--split", "time", "--at", "2026-10-11") == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1, out  # one JSON object, nothing else
    result = json.loads(out)
    assert set(result["models"]) == MODELS
    for name, values in result["models"].items():
        assert set(values) == METRICS, name
        assert all(0.0 <= value <= 1.0 for value in values.values()), (name, values)
    assert result["users"] == 16 and result["items"] == 16  # the guest row has no user
    # Everyone reorders a favourite they bought in training: buy-again must find it.
    assert result["models"]["buy_again"]["precision@5"] > 0

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    runs = mlflow.search_runs(experiment_names=["tailor"], output_format="list")
    assert len(runs) == 1
    logged = runs[0].data
    assert logged.metrics["blend.ndcg_at_5"] == pytest.approx(result["models"]["blend"]["ndcg@5"])
    assert logged.params["split"] == "time" and logged.params["k"] == "5"


def test_random_split_with_exclude_seen_gives_buy_again_nothing(spark, tmp_path, capsys):
    assert _run(spark, tmp_path, "--split", "random", "--test-fraction", "0.25", "--seed", "7", "--exclude-seen",
                "--models", "popular,buy_again", "--no-mlflow") == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["models"]) == {"popular", "buy_again", "blend"}
    assert result["models"]["buy_again"]["ndcg@5"] == 0.0
    assert not (tmp_path / "mlflow").exists()


def test_parquet_written_by_pandas_with_nanosecond_times_is_read(spark, tmp_path, capsys):
    import pandas as pd

    data = tmp_path / "interactions.parquet"
    frame = pd.DataFrame({
        "user": ["a", "a", "a", "b", "b", "b"],
        "item": ["x", "y", "x", "x", "z", "x"],
        "when": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-03-01", "2026-01-01", "2026-01-05",
                                "2026-03-02"]),
    })
    frame.to_parquet(data)  # pandas writes timestamp[ns], which Spark cannot read as a timestamp
    argv = ["--interactions", str(data), "--columns", "user=user,item=item,time=when", "--split", "time",
            "--at", "2026-02-01", "--models", "buy_again", "--k", "2", "--no-mlflow"]
    for override in (f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, "recommend.blend.validation_days=20"):
        argv += ["--set", override]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    # Both bought x before February and again in March: buy-again ranks it first for each.
    assert result["users"] == 2 and result["models"]["buy_again"]["precision@2"] == pytest.approx(0.5)


@pytest.mark.parametrize(("extra", "message"), [
    (["--split", "random", "--where", "qty >>> 1"], "--where: "),
    (["--split", "random", "--where", "no_such_column = 1"], "--where: "),
    (["--split", "time", "--at", "2030-01-01"], "no user of the training split has anything in the test split"),
])
def test_bad_input_found_by_spark_is_one_line_too(spark, tmp_path, capsys, extra, message):
    assert _run(spark, tmp_path, "--no-mlflow", *extra) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tailor: {message}") and len(error.splitlines()) == 1, error


@pytest.mark.parametrize(("extra", "message"), [
    (["--split", "time", "--at", "yesterday", "--columns", "user=customer,item=sku,time=ts"], "--at: 'yesterday'"),
    (["--split", "random", "--k", "60"], "--k: k (60) is more than candidates_per_model"),
    (["--split", "random", "--models", "als,als"], "--models: a model is named twice"),
    (["--interactions", "/nowhere/x.csv", "--split", "random"], "--interactions: /nowhere/x.csv does not exist"),
    (["--split", "time", "--at", "2026-10-01", "--columns", "user=customer,item=sku"],
     "--split time: name the time column"),
    (["--split", "random", "--columns", "shopper=customer"], "--columns: unknown role 'shopper'"),
    (["--split", "random", "--models", "popular,magic"], "--models: unknown model 'magic'"),
])
def test_bad_options_are_one_line(tmp_path, capsys, extra, message):
    data = tmp_path / "interactions.csv"
    data.write_text("customer,sku\nu,i\n")
    argv = ["--interactions", str(data), *extra]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"tailor: {message}") and len(error.splitlines()) == 1, error
