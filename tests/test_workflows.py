"""The deployed workflows run what the code accepts: the Databricks bundle (deploy/databricks)
and the EMR steps and bootstrap (deploy/emr), checked by tests/workflows.py against the jobs'
own parsers, jobs/run.py's order and the configuration. No Spark, no network."""

from __future__ import annotations

import copy
import json
import subprocess
from collections import Counter
from typing import Any

import pytest

from jobs.run import STEP_NAMES
from pipelines.config import Config, load_config
from tests.workflows import (
    EMR_DIR,
    REQUIRED_VARIABLE_STAND_IN,
    Task,
    bootstrap_settings,
    bundle_problems,
    bundle_tasks,
    emr_problems,
    emr_steps,
    load_bundle,
    load_emr,
    parse_task,
    required_variables,
    setup_metadata,
    streaming_commands,
    target_variables,
)

TARGETS = ("dev", "prod")
# The daily chain on both platforms; the streams keep the rest of jobs/run.py's steps current,
# and generate and fetch are the demo's.
DAILY_CHAIN = ["load-catalog", "build-features", "validate", "train", "score", "publish"]


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return load_bundle()


@pytest.fixture(scope="module")
def emr() -> dict[str, Any]:
    return load_emr()


def _listed(problems: list[str]) -> str:
    return "\n".join(problems)


@pytest.mark.parametrize("target", TARGETS)
def test_every_bundle_task_runs_what_the_code_accepts(bundle, target):
    problems = bundle_problems(bundle, target)
    assert not problems, _listed(problems)


def test_every_emr_step_runs_what_the_code_accepts(emr):
    problems = emr_problems(emr)
    assert not problems, _listed(problems)


def _databricks_tasks(bundle, target: str = "prod") -> list[Task]:
    return [task for task, *_ in bundle_tasks(bundle, target)[1]]


def _emr_tasks(emr) -> list[Task]:
    return [task for task, *_ in emr_steps(emr)[1]]


def test_each_stream_runs_continuously_once_on_each_platform(bundle, emr):
    streams = streaming_commands()
    assert streams == {"ingest", "merge-profiles", "build-features"}
    for tasks in (_databricks_tasks(bundle), _emr_tasks(emr)):
        kept_running = Counter(task.command for task in tasks if task.continuous)
        assert kept_running == Counter(streams)


def _chain(tasks: list[Task], job: str) -> list[str]:
    return [task.command for task in tasks if task.job == job]


def test_the_daily_chain_runs_in_run_py_order_on_both_platforms(bundle, emr):
    assert DAILY_CHAIN == [name for name in STEP_NAMES if name in DAILY_CHAIN]
    # The bundle checks already hold each task after the one it depends on.
    assert _chain(_databricks_tasks(bundle), "tailor_batch") == DAILY_CHAIN
    assert _chain(_emr_tasks(emr), "batch-steps.json") == DAILY_CHAIN


def _is_daily(quartz_cron: str) -> bool:
    seconds, minutes, hours, day_of_month, month, day_of_week, *_ = quartz_cron.split()
    return (all(field.isdigit() for field in (seconds, minutes, hours)) and day_of_month in ("*", "?")
            and month == "*" and day_of_week in ("*", "?"))


def test_maintenance_runs_daily_on_both_platforms(bundle, emr):
    maintenance = bundle["files"]["resources/maintenance.yml"]["resources"]["jobs"]["tailor_maintenance"]
    assert [task["python_wheel_task"]["parameters"][:2] for task in maintenance["tasks"]] == [
        ["report", "quality"], ["maintain", "--remove-orphaned-checkpoints"]]
    # It finds erased people's quarantined records by the HMAC key, and holds no other key.
    cluster = maintenance["job_clusters"][0]["new_cluster"]
    assert sorted(cluster["spark_env_vars"]) == ["TAILOR_PII_HMAC_KEY"]
    steps = {step["Name"]: step["Args"] for step in emr["steps"]["maintenance-steps.json"]}
    assert "--remove-orphaned-checkpoints" in steps["tailor maintain"]
    assert _is_daily(maintenance["schedule"]["quartz_cron_expression"])
    batch = bundle["files"]["resources/batch.yml"]["resources"]["jobs"]["tailor_batch"]
    assert _is_daily(batch["schedule"]["quartz_cron_expression"])
    assert _chain(_emr_tasks(emr), "maintenance-steps.json") == ["report", "maintain"]


def _configs(bundle, target: str) -> dict[str, Config]:
    """Each task's configuration, by job/task key."""
    configs = {}
    for task in _databricks_tasks(bundle, target):
        args = parse_task(task, "databricks")[1]
        configs[f"{task.job}/{task.name}"] = load_config(args.env, args.overrides, args.conf_dir)
    return configs


