"""tailor train end to end on a hand-built silver.interactions: the MLflow runs (nested grid
points, test metrics, input version), the registered model and its signature, and the
champion alias that moves only for a better version."""

from __future__ import annotations

import json
from datetime import timedelta

import mlflow
import pytest
from mlflow import MlflowClient

from jobs.train_recommender import main, train
from pipelines.config import load_config
from pipelines.recommend.tracking import champion_decision, tracking_uri
from pipelines.runtime.delta_tables import delta_table, ensure_table, read_table, table_version
from pipelines.schemas import INTERACTIONS
from tests.expectations.helpers import record_failure
from tests.jobs.recommend_helpers import START, write_interactions
from tests.settings import SPARK_TEST_SETTINGS

OVERRIDES = ["recommend.k=3", "recommend.models=[popular,buy_again,als]", "recommend.als.max_iter=4",
             "recommend.als.rank=4", "recommend.als.blocks=2",
             "recommend.blend.grid_step=0.5", "recommend.blend.validation_days=10",
             "recommend.train.test_days=10", "recommend.train.grid={als.alpha: [1.0, 10.0]}",
             "mlflow.registered_model=recs"]


def _argv(tmp_path, *extra):
    argv = []
    for override in (f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, *OVERRIDES, *extra):
        argv += ["--set", override]
    return argv


def _train(tmp_path, capsys, *extra):
    assert main(_argv(tmp_path, *extra)) == 0
    return json.loads(capsys.readouterr().out)


def test_train_logs_the_grid_registers_the_model_and_moves_the_champion_only_for_better(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, *OVERRIDES])
    write_interactions(spark, config)
    first = _train(tmp_path, capsys)
    assert (first["version"], first["champion"]) == ("1", True)
    assert first["decision"].startswith("champion: no champion to beat")

    mlflow.set_tracking_uri(tracking_uri(config))
    client = MlflowClient()
    parent = client.get_run(first["run_id"])
    # The split, written down from the data: history ends with the last purchase (day 56),
    # the test period is its last 10 days, validation the 10 before.
    last = START + timedelta(days=56)
    assert parent.data.params["as_of"] == last.isoformat()
    assert parent.data.params["test_start"] == (last - timedelta(days=10)).isoformat()
    assert parent.data.params["validation_start"] == (last - timedelta(days=20)).isoformat()
    assert parent.data.params["input.silver.interactions.version"] == "1"
    for model in ("popular", "buy_again", "als", "blend"):
        for name in ("ndcg_at_3", "precision_at_3", "recall_at_3", "map_at_3", "coverage"):
            assert f"test.{model}.{name}" in parent.data.metrics, (model, name)
    # One nested run per grid point; the chosen one has the best validation ndcg.
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{first['run_id']}'")
    by_alpha = {float(run.data.params["grid.als.alpha"]): run.data.metrics["validation.blend.ndcg_at_3"]
                for run in children}
    assert sorted(by_alpha) == [1.0, 10.0]
    # The rule: the best to 12 places, the first point of the grid on a tie.
    best = max(sorted(by_alpha), key=lambda alpha: (round(by_alpha[alpha], 12), -alpha))
    assert first["chosen"] == {"als.alpha": best}
    assert parent.data.metrics["test.blend.ndcg_at_3"] == pytest.approx(first["test"]["blend"]["ndcg@3"])

    # The registered model scores (user, item) pairs; one it never saw gets no prediction.
    assert str(client.get_model_version_by_alias("recs", "champion").version) == "1"
    loaded = mlflow.spark.load_model("models:/recs@champion")
    pairs = spark.createDataFrame([("g1", "garden-fav1"), ("g1", "kitchen-fav1"), ("stranger", "garden-1")],
                                  "user_id string, item_id string")
    predictions = {(row.user_id, row.item_id): row.prediction for row in loaded.transform(pairs).collect()}
    assert set(predictions) == {("g1", "garden-fav1"), ("g1", "kitchen-fav1")}
    assert predictions[("g1", "garden-fav1")] > predictions[("g1", "kitchen-fav1")]
    signature = mlflow.models.get_model_info("models:/recs/1").signature
    assert signature.inputs.input_names() == ["user_id", "item_id"]

    # A margin nobody can clear: version 2 is registered, the champion stays, and says why.
    second = _train(tmp_path, capsys, "recommend.train.champion_margin=1.0")
    assert (second["version"], second["champion"]) == ("2", False)
    assert str(client.get_model_version_by_alias("recs", "champion").version) == "1"
    tag = client.get_model_version("recs", "2").tags["champion_decision"]
    assert tag.startswith("not champion: ndcg@3 ") and "version 1's" in tag and "by more than 1" in tag, tag

    # A streamed commit repeats an event after the day's validate: train checks that version
    # itself, refuses it, and the champion stays where it was.
    table = config.table("silver.interactions")
    read_table(spark, table).limit(1).write.format("delta").mode("append").save(table.path)
    assert main(_argv(tmp_path)) == 2
    assert capsys.readouterr().err.strip() == (
        f"tailor: refusing to train: silver.interactions version {table_version(spark, table)}: "
        "silver.interactions.event_id_unique failed (tailor validate; quality.gate)")
    assert str(client.get_model_version_by_alias("recs", "champion").version) == "1"
    assert len(client.search_model_versions("name = 'recs'")) == 2


