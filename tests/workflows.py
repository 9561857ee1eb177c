"""Static checks of the deployed workflows: the Databricks bundle (deploy/databricks) and the
EMR steps and bootstrap (deploy/emr), against the code they run.

Every task or step becomes one `tailor <command> [arguments]` call, which must name a job in
jobs.cli.COMMANDS, parse with that job's own build_parser(), carry the platform's --env, and
whose --set overrides must resolve with load_config under that environment. Around that: the
wheel the tasks install is the one the bundle builds, the batch chain runs in jobs/run.py's
order with validate before what it gates, a stream runs either continuously or bounded, and
the EMR job files and interpreter are where the bootstrap puts them.

Each check returns the problems it found, one line each naming the job and task, so a test
asserts there are none and a negative test that a broken copy is caught. Nothing here starts
Spark or talks to a workspace or to AWS.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobs.cli import COMMANDS
from jobs.run import STEP_NAMES
from pipelines.config import load_config
from pipelines.errors import TailorError

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_DIR = ROOT / "deploy" / "databricks"
EMR_DIR = ROOT / "deploy" / "emr"
# Spark settings a running session cannot change: on Databricks the session exists before
# a job's code runs, so each job cluster sets them as the config does.
STATIC_SPARK_CONF = ("spark.sql.codegen.cache.maxEntries",)

# Options that make a streaming job end on its own: --once processes the backlog and stops
# (on the stream's checkpoint); build-features --refresh-windows recomputes every user's row
# instead of running the stream (no checkpoint).
BOUNDED_OPTIONS = ("once", "refresh_windows")
# validate's failed critical expectations must stop these (README, Data quality: quality.gate).
GATED_BY_VALIDATE = ("train", "publish")
# Commands that read the tables and record what they saw: their failure must not hold back
# the tasks after them (Databricks run_if ALL_DONE, EMR ActionOnFailure CONTINUE).
OBSERVERS = ("report",)
PAUSE_STATUSES = ("PAUSED", "UNPAUSED")
# Databricks: a continuous job takes no retry policy (it retries with exponential backoff).
RETRY_SETTINGS = ("max_retries", "min_retry_interval_millis", "retry_on_timeout")
EMR_ACTIONS_ON_FAILURE = ("CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER")
# spark-submit options the steps may use; each takes one value.
SPARK_SUBMIT_OPTIONS = ("--deploy-mode", "--packages", "--conf", "--name", "--driver-memory",
                        "--executor-memory", "--executor-cores", "--num-executors")
_VARIABLE = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")
_SECRET_REFERENCE = re.compile(r"^\{\{secrets/[^/{}]+/[^/{}]+\}\}$")


@dataclass(frozen=True)
class Task:
    """One scheduled `tailor <command> <argv>` call."""

    where: str          # "databricks:dev tailor_batch/validate", "emr batch-steps.json: tailor validate"
    job: str            # the bundle job's key, or the steps file
    name: str           # the task key, or the step's name
    command: str
    argv: tuple[str, ...]
    continuous: bool    # kept running by the platform, not started by a schedule


# --- what every task shares ----------------------------------------------------------------


def setup_metadata() -> dict[str, Any]:
    """name, version and console scripts from setup.py's setup() call, read without running it."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup")
    keywords = {keyword.arg: keyword.value for keyword in call.keywords}
    scripts = ast.literal_eval(keywords["entry_points"])["console_scripts"]
    return {"name": ast.literal_eval(keywords["name"]), "version": ast.literal_eval(keywords["version"]),
            "console_scripts": dict(script.replace(" ", "").split("=", 1) for script in scripts)}


def job_parser(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[command][0])
    if not hasattr(module, "build_parser"):
        raise LookupError(f"{COMMANDS[command][0]} has no build_parser(): not a job to schedule")
    return module.build_parser()


def is_streaming(command: str) -> bool:
    """A job with --once runs a stream unless told to stop."""
    return job_parser(command).get_default("once") is not None


