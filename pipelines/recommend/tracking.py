"""MLflow at the edge: where runs go, and logging one evaluation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pipelines.config import Config
from pipelines.errors import ConfigError


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


def use_experiment(config: Config) -> str:
    """Point MLflow at the configured store and experiment (created on first use, with its
    artifacts beside a local store); returns the experiment's id."""
    import mlflow

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
