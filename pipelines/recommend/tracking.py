"""MLflow at the edge: where runs go, and logging one evaluation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.config import Config
from pipelines.errors import ConfigError, TailorError


def quiet_mlflow() -> None:
    """MLflow's INFO lines and download progress bars on stderr would bury a job's one-line
    answer; its warnings still show."""
    import logging
    import os

    import mlflow  # noqa: F401 - its import sets its loggers' level, which this overrides

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def tracking_uri(config: Config) -> str:
    """mlflow.tracking_uri, or a SQLite store under a local storage.root."""
    if config.mlflow.tracking_uri:
        return config.mlflow.tracking_uri
    root = config.under_root("mlflow")
    if "://" in root:
        raise ConfigError("mlflow.tracking_uri: must be set when storage.root is not a local folder "
                          f"({config.storage.root})")
    Path(root).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root}/mlflow.db"


def existing_store_client(config: Config) -> Any | None:
    """An MlflowClient on the configured store, for reading: None when the store is the
    local SQLite default and does not exist yet (a reader must not create an empty one)."""
    from mlflow import MlflowClient

    uri = config.mlflow.tracking_uri
    if uri is None:
        database = Path(config.under_root("mlflow")) / "mlflow.db"
        if not database.exists():
            return None
        uri = f"sqlite:///{database}"
    quiet_mlflow()
    return MlflowClient(tracking_uri=uri)


def use_experiment(config: Config) -> str:
    """Point MLflow at the configured store and experiment (created on first use, with its
    artifacts beside a local store); returns the experiment's id."""
    import mlflow

    quiet_mlflow()
    uri = tracking_uri(config)
    mlflow.set_tracking_uri(uri)
    experiment = config.mlflow.experiment
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = Path(uri.removeprefix("sqlite:///")).parent.joinpath("artifacts").as_uri()
    return mlflow.create_experiment(experiment, artifact_location=artifacts)


def metric_key(model: str, metric: str) -> str:
    """`als`, `ndcg@10` -> `als.ndcg_at_10` (MLflow keys do not take '@')."""
    return f"{model}.{re.sub('@', '_at_', metric)}"


def log_evaluation(config: Config, result: dict[str, Any], params: dict[str, Any], run_name: str) -> str:
    """One MLflow run holding the parameters and every model's metrics; returns its id."""
    import mlflow

    experiment_id = use_experiment(config)
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
        mlflow.log_params({f"blend.weight.{name}": weight for name, weight in result["blend_weights"].items()})
        mlflow.log_metrics({metric_key(model, name): value for model, values in result["models"].items()
                            for name, value in values.items()})
        mlflow.log_metrics({"users": result["users"], "items": result["items"]})
        mlflow.log_dict(result, "evaluation.json")
        return run.info.run_id


CHAMPION = "champion"
RECOMMENDER_FILE = "recommender.json"


def log_metrics_under(prefix: str, models: dict[str, dict[str, float]]) -> None:
    """Every model's metrics on the active run, as `<prefix>.<model>.<metric>`."""
    import mlflow

    mlflow.log_metrics({f"{prefix}.{metric_key(model, name)}": value for model, values in models.items()
                        for name, value in values.items()})


def champion(name: str) -> tuple[str, dict[str, Any]] | None:
    """(version, its recommender.json) of the registered model's champion; None when
    there is none. A champion whose file cannot be read raises TailorError."""
    from mlflow import MlflowClient
    from mlflow.artifacts import load_dict
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    try:
        return version.version, load_dict(f"runs:/{version.run_id}/{RECOMMENDER_FILE}")
    except (MlflowException, OSError, ValueError) as error:
        raise TailorError(f"the champion, {name} version {version.version}, has no readable "
                          f"{RECOMMENDER_FILE}: {str(error).splitlines()[0]}") from None


def log_spark_model(model, name: str | None):
    """Log a Spark ML pipeline (input user_id, item_id; output prediction) as `model` on the
    active run, registered under `name` when given; returns MLflow's ModelInfo."""
    import mlflow.spark
    import pyspark
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    signature = ModelSignature(inputs=Schema([ColSpec("string", "user_id"), ColSpec("string", "item_id")]),
                               outputs=Schema([ColSpec("float", "prediction")]))
    # Named requirements: inferring them would load the model in a second Spark.
    return mlflow.spark.log_model(model, "model", registered_model_name=name, signature=signature,
                                  pip_requirements=[f"pyspark=={pyspark.__version__}"])


def champion_decision(new_score: float, champion_score: float | None, champion_version: str | None,
                      margin: float, metric: str, unreadable: str | None = None) -> tuple[bool, str]:
    """(whether the new version becomes champion, why, in a sentence). `unreadable` says
    why a champion there is could not be scored: the alias then stays (a store that is
    down for a minute must not hand the emails to an unchecked model); move it by hand
    with MlflowClient().set_registered_model_alias once the cause is known."""
    if unreadable:
        return False, (f"not champion: the champion could not be scored ({unreadable}); {metric} {new_score:.4f}; "
                       "move the alias by hand if this version should serve")
    if champion_score is None:
        return True, f"champion: no champion to beat ({metric} {new_score:.4f})"
    if new_score > champion_score + margin:
        return True, (f"champion: {metric} {new_score:.4f} beats version {champion_version}'s "
                      f"{champion_score:.4f} by more than {margin:g}")
    return False, (f"not champion: {metric} {new_score:.4f} does not beat version {champion_version}'s "
                   f"{champion_score:.4f} by more than {margin:g}")


def record_decision(name: str, version: str, moved: bool, decision: str) -> None:
    """Move the champion alias to `version` when `moved`; tag the version with why."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if moved:
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_model_version_tag(name, version, "champion_decision", decision)


def champion_version(name: str) -> Any:
    """The model version (MLflow's ModelVersion) `models:/<name>@champion` names, from the
    current tracking URI; no champion is one TailorError line. Needs no Spark."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    quiet_mlflow()
    try:
        return MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise TailorError(f"no champion: models:/{name}@{CHAMPION} does not exist; run tailor train first, and "
                          "check mlflow.registered_model and mlflow.tracking_uri") from None


def load_champion(name: str) -> tuple[str, Any, dict[str, Any]]:
    """(version, the Spark model, its recommender.json) of `models:/<name>@champion`; a
    missing or unreadable champion is one TailorError line."""
    import mlflow.spark
    from mlflow.artifacts import load_dict

    version = champion_version(name)
    try:
        model = mlflow.spark.load_model(f"models:/{name}/{version.version}")
        recommender = load_dict(f"runs:/{version.run_id}/{RECOMMENDER_FILE}")
    except Exception as error:  # noqa: BLE001 - whatever broke, the answer is the same line
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise TailorError(f"the champion, models:/{name}@{CHAMPION} (version {version.version}), could not be "
                          f"loaded: {reason}") from None
    return str(version.version), model, recommender