def streaming_commands() -> set[str]:
    return {command for command in COMMANDS
            if hasattr(importlib.import_module(COMMANDS[command][0]), "build_parser") and is_streaming(command)}


def locked_versions() -> dict[str, str]:
    """requirements.lock's pins, by normalised project name."""
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.lock").read_text(encoding="utf-8"),
                      flags=re.MULTILINE)
    return {_normalised(name): version for name, version in pins}


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def entry_point_problems(target: str) -> list[str]:
    """`module:function` of a console script must import."""
    module, _, function = target.partition(":")
    try:
        found = hasattr(importlib.import_module(module), function)
    except ImportError as error:
        return [f"console script {target}: {error}"]
    return [] if found else [f"console script {target}: {module} has no {function}"]


def parse_task(task: Task, env: str) -> tuple[list[str], argparse.Namespace | None]:
    """The task's problems with its command, arguments, --env and --set overrides, and its
    parsed arguments when they parsed."""
    if task.command not in COMMANDS:
        return [f"{task.where}: unknown command '{task.command}'"], None
    try:
        parser = job_parser(task.command)
    except LookupError as error:
        return [f"{task.where}: {error}"], None
    refused = io.StringIO()
    try:
        with contextlib.redirect_stderr(refused), contextlib.redirect_stdout(io.StringIO()):
            args = parser.parse_args(list(task.argv))
    except SystemExit:
        reason = refused.getvalue().strip().splitlines()[-1:] or ["exited while parsing"]
        return [f"{task.where}: tailor {task.command} refuses {list(task.argv)}: {reason[0]}"], None
    problems = []
    if args.env != env:
        problems.append(f"{task.where}: --env is '{args.env}', expected '{env}'")
    try:
        load_config(env, args.overrides, args.conf_dir)
    except TailorError as error:
        problems.append(f"{task.where}: the configuration does not resolve under {env}: {error}")
    return problems, args


def is_bounded(args: argparse.Namespace) -> bool:
    return any(getattr(args, option, False) for option in BOUNDED_OPTIONS)


def trigger_problems(tasks: list[tuple[Task, argparse.Namespace]], kept_running_by: str) -> list[str]:
    """A continuous task runs a stream, unbounded; a scheduled one ends on its own; and a
    stream never runs both ways, as two queries would share one checkpoint.
    `kept_running_by` says how the platform keeps a task running."""
    problems = []
    kept_running = {task.command for task, _ in tasks if task.continuous}
    for task, args in tasks:
        streaming = is_streaming(task.command)
        if task.continuous and not streaming:
            problems.append(f"{task.where}: runs continuously, but tailor {task.command} is not a stream")
        elif task.continuous and is_bounded(args):
            problems.append(f"{task.where}: runs continuously, so it must not stop on its own "
                            f"(--once / --refresh-windows)")
        elif not task.continuous and streaming and not is_bounded(args):
            problems.append(f"{task.where}: a stream started on a schedule must end (--once or "
                            f"--refresh-windows), or be kept running: {kept_running_by}")
        elif not task.continuous and getattr(args, "once", False) and task.command in kept_running:
            problems.append(f"{task.where}: --once shares the checkpoint of the continuous "
                            f"tailor {task.command}")
    return problems