@pytest.mark.parametrize(("new", "champion", "margin", "moved"), [
    (0.30, None, 0.0, True),
    (0.31, 0.30, 0.005, True),
    (0.30, 0.30, 0.0, False),     # equal is not better
    (0.304, 0.30, 0.005, False),  # better, by less than the margin
])
def test_the_champion_moves_only_for_a_gain_over_the_margin(new, champion, margin, moved):
    assert champion_decision(new, champion, "3", margin, "ndcg@10")[0] is moved


def test_a_champion_that_cannot_be_scored_keeps_the_alias_and_the_reason_is_kept():
    moved, why = champion_decision(0.9, None, "3", 0.0, "ndcg@10", unreadable="no recommender.json")
    assert not moved and "could not be scored (no recommender.json)" in why


@pytest.mark.parametrize(("extra", "message"), [
    (["--set", "recommend.models=[popular,buy_again]"], "recommend.models: tailor train registers the ALS model"),
    (["--as-of", "yesterday"], "--as-of: 'yesterday' is not an ISO date or time"),
    (["--set", "recommend.train.grid={als.colour: [1]}"], "unknown setting 'als.colour'"),
    (["--set", "recommend.train.grid={candidates_per_model: [2]}"], "candidates_per_model (2)"),
])
def test_bad_options_are_one_line_before_spark_starts(tmp_path, capsys, extra, message):
    assert main([*extra, "--set", f"storage.root={tmp_path}"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and error.startswith("tailor: ") and len(error.splitlines()) == 1, error


def test_no_interactions_is_one_line(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, *OVERRIDES])
    ensure_table(spark, config.table("silver.interactions"), INTERACTIONS)
    assert main(_argv(tmp_path)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("tailor: silver.interactions holds no product interaction"), error


def test_train_refuses_interactions_that_failed_a_critical_expectation(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, *OVERRIDES])
    write_interactions(spark, config)
    version = record_failure(spark, config, "silver.interactions", "silver.interactions.event_id_unique")
    assert main(_argv(tmp_path)) == 2
    error = capsys.readouterr().err.strip()
    assert error == (f"tailor: refusing to train: silver.interactions version {version}: "
                     "silver.interactions.event_id_unique failed (tailor validate; quality.gate)")
    mlflow.set_tracking_uri(tracking_uri(config))
    assert MlflowClient().search_registered_models() == []


def test_train_reads_the_version_the_gate_checked_not_a_later_one(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, *OVERRIDES])
    write_interactions(spark, config)
    table = config.table("silver.interactions")
    checked = table_version(spark, table)
    delta_table(spark, table).delete()  # a commit landing after the gate: it empties the table
    result = train(spark, config, None, checked)
    mlflow.set_tracking_uri(tracking_uri(config))
    params = MlflowClient().get_run(result["run_id"]).data.params
    assert params["input.silver.interactions.version"] == str(checked)
    assert params["as_of"] == (START + timedelta(days=56)).isoformat()  # the checked version's last purchase