def test_prod_uses_conf_databricks_names_and_dev_its_own(bundle):
    shipped = load_config("databricks")
    prod, dev = _configs(bundle, "prod"), _configs(bundle, "dev")
    for task, config in prod.items():
        assert (config.storage.catalog, config.storage.root) == (shipped.storage.catalog, shipped.storage.root), task
        # Unity Catalog's model registry takes catalog.schema.model names.
        if task.endswith(("/train", "/score")):
            assert config.mlflow.registered_model.split(".")[0] == config.storage.catalog, task
            assert len(config.mlflow.registered_model.split(".")) == 3, task
    for task, config in dev.items():
        # A dev deployment shares no table, checkpoint, experiment or model with prod.
        assert config.storage.catalog != prod[task].storage.catalog, task
        assert not config.storage.root.startswith(prod[task].storage.root), task
        if prod[task].mlflow != shipped.mlflow:
            assert config.mlflow.registered_model != prod[task].mlflow.registered_model, task
            assert config.mlflow.experiment != prod[task].mlflow.experiment, task


def test_the_ingest_stream_reads_the_brokers_the_deployer_must_give(bundle):
    # Required: without it conf/databricks.yaml leaves base's local broker, and the stream
    # would fail to connect instead of the deploy failing.
    assert required_variables(bundle) == {"kafka_bootstrap_servers"}
    assert load_config("databricks").source.kafka.bootstrap_servers == "127.0.0.1:9092"
    for target in TARGETS:
        configs = _configs(bundle, target)
        ingest = [config for task, config in configs.items() if task.endswith("/ingest")]
        assert [config.source.kafka.bootstrap_servers for config in ingest] == [
            REQUIRED_VARIABLE_STAND_IN["kafka_bootstrap_servers"]], target


def test_triggers_are_paused_in_dev_and_run_in_prod(bundle):
    assert target_variables(bundle, "dev")["pause_status"] == "PAUSED"
    assert target_variables(bundle, "prod")["pause_status"] == "UNPAUSED"