def chain_problems(where: str, order: list[tuple[str, str, list[str]]]) -> list[str]:
    """`order` holds (task, command, upstream tasks) of one job: a single chain whose commands
    come in jobs/run.py's step order, with validate upstream of what it gates."""
    problems = []
    names = {name for name, _, _ in order}
    command_of = {name: command for name, command, _ in order}
    upstream_of = {name: upstream for name, _, upstream in order}
    for name, command, upstream in order:
        for parent in upstream:
            if parent not in names:
                problems.append(f"{where}/{name}: depends on unknown task '{parent}'")
            elif command_of[parent] in STEP_NAMES and command in STEP_NAMES and (
                    STEP_NAMES.index(command_of[parent]) >= STEP_NAMES.index(command)):
                problems.append(f"{where}/{name}: {command} runs after {command_of[parent]}, "
                                f"against jobs/run.py's order")
    if problems:
        return problems
    roots = [name for name, _, upstream in order if not upstream]
    children = [parent for _, _, upstream in order for parent in upstream]
    if len(order) > 1 and (len(roots) != 1 or any(len(upstream) > 1 for upstream in upstream_of.values())
                           or len(children) != len(set(children))):
        problems.append(f"{where}: the tasks do not form one chain")

    def ancestors(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        found: set[str] = set()
        for parent in upstream_of.get(name, []):
            if parent not in seen:
                found |= {parent} | ancestors(parent, seen | {name})
        return found

    validations = {name for name, command in command_of.items() if command == "validate"}
    for name, command in command_of.items():
        if validations and command in GATED_BY_VALIDATE and not validations & ancestors(name):
            problems.append(f"{where}/{name}: {command} must run after validate succeeded")
    return problems


# --- Databricks ------------------------------------------------------------------------------


def load_bundle(directory: Path = BUNDLE_DIR) -> dict[str, Any]:
    """databricks.yml and each file it includes, as read."""
    root = yaml.safe_load((directory / "databricks.yml").read_text(encoding="utf-8"))
    files = {}
    for pattern in root.get("include", []):
        for path in sorted(directory.glob(pattern)):
            files[path.relative_to(directory).as_posix()] = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {"directory": directory, "root": root, "files": files}


# What a required variable (declared without a default) stands for here: the deployer gives it.
REQUIRED_VARIABLE_STAND_IN = {"kafka_bootstrap_servers": "broker-1.example:9092,broker-2.example:9092"}


def required_variables(bundle: dict[str, Any]) -> set[str]:
    """Variables declared without a default: `databricks bundle deploy` refuses to run
    until the deployer gives each a value."""
    return {name for name, spec in (bundle["root"].get("variables") or {}).items()
            if "default" not in (spec or {})}


def target_variables(bundle: dict[str, Any], target: str) -> dict[str, Any]:
    root = bundle["root"]
    values = {name: (spec or {}).get("default") for name, spec in (root.get("variables") or {}).items()}
    values.update({name: REQUIRED_VARIABLE_STAND_IN.get(name) for name in required_variables(bundle)})
    values.update(root["targets"][target].get("variables") or {})
    return values


def substitute(node: Any, variables: dict[str, Any], unknown: set[str]) -> Any:
    """`node` with every ${var.name} replaced by the target's value (simple variables only);
    names not declared, or declared without a value, are added to `unknown`. Other
    references (${bundle.name}, ${workspace...}) are the CLI's and stay."""
    if isinstance(node, dict):
        return {key: substitute(value, variables, unknown) for key, value in node.items()}
    if isinstance(node, list):
        return [substitute(value, variables, unknown) for value in node]
    if not isinstance(node, str):
        return node

    def value(match: re.Match[str]) -> str:
        if variables.get(match.group(1)) is None:
            unknown.add(match.group(1))
            return match.group(0)
        return str(variables[match.group(1)])

    return _VARIABLE.sub(value, node)


def artifact_problems(bundle: dict[str, Any]) -> tuple[list[str], set[str]]:
    """Problems with the wheel artifact, and the wheel globs it yields (absolute, normalised)."""
    directory, artifacts = bundle["directory"], bundle["root"].get("artifacts") or {}
    wheels = [(name, spec) for name, spec in artifacts.items() if (spec or {}).get("type") == "whl"]
    if not wheels:
        return ["databricks.yml: no artifact of type whl builds the wheel"], set()
    problems, globs = [], set()
    for name, spec in wheels:
        source = directory / spec.get("path", ".")
        if not (source / "setup.py").is_file():
            problems.append(f"artifact {name}: path {spec.get('path')} holds no setup.py")
        built = re.search(r"--wheel-dir\s+(\S+)", spec.get("build", ""))
        for entry in spec.get("files") or []:
            pattern = os.path.normpath(directory / entry["source"])
            globs.add(pattern)
            if built and os.path.normpath(source / built.group(1)) != os.path.dirname(pattern):
                problems.append(f"artifact {name}: builds into {built.group(1)}, but uploads {entry['source']}")
    return problems, globs


def bundle_tasks(bundle: dict[str, Any], target: str) -> tuple[list[str], list[tuple[Task, str, dict, dict]]]:
    """Problems with the target's jobs as declared, and each task with its job's key, its
    resource file and its job, variables substituted."""
    root = bundle["root"]
    if target not in (root.get("targets") or {}):
        return [f"databricks.yml: no target '{target}'"], []
    handled = {"mode", "default", "variables", "workspace", "run_as", "presets", "git", "permissions"}
    problems = [f"target {target}: sets {key}, which tests/workflows.py does not merge"
                for key in root["targets"][target] if key not in handled]
    variables = target_variables(bundle, target)
    unknown: set[str] = set()
    seen: dict[str, str] = {}
    found = []
    for file, content in bundle["files"].items():
        jobs = substitute(((content or {}).get("resources") or {}).get("jobs") or {}, variables, unknown)
        for key, job in jobs.items():
            if key in seen:
                problems.append(f"job {key}: declared in both {seen[key]} and {file}")
            seen[key] = file
            keys = [task.get("task_key") for task in job.get("tasks") or []]
            if not keys:
                problems.append(f"{file} {key}: has no tasks")
            problems += [f"{file} {key}: task key '{name}' used twice" for name in set(keys) if keys.count(name) > 1]
            for task in job.get("tasks") or []:
                parameters = (task.get("python_wheel_task") or {}).get("parameters") or [""]
                found.append((Task(where=f"databricks:{target} {key}/{task.get('task_key')}", job=key,
                                   name=str(task.get("task_key")), command=str(parameters[0]),
                                   argv=tuple(map(str, parameters[1:])), continuous="continuous" in job),
                              file, job, task))
    problems += [f"target {target}: ${{var.{name}}} is not declared or has no value" for name in sorted(unknown)]
    return problems, found


def bundle_problems(bundle: dict[str, Any], target: str) -> list[str]:
    """Everything wrong with one target of the bundle; empty when it would deploy and run."""
    problems, wheels = artifact_problems(bundle)
    declared, tasks = bundle_tasks(bundle, target)
    problems += declared
    metadata = setup_metadata()
    secret_variables = set(load_config("databricks").secrets.model_dump().values())
    locked = locked_versions()
    parsed: list[tuple[Task, argparse.Namespace]] = []
    jobs: dict[str, tuple[str, dict, list[tuple[Task, dict]]]] = {}
    command_by_key = {(task.job, task.name): task.command for task, _, _, _ in tasks}
    for task, file, job, spec in tasks:
        jobs.setdefault(task.job, (file, job, []))[2].append((task, spec))
        wheel_task = spec.get("python_wheel_task")
        if not wheel_task:
            problems.append(f"{task.where}: not a python_wheel_task")
            continue
        if wheel_task.get("package_name") != metadata["name"]:
            problems.append(f"{task.where}: package_name '{wheel_task.get('package_name')}' is not "
                            f"setup.py's '{metadata['name']}'")
        script = metadata["console_scripts"].get(wheel_task.get("entry_point"))
        if script is None:
            problems.append(f"{task.where}: entry_point '{wheel_task.get('entry_point')}' is not a console "
                            f"script of setup.py ({', '.join(metadata['console_scripts'])})")
        else:
            problems += [f"{task.where}: {problem}" for problem in entry_point_problems(script)]
        libraries = {os.path.normpath(bundle["directory"] / Path(file).parent / library["whl"])
                     for library in spec.get("libraries") or [] if "whl" in library}
        if not libraries & wheels:
            problems.append(f"{task.where}: does not install the wheel the bundle builds ({', '.join(wheels)})")
        for library in spec.get("libraries") or []:
            name, _, version = str((library.get("pypi") or {}).get("package", "==")).partition("==")
            if "pypi" in library and locked.get(_normalised(name)) != version:
                problems.append(f"{task.where}: pypi {name}=={version} is not requirements.lock's "
                                f"{name}=={locked.get(_normalised(name))}")
        clusters = {cluster.get("job_cluster_key") for cluster in job.get("job_clusters") or []}
        if not (spec.get("job_cluster_key") in clusters or "new_cluster" in spec or "existing_cluster_id" in spec):
            problems.append(f"{task.where}: runs on no cluster of its job (job_cluster_key "
                            f"'{spec.get('job_cluster_key')}')")
        if task.command in GATED_BY_VALIDATE and spec.get("run_if", "ALL_SUCCESS") != "ALL_SUCCESS":
            problems.append(f"{task.where}: run_if must be ALL_SUCCESS, so a failed validate stops {task.command}")
        observed = [parent.get("task_key") for parent in spec.get("depends_on") or []
                    if command_by_key.get((task.job, parent.get("task_key"))) in OBSERVERS]
        if observed and spec.get("run_if") != "ALL_DONE":
            problems.append(f"{task.where}: runs after {', '.join(observed)}, whose failure must not hold it "
                            f"back: needs run_if ALL_DONE")
        if task.continuous and spec.get("depends_on"):
            problems.append(f"{task.where}: a continuous job takes no task dependencies")
        if task.continuous:
            problems += [f"{task.where}: a continuous job takes no retry policy ({setting})"
                         for setting in RETRY_SETTINGS if setting in spec]
        task_problems, args = parse_task(task, "databricks")
        problems += task_problems
        if args is not None:
            parsed.append((task, args))
    problems += trigger_problems(parsed, "a job with `continuous`")
    for key, (file, job, job_tasks) in jobs.items():
        problems += _job_problems(f"{file} {key}", job, secret_variables)
        order = [(task.name, task.command, [parent.get("task_key") for parent in spec.get("depends_on") or []])
                 for task, spec in job_tasks]
        problems += chain_problems(f"databricks:{target} {key}", order)
    return problems


def _job_problems(where: str, job: dict[str, Any], secret_variables: set[str]) -> list[str]:
    problems = []
    triggers = [name for name in ("continuous", "schedule", "trigger") if name in job]
    if len(triggers) != 1:
        problems.append(f"{where}: needs exactly one of continuous, schedule or trigger, has {triggers or 'none'}")
    for name in triggers:
        status = (job[name] or {}).get("pause_status")
        if status not in PAUSE_STATUSES:
            problems.append(f"{where}: {name}.pause_status is {status!r}, not one of {', '.join(PAUSE_STATUSES)}")
    if "schedule" in job and not {"quartz_cron_expression", "timezone_id"} <= set(job["schedule"] or {}):
        problems.append(f"{where}: schedule needs quartz_cron_expression and timezone_id")
    expected_conf = load_config("databricks").spark.conf
    for cluster in job.get("job_clusters") or []:
        spark_conf = (cluster.get("new_cluster") or {}).get("spark_conf") or {}
        for key in STATIC_SPARK_CONF:
            if str(spark_conf.get(key)) != str(expected_conf.get(key)):
                problems.append(f"{where}: new_cluster.spark_conf {key} must be {expected_conf.get(key)!r} as in "
                                f"the config (a job's session cannot set it), not {spark_conf.get(key)!r}")
        for variable, value in ((cluster.get("new_cluster") or {}).get("spark_env_vars") or {}).items():
            if variable not in secret_variables:
                problems.append(f"{where}: spark_env_vars {variable} is no variable the config's secrets name")
            if not _SECRET_REFERENCE.match(str(value)):
                problems.append(f"{where}: spark_env_vars {variable} must be a {{{{secrets/scope/key}}}} "
                                f"reference, never the value")
    return problems


# --- EMR -------------------------------------------------------------------------------------


def load_emr(directory: Path = EMR_DIR) -> dict[str, Any]:
    """The steps files (`aws emr add-steps --steps file://...`) and the bootstrap, as read."""
    return {"steps": {path.name: json.loads(path.read_text(encoding="utf-8"))
                      for path in sorted(directory.glob("*-steps.json"))},
            "bootstrap": (directory / "bootstrap.sh").read_text(encoding="utf-8")}


def bootstrap_settings(text: str) -> dict[str, str]:
    """The bootstrap's plain NAME=value assignments."""
    return dict(re.findall(r"^([A-Z_]+)=([^\s\"'$]+)", text, flags=re.MULTILINE))


def bootstrap_problems(text: str) -> list[str]:
    settings, problems = bootstrap_settings(text), []
    version = setup_metadata()["version"]
    if "set -euo pipefail" not in text:
        problems.append("bootstrap.sh: must `set -euo pipefail`, so a failed install fails the node")
    if settings.get("TAILOR_VERSION") != version:
        problems.append(f"bootstrap.sh: TAILOR_VERSION is {settings.get('TAILOR_VERSION')}, setup.py's is {version}")
    if "PREFIX" not in settings:
        problems.append("bootstrap.sh: sets no PREFIX, the folder the steps run the jobs from")
    for needed in ('-m venv "$PREFIX/venv"', 'ln -sfn "$jobs_dir" "$PREFIX/jobs"'):
        if needed not in text:
            problems.append(f"bootstrap.sh: no `{needed}`, which the steps rely on")
    return problems


def _job_modules() -> dict[str, str]:
    """jobs/<file>.py -> its command."""
    return {module.replace(".", "/") + ".py": command
            for command, (module, _) in COMMANDS.items() if module != "jobs.cli"}


def emr_steps(emr: dict[str, Any]) -> tuple[list[str], list[tuple[Task, dict, dict[str, str], str]]]:
    """Problems with the steps as declared, and each step's task, its spark-submit options
    (--conf as key=value entries), and its steps file."""
    prefix = bootstrap_settings(emr["bootstrap"]).get("PREFIX", "<PREFIX>")
    modules = _job_modules()
    problems, found = [], []
    for file, steps in emr["steps"].items():
        names = [step.get("Name") for step in steps]
        problems += [f"{file}: step name '{name}' used twice" for name in set(names) if names.count(name) > 1]
        for step in steps:
            where = f"emr {file}: {step.get('Name')}"
            if (step.get("Type"), step.get("Jar")) != ("CUSTOM_JAR", "command-runner.jar"):
                problems.append(f"{where}: must be Type CUSTOM_JAR with Jar command-runner.jar")
            if step.get("ActionOnFailure") not in EMR_ACTIONS_ON_FAILURE:
                problems.append(f"{where}: ActionOnFailure {step.get('ActionOnFailure')!r} is not one of "
                                f"{', '.join(EMR_ACTIONS_ON_FAILURE)}")
            arguments = list(step.get("Args") or [])
            if arguments[:1] != ["spark-submit"] or not any(argument.endswith(".py") for argument in arguments):
                problems.append(f"{where}: Args must be `spark-submit [options] <job>.py [arguments]`")
                continue
            script = next(index for index, argument in enumerate(arguments) if argument.endswith(".py"))
            options, option_problems = _submit_options(arguments[1:script])
            problems += [f"{where}: {problem}" for problem in option_problems]
            job_file = arguments[script]
            relative = job_file.removeprefix(f"{prefix}/")
            if not job_file.startswith(f"{prefix}/jobs/"):
                problems.append(f"{where}: {job_file} is not under {prefix}/jobs, where the bootstrap links the jobs")
                continue
            if not (ROOT / relative).is_file():
                problems.append(f"{where}: {job_file}: there is no {relative} in this repository")
                continue
            if relative not in modules:
                problems.append(f"{where}: {relative} is no command's module in jobs.cli.COMMANDS")
                continue
            if '__name__ == "__main__"' not in (ROOT / relative).read_text(encoding="utf-8"):
                problems.append(f"{where}: {relative} runs nothing as a script (no `if __name__ == \"__main__\"`)")
            found.append((Task(where=where, job=file, name=str(step.get("Name")), command=modules[relative],
                               argv=tuple(arguments[script + 1:]),
                               continuous=options.get("spark.yarn.submit.waitAppCompletion") == "false"),
                          step, options, file))
    return problems, found


def _submit_options(arguments: list[str]) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    problems = []
    for option, value in zip(arguments[::2], arguments[1::2], strict=False):
        if option not in SPARK_SUBMIT_OPTIONS:
            problems.append(f"spark-submit option {option} is not one the steps use")
        elif option == "--conf":
            key, _, setting = value.partition("=")
            options[key] = setting
        else:
            options[option] = value
    if len(arguments) % 2:
        problems.append(f"spark-submit option {arguments[-1]} has no value")
    return options, problems


def emr_problems(emr: dict[str, Any]) -> list[str]:
    """Everything wrong with the EMR steps and bootstrap; empty when they would run."""
    problems = bootstrap_problems(emr["bootstrap"])
    declared, steps = emr_steps(emr)
    problems += declared
    prefix = bootstrap_settings(emr["bootstrap"]).get("PREFIX", "<PREFIX>")
    jars = load_config("emr").spark.jars
    parsed: list[tuple[Task, argparse.Namespace]] = []
    by_file: dict[str, list[tuple[Task, dict]]] = {}
    for task, step, options, file in steps:
        if options.get("spark.pyspark.python") != f"{prefix}/venv/bin/python":
            problems.append(f"{task.where}: spark.pyspark.python must be {prefix}/venv/bin/python, "
                            f"the bootstrap's interpreter")
        # Packages resolve when spark-submit starts the JVM; the job's own session is too late.
        if jars.mode == "packages" and options.get("--packages") != ",".join(jars.packages):
            problems.append(f"{task.where}: --packages must be the EMR config's spark.jars.packages "
                            f"({','.join(jars.packages)})")
        task_problems, args = parse_task(task, "emr")
        problems += task_problems
        if args is not None:
            parsed.append((task, args))
        by_file.setdefault(file, []).append((task, step))
    problems += trigger_problems(parsed, "submit it without waiting, spark.yarn.submit.waitAppCompletion=false")
    for file, entries in by_file.items():
        problems += _step_order_problems(file, entries)
    return problems


def _step_order_problems(file: str, entries: list[tuple[Task, dict]]) -> list[str]:
    """Steps run one at a time in file order (StepConcurrencyLevel 1). A stream is submitted
    without waiting (it never ends, and would hold the queue); every other step waits, and
    a failed one cancels the steps after it, so the batch chain keeps its order and gates;
    but an observer's (OBSERVERS) failure lets the steps after it run."""
    problems = []
    finishing = [(task, step) for task, step in entries if not task.continuous]
    for task, step in entries:
        if task.continuous and step.get("ActionOnFailure") != "CONTINUE":
            problems.append(f"{task.where}: a stream submitted without waiting must be ActionOnFailure CONTINUE")
    for task, step in finishing[:-1]:
        if task.command in OBSERVERS:
            if step.get("ActionOnFailure") != "CONTINUE":
                problems.append(f"{task.where}: {task.command} must be ActionOnFailure CONTINUE, so its failure "
                                f"does not cancel the steps after it")
        elif step.get("ActionOnFailure") != "CANCEL_AND_WAIT":
            problems.append(f"{task.where}: must be ActionOnFailure CANCEL_AND_WAIT, so its failure stops "
                            f"the steps after it")
    order = [(task.name, task.command, [previous.name] if previous else [])
             for previous, (task, _) in zip([None, *[task for task, _ in finishing]], finishing, strict=False)]
    return problems + chain_problems(f"emr {file}", order)