def test_the_bootstrap_installs_setup_pys_version_and_is_valid_bash():
    assert bootstrap_settings((EMR_DIR / "bootstrap.sh").read_text())["TAILOR_VERSION"] == setup_metadata()["version"]
    checked = subprocess.run(["bash", "-n", str(EMR_DIR / "bootstrap.sh")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_steps_files_are_what_aws_emr_add_steps_reads():
    for path in EMR_DIR.glob("*-steps.json"):
        steps = json.loads(path.read_text())
        assert isinstance(steps, list) and steps, path
        assert all(set(step) <= {"Type", "Name", "ActionOnFailure", "Jar", "Args", "MainClass", "Properties"}
                   for step in steps), path


# --- the checks catch a broken workflow ------------------------------------------------------


def _task(bundle, job_and_key: str) -> dict[str, Any]:
    job, key = job_and_key.split("/")
    return next(task for task in _job(bundle, job)["tasks"] if task["task_key"] == key)


def _job(bundle, job: str) -> dict[str, Any]:
    return next(content["resources"]["jobs"][job] for content in bundle["files"].values()
                if job in content["resources"]["jobs"])


def _params(bundle, job_and_key: str) -> list[str]:
    return _task(bundle, job_and_key)["python_wheel_task"]["parameters"]


def _replace(values: list[str], old: str, new: str) -> None:
    values[values.index(old)] = new


def _reorder_train_before_validate(bundle) -> None:
    _task(bundle, "tailor_batch/train")["depends_on"] = [{"task_key": "refresh_features"}]
    _task(bundle, "tailor_batch/validate")["depends_on"] = [{"task_key": "train"}]


CATALOG = "storage.catalog=${var.catalog}"
BROKEN_BUNDLES = {
    "unknown option": (lambda b: _params(b, "tailor_batch/validate").append("--no-such-option"),
                       "unrecognized arguments: --no-such-option"),
    "unknown command": (lambda b: _replace(_params(b, "tailor_batch/load_catalog"), "load-catalog", "load-catalogue"),
                        "unknown command 'load-catalogue'"),
    "unknown config key": (lambda b: _replace(_params(b, "tailor_batch/publish"), CATALOG, "storage.catalogue=x"),
                           "storage.catalogue: unknown key"),
    "wrong env": (lambda b: _replace(_params(b, "tailor_maintenance/maintain"), "databricks", "emr"),
                  "--env is 'emr', expected 'databricks'"),
    "unknown task key": (lambda b: _task(b, "tailor_batch/train").update(depends_on=[{"task_key": "validation"}]),
                         "depends on unknown task 'validation'"),
    "out of order": (_reorder_train_before_validate, "validate runs after train"),
    "validate bypassed": (lambda b: _task(b, "tailor_batch/publish").update(depends_on=[]),
                          "publish must run after validate succeeded"),
    "continuous stream told to stop": (lambda b: _params(b, "tailor_ingest/ingest").append("--once"),
                                       "must not stop on its own"),
    "scheduled stream that never ends": (
        lambda b: _params(b, "tailor_batch/refresh_features").remove("--refresh-windows"),
        "a stream started on a schedule must end"),
    "undeclared variable": (
        lambda b: _replace(_params(b, "tailor_batch/score"), CATALOG, "storage.catalog=${var.catalgo}"),
        "${var.catalgo} is not declared or has no value"),
    "retries on a continuous job": (lambda b: _task(b, "tailor_ingest/ingest").update(max_retries=3),
                                    "a continuous job takes no retry policy"),
    "secret written out": (lambda b: _job(b, "tailor_batch")["job_clusters"][0]["new_cluster"]["spark_env_vars"]
                           .update(TAILOR_PII_HMAC_KEY="c2VjcmV0"), "never the value"),
    "static Spark setting left to the session": (
        lambda b: _job(b, "tailor_batch")["job_clusters"][0]["new_cluster"].pop("spark_conf"),
        "spark.sql.codegen.cache.maxEntries must be '2000'"),
    "another wheel": (lambda b: _task(b, "tailor_batch/train").update(libraries=[{"whl": "../wheels/*.whl"}]),
                      "does not install the wheel the bundle builds"),
    "a pin other than the lock's": (
        lambda b: _task(b, "tailor_batch/validate")["libraries"][1]["pypi"].update(package="great-expectations==1.0.0"),
        "is not requirements.lock's great-expectations==1.24.1"),
    "train runs whatever validate did": (
        lambda b: _task(b, "tailor_batch/train").update(run_if="ALL_DONE"), "so a failed validate stops train"),
    "maintenance held back by a failed report": (
        lambda b: _task(b, "tailor_maintenance/maintain").pop("run_if"), "needs run_if ALL_DONE"),
    "unknown entry point": (
        lambda b: _task(b, "tailor_batch/score")["python_wheel_task"].update(entry_point="tailor-cli"),
        "entry_point 'tailor-cli' is not a console script"),
}


@pytest.mark.parametrize("broken", BROKEN_BUNDLES)
def test_the_bundle_checks_catch(bundle, broken):
    breaking, expected = BROKEN_BUNDLES[broken]
    copied = copy.deepcopy(bundle)
    breaking(copied)
    problems = bundle_problems(copied, "prod")
    assert any(expected in problem for problem in problems), _listed(problems) or "no problem found"


def _step(emr, file_and_name: str) -> dict[str, Any]:
    file, name = file_and_name.split("/")
    return next(step for step in emr["steps"][file] if step["Name"] == name)


def _args(emr, file_and_name: str) -> list[str]:
    return _step(emr, file_and_name)["Args"]


def _swap_train_and_validate(emr) -> None:
    steps = emr["steps"]["batch-steps.json"]
    train, validate = (steps.index(_step(emr, f"batch-steps.json/tailor {name}")) for name in ("train", "validate"))
    steps[train], steps[validate] = steps[validate], steps[train]


def _other_packages(emr) -> None:
    packages = ",".join(load_config("emr").spark.jars.packages)
    _replace(_args(emr, "batch-steps.json/tailor train"), packages, "io.delta:delta-spark_2.13:3.0.0")


WAIT = "spark.yarn.submit.waitAppCompletion"
BROKEN_EMR = {
    "missing job file": (lambda e: _replace(_args(e, "streaming-steps.json/tailor ingest"),
                                            "/opt/tailor/jobs/ingest_events.py", "/opt/tailor/jobs/ingest.py"),
                         "there is no jobs/ingest.py"),
    "unknown option": (lambda e: _args(e, "batch-steps.json/tailor publish").append("--everything"),
                       "unrecognized arguments: --everything"),
    "unknown config key": (lambda e: _args(e, "batch-steps.json/tailor score").extend(["--set", "recommend.kay=5"]),
                           "recommend.kay: unknown key"),
    "other packages": (_other_packages, "--packages must be the EMR config's spark.jars.packages"),
    "a failed validate does not stop the chain": (
        lambda e: _step(e, "batch-steps.json/tailor validate").update(ActionOnFailure="CONTINUE"),
        "must be ActionOnFailure CANCEL_AND_WAIT"),
    "out of order": (_swap_train_and_validate, "validate runs after train"),
    "a failed report cancels maintenance": (
        lambda e: _step(e, "maintenance-steps.json/tailor report quality").update(ActionOnFailure="CANCEL_AND_WAIT"),
        "report must be ActionOnFailure CONTINUE"),
    "a stream holding the step queue": (
        lambda e: _replace(_args(e, "streaming-steps.json/tailor merge-profiles"), f"{WAIT}=false", f"{WAIT}=true"),
        "a stream started on a schedule must end"),
    "another interpreter": (lambda e: _replace(_args(e, "maintenance-steps.json/tailor maintain"),
                                               "spark.pyspark.python=/opt/tailor/venv/bin/python",
                                               "spark.pyspark.python=python3"),
                            "the bootstrap's interpreter"),
    "bootstrap of another version": (
        lambda e: e.update(bootstrap=e["bootstrap"].replace(f"TAILOR_VERSION={setup_metadata()['version']}",
                                                            "TAILOR_VERSION=9.9.9")),
        "TAILOR_VERSION is 9.9.9"),
}


@pytest.mark.parametrize("broken", BROKEN_EMR)
def test_the_emr_checks_catch(emr, broken):
    breaking, expected = BROKEN_EMR[broken]
    copied = copy.deepcopy(emr)
    breaking(copied)
    problems = emr_problems(copied)
    assert any(expected in problem for problem in problems), _listed(problems) or "no problem found"
