"""Run the whole flow once, on the embedded default (the demo), step by step.

    tailor run [--env local] [--set k=v ...] [--faults kind=fraction,...] [--data synthetic|online-retail]
               [--from STEP | --only STEP [--only STEP ...] | --resume] [--retries N]
    spark-submit jobs/run.py ...

Steps, in flow order: generate, load-catalog, ingest, merge-profiles, build-features,
validate, train, score, publish, fetch (start the content API, fetch three users' rows over
HTTP, stop it), dashboard, report (the data quality audit report). Each streaming job runs
availableNow (`--once`). A failed step is retried --retries times (default 1), then the run
stops; every step's status and time land in <storage.root>/_run/last_run.json, and
`--resume` starts again at the step that failed. `--from STEP` runs that step and every one
after it; `--only STEP` just the ones named. `--data online-retail` starts from the UCI
Online Retail replay instead of the synthetic world (`tailor generate --from online-retail
--grant-consent`: real purchases, made-up consent), with features, checks and the report
as of the day after its last invoice.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import subprocess
import sys
import time as clock
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

from jobs import (
    build_features,
    dashboard,
    generate,
    ingest_events,
    load_catalog,
    merge_profiles,
    publish_content,
    report,
    score_recommendations,
    train_recommender,
    validate,
)
from jobs._common import config_from, entry_point, parser_for, setup_logging
from pipelines.config import Config, parse_override
from pipelines.errors import TailorError
from pipelines.synthetic.online_retail import HISTORY_END

log = logging.getLogger("tailor.run")
STATE_FILE = "_run/last_run.json"
RETRY_PAUSE_S = 2.0
FETCHED_USERS = 3


@dataclass(frozen=True)
class Step:
    name: str
    # (the run's arguments, config, the options every job gets) -> exit code
    run: Callable[[argparse.Namespace, Config, list[str]], int]
    output: str | None = None  # the table whose rows the progress line shows


def _world_end_arg(args: argparse.Namespace, config: Config) -> list[str]:
    return ["--as-of", HISTORY_END if args.data == "online-retail" else _world_end(config)]


def world_overrides(args: argparse.Namespace, config: Config) -> list[str]:
    """Settings the chosen world needs, as KEY=VALUE, leaving out any the caller set:
    - synthetic: test and validation periods of a fifth of its days each. The defaults
      (14 and 30 days) are sized for real histories; on the demo's two weeks they left
      the model a training period of nothing (3 items, 1 user to test on).
    - online-retail: a quarantine rate of up to 15%, for the gate and for the dashboard's
      alert. The replay's guest checkouts, about one invoice in seven, name no customer and
      are quarantined by design (there is no one to personalise), which the 5% default
      stops at validate.
    A value from a --conf-dir file is replaced; only --set ones are kept."""
    if args.data == "online-retail":
        wanted = {"quality.max_quarantine_rate": "0.15", "monitoring.max_quarantine_rate": "0.15"}
    else:
        days = str(max(1, config.generator.days // 5))
        wanted = {"recommend.train.test_days": days, "recommend.blend.validation_days": days}
    given = {_override_key(override) for override in args.overrides}
    return [f"{key}={value}" for key, value in wanted.items() if key not in given]


def _override_key(override: str) -> str:
    """The dotted key of a --set KEY=VALUE, as the config reads it (already checked by then)."""
    return ".".join(parse_override(override)[0])


def resume_command(args: argparse.Namespace) -> str:
    """The command that resumes this run: its environment, conf dir and storage root (the
    world is in the run's record)."""
    parts = ["tailor run", "--resume"]
    if args.env != "local":
        parts += ["--env", args.env]
    if args.conf_dir:
        parts += ["--conf-dir", shlex.quote(args.conf_dir)]
    parts += [f"--set {shlex.quote(o)}" for o in args.overrides if _override_key(o) == "storage.root"]
    return " ".join(parts)


def _generate(args: argparse.Namespace, common: list[str]) -> int:
    if args.data == "online-retail":
        return generate.main([*common, "--from", "online-retail", "--grant-consent"])
    return generate.main([*common, "--faults", args.faults])


STEPS: list[Step] = [
    Step("generate", lambda args, config, common: _generate(args, common)),
    # The generator's catalogue (catalog.path): build_features names each person's top categories from it.
    Step("load-catalog", lambda args, config, common: load_catalog.main(common), "silver.products"),
    Step("ingest", lambda args, config, common: ingest_events.main([*common, "--once"]), "bronze.events"),
    Step("merge-profiles", lambda args, config, common: merge_profiles.main([*common, "--once"]), "silver.profiles"),
    # Features as of the end of the generated weeks, so the 7/30/90-day windows hold them.
    Step("build-features", lambda args, config, common: build_features.main(
        [*common, "--once", *_world_end_arg(args, config)]), "gold.user_features"),
    # Freshness is measured against the end of the generated weeks, as the features are.
    Step("validate", lambda args, config, common: validate.main([*common, *_world_end_arg(args, config)]),
         "audit.quality_results"),
    Step("train", lambda args, config, common: train_recommender.main(common)),
    Step("score", lambda args, config, common: score_recommendations.main(common), "gold.recommendations"),
    Step("publish", lambda args, config, common: publish_content.main(common), "gold.email_content"),
    Step("fetch", lambda args, config, common: fetch_over_http(config, common)),
    Step("dashboard", lambda args, config, common: dashboard.main(
        [*common, "--api-metrics", api_metrics_file(config).resolve().as_uri()])),
    # Idle days are counted back from the end of the generated weeks, as the features are.
    Step("report", lambda args, config, common: report.main([*common, "quality", *_world_end_arg(args, config)]),
         "audit.quality_report"),
]
STEP_NAMES = [step.name for step in STEPS]


def build_parser() -> argparse.ArgumentParser:
    parser = parser_for("tailor run", __doc__.split("\n\n")[0])
    parser.add_argument("--faults", default="malformed_json=0.005,missing_field=0.005,duplicate=0.01,"
                                            "late=0.01,out_of_order=0.01,unknown_schema_version=0.002",
                        help="faults injected into the synthetic world (not the online-retail replay)")
    parser.add_argument("--data", choices=("synthetic", "online-retail"),
                        help="the world to run on: synthetic (default) or the UCI Online Retail replay; "
                             "--resume, --from and --only keep the last run's")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--from", dest="from_step", choices=STEP_NAMES, help="run this step and every one after it")
    which.add_argument("--only", action="append", choices=STEP_NAMES, help="run only this step (repeatable)")
    which.add_argument("--resume", action="store_true", help="start at the step the last run failed at")
    parser.add_argument("--retries", type=_at_least_zero, default=1,
                        help="times a failed step is run again (default 1)")
    return parser


def _at_least_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _passthrough(args: argparse.Namespace) -> list[str]:
    common = ["--env", args.env]
    for override in args.overrides:
        common += ["--set", override]
    if args.conf_dir:
        common += ["--conf-dir", args.conf_dir]
    return common


def selected_steps(args: argparse.Namespace, last_run: dict | None) -> list[Step]:
    """The steps this run takes, in flow order."""
    if args.only:
        return [step for step in STEPS if step.name in args.only]
    first = args.from_step
    if args.resume:
        first = unfinished_step(last_run)
        if first is None:
            raise TailorError("nothing to resume: no failed or interrupted step is recorded in " + STATE_FILE)
    return STEPS[STEP_NAMES.index(first):] if first else list(STEPS)


def unfinished_step(state: dict | None) -> str | None:
    """The first step, in flow order, whose last recorded attempt failed or never ended."""
    recorded = (state or {}).get("steps", {})
    return next((name for name in STEP_NAMES
                 if recorded.get(name, {}).get("status") in ("failed", "running")), None)


def _read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_state(path: Path, state: dict) -> None:
    """Written under another name, then renamed: a run killed mid-write leaves the last state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state["failed_step"] = unfinished_step(state)
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    staging.replace(path)


INTERRUPTED = 130  # what entry_point returns on Ctrl-C


def _attempt(step: Step, args: argparse.Namespace, config: Config, common: list[str]) -> tuple[int, bool]:
    """(exit code, whether another attempt could help): a usage error or an interrupt is not retried."""
    try:
        code = step.run(args, config, common)
    except SystemExit as stop:  # a step's argument parser refused its arguments
        return (stop.code if isinstance(stop.code, int) else 1) or 0, False
    except Exception as error:  # a step's unexpected failure is that step's outcome
        log.exception("step %s raised", step.name)
        print(f"{step.name}: {type(error).__name__}: {str(error)[:300]}", flush=True)
        return 1, True
    return code, code != INTERRUPTED


def run_steps(args: argparse.Namespace, config: Config, steps: list[Step], state_path: Path,
              last_run: dict | None) -> int:
    """Run `steps` in order, each retried up to args.retries times, and record every
    attempt: a step is `running` until it ends, so a run killed mid-step is resumed there.
    A whole run starts a new record; --from, --only and --resume add to the last one."""
    common = _passthrough(args)
    whole = len(steps) == len(STEPS)
    state = {"steps": {} if whole or last_run is None else dict(last_run.get("steps", {})), "data": args.data}
    state["started_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    started = clock.monotonic()
    for number, step in enumerate(steps, start=1):
        print(f"[{number}/{len(steps)}] {step.name} ...", flush=True)
        step_started = clock.monotonic()
        code, attempts = 1, 0
        while attempts <= args.retries:
            attempts += 1
            state["steps"][step.name] = {"status": "running", "attempts": attempts}
            _write_state(state_path, state)
            try:
                code, retry = _attempt(step, args, config, common)
            except BaseException:  # KeyboardInterrupt outside a job's own handler
                state["steps"][step.name] = {"status": "failed", "exit_code": INTERRUPTED, "attempts": attempts}
                _write_state(state_path, state)
                raise
            if code == 0 or not retry:
                break
            if attempts <= args.retries:
                print(f"[{number}/{len(steps)}] {step.name} failed (exit {code}); retrying", flush=True)
                clock.sleep(RETRY_PAUSE_S)
        seconds = round(clock.monotonic() - step_started, 1)
        rows = _rows(config, step.output) if code == 0 and step.output else None
        state["steps"][step.name] = {"status": "succeeded" if code == 0 else "failed", "exit_code": code,
                                     "attempts": attempts, "seconds": seconds,
                                     **({"rows": {step.output: rows}} if rows is not None else {})}
        _write_state(state_path, state)
        shown = f", {step.output} {rows} rows" if rows is not None else ""
        print(f"[{number}/{len(steps)}] {step.name} {'ok' if code == 0 else 'FAILED'} in {seconds:.1f} s{shown} "
              f"(total {clock.monotonic() - started:.0f} s)", flush=True)
        if code:
            print(f"tailor run: stopped at {step.name}; `{resume_command(args)}` starts again there", flush=True)
            return code
    return 0


def _rows(config: Config, table: str) -> int | None:
    """The rows of the table a step wrote, with the session the step started (None when
    it started none, or the table cannot be read: progress is not worth failing for)."""
    if "pyspark" not in sys.modules:
        return None
    from pyspark.sql import SparkSession

    from pipelines.runtime.delta_tables import read_table, table_exists

    spark = SparkSession.getActiveSession()
    try:
        if spark is None or not table_exists(spark, config.table(table)):
            return None
        return read_table(spark, config.table(table)).count()
    except Exception:  # noqa: BLE001 (see the docstring)
        log.warning("could not count %s's rows", table)
        return None


@entry_point
def main(argv=None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    config = config_from(args)  # fail fast, before any step, on a bad config
    state_path = Path(config.under_root(STATE_FILE))
    last_run = _read_state(state_path)
    if args.data is None:  # a whole run starts the synthetic world; a partial one goes on with the last
        partial = args.resume or args.from_step or args.only
        args.data = str((last_run or {}).get("data") or "synthetic") if partial else "synthetic"
    args.overrides += world_overrides(args, config)  # every step sees the same settings
    config = config_from(args)
    steps = selected_steps(args, last_run)
    code = run_steps(args, config, steps, state_path, last_run)
    if code == 0 and steps[-1].name == STEPS[-1].name:
        try:
            print(landed_summary(config))
        except Exception as error:  # every step succeeded; say so, and that the summary did not
            log.exception("the summary failed")
            print(f"tailor run: every step succeeded, but the summary failed: {type(error).__name__}", flush=True)
            return 1
    return code


def fetch_over_http(config: Config, common: list[str], users: int = FETCHED_USERS) -> int:
    """Start `tailor serve` on a free loopback port with a key minted for this run, fetch
    `users` published people's content rows over HTTP, print them, stop the server."""
    from api.auth import hash_key
    from pipelines.services.kafka_broker import free_port


    ids = _published_user_ids(config, users)
    if len(ids) < users:
        raise TailorError(f"gold.email_content holds {len(ids)} published people; the fetch needs {users}")
    key = secrets.token_urlsafe(24)
    key_file = Path(config.under_root("secrets/demo-api-key"))
    key_file.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # also when the file was there before, or the umask is loose
        os.write(descriptor, key.encode("utf-8"))
    finally:
        os.close(descriptor)
    tokens = f"demo:{hash_key(key)}:content:read"
    port = free_port()
    log_path = Path(config.under_root("logs/serve-demo.log"))
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, config.secrets.api_tokens: tokens}
    command = [sys.executable, "-m", "jobs.cli", "serve", *common, "--bind", f"127.0.0.1:{port}",
               "--workers", "1", "--threads", "2"]
    with open(log_path, "w", encoding="utf-8") as server_log:
        server = subprocess.Popen(command, env=env, stdout=server_log, stderr=subprocess.STDOUT,
                                  cwd=Path(__file__).resolve().parents[1])
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_ready(f"{base}/healthz", server, log_path)
            for user_id in ids:
                request = urllib.request.Request(f"{base}/v1/content/{user_id}",
                                                 headers={"Authorization": f"Bearer {key}"})
                with urllib.request.urlopen(request, timeout=5) as response:
                    row = json.loads(response.read())
                print(f"GET /v1/content/{user_id} -> {response.status}")
                print(json.dumps(row, indent=2, ensure_ascii=False))
            # The dashboard step plots the API's latency and fallbacks from these.
            with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
                api_metrics_file(config).write_bytes(response.read())
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    installed = Path(sys.executable).with_name("tailor")
    tailor = shlex.quote(str(installed)) if installed.exists() else "tailor"
    base = f"http://{config.api.bind}"
    print("Try it yourself (the key is in the file, never printed):\n"
          f"  {config.secrets.api_tokens}={shlex.quote(tokens)} {tailor} serve {shlex.join(common)} &\n"
          f"  until curl -sf {base}/healthz > /dev/null; do sleep 0.5; done\n"
          f'  curl -H "Authorization: Bearer $(cat {shlex.quote(str(key_file))})" {base}/v1/content/{ids[0]}')
    return 0


def api_metrics_file(config: Config) -> Path:
    return Path(config.under_root("_run/api-metrics.txt"))


def _published_user_ids(config: Config, count: int) -> list[str]:
    """Published people, personal rows first, in user id order."""
    from pyspark.sql import functions as F

    from pipelines.runtime.delta_tables import read_table
    from pipelines.runtime.session import build_spark

    content = read_table(build_spark(config, "run"), config.table("gold.email_content"))
    rows = (content.where(F.col("status") == "published")
            .orderBy(F.col("fallback").isNotNull(), "user_id").select("user_id").limit(count).collect())
    return [row.user_id for row in rows]


def _wait_until_ready(url: str, server: subprocess.Popen, log_path: Path, timeout_s: float = 60) -> None:

    deadline = clock.monotonic() + timeout_s
    while clock.monotonic() < deadline:
        if server.poll() is not None:
            raise TailorError(f"tailor serve exited with {server.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        clock.sleep(0.2)
    raise TailorError(f"tailor serve did not answer {url} within {timeout_s:.0f} s; see {log_path}")


def _world_end(config) -> str:
    generator = config.generator
    end = datetime.combine(generator.start, time.min, tzinfo=UTC) + timedelta(days=generator.days)
    return end.isoformat()


def landed_summary(config) -> str:
    """What the run left in bronze, in a few lines a person can check against the manifest."""
    from pyspark.sql import functions as F

    from pipelines.runtime.delta_tables import read_table, sql_name
    from pipelines.runtime.session import build_spark

    spark = build_spark(config, "run")
    bronze = read_table(spark, config.table("bronze.events"))
    quarantine = read_table(spark, config.table("bronze.quarantine"))
    metrics = read_table(spark, config.table("bronze.ingest_metrics"))
    totals = metrics.agg(F.sum("input_rows").alias("input"), F.sum("duplicate_rows").alias("duplicates"),
                         F.sum("tombstones").alias("tombstones")).first()
    by_type = bronze.groupBy("event_type").count().orderBy("event_type").collect()
    by_code = quarantine.groupBy("stream", "error_code").count().orderBy("stream", "error_code").collect()
    codes_by_stream: dict[str, list[str]] = {}
    for row in by_code:
        codes_by_stream.setdefault(row.stream, []).append(f"{row.error_code} {row[2]}")
    profiles = read_table(spark, config.table("silver.profiles"))
    history = read_table(spark, config.table("silver.profiles_history"))
    audit = read_table(spark, config.table("audit.log"))
    erased = read_table(spark, config.table("silver.profile_tombstones")).count()
    # Erasure MERGEs are the only deletes from bronze: what the reconciliation must add back.
    purges = spark.sql(f"DESCRIBE HISTORY {sql_name(config.table('bronze.events'))}").where("operation = 'MERGE'")
    erased_events = sum(int(row.operationMetrics.get("numTargetRowsDeleted", 0)) for row in purges.collect())
    features = read_table(spark, config.table("gold.user_features"))
    segments = features.groupBy("primary_segment").count().orderBy(F.desc("count"), "primary_segment").collect()
    interactions = read_table(spark, config.table("silver.interactions")).count()
    products = read_table(spark, config.table("silver.products"))
    catalogue = products.agg(F.count(F.lit(1)).alias("all"), F.count_if("active").alias("active"),
                             F.count_if(~F.col("in_stock")).alias("out_of_stock")).first()
    content = read_table(spark, config.table("gold.email_content"))
    kind = F.when(F.col("status") == "suppressed", F.lit("suppressed")).otherwise(
        F.coalesce("fallback", F.lit("personal")))
    by_kind = content.groupBy(kind.alias("kind")).count().orderBy("kind").collect()
    kinds = {row.kind: row[1] for row in by_kind}
    rows = sum(kinds.values()) or 1
    fallback_share = sum(n for name, n in kinds.items() if name not in ("personal", "suppressed")) / rows
    recommendations = read_table(spark, config.table("gold.recommendations"))
    reasons = (recommendations.select(F.explode("items.reason").alias("reason")).groupBy("reason").count()
               .orderBy(F.desc("count"), "reason").collect())
    lines = [
        f"records read: {totals.input or 0}",
        f"bronze.events: {bronze.count()} ({', '.join(f'{r.event_type} {r[1]}' for r in by_type)}); "
        f"{erased_events} more were landed, then erased with their people",
        f"bronze.quarantine: {quarantine.count()} "
        f"({'; '.join(f'{stream}: ' + ', '.join(codes) for stream, codes in codes_by_stream.items())})",
        f"dropped duplicates: {totals.duplicates or 0}, tombstones: {totals.tombstones or 0}",
        f"silver.profiles: {profiles.count()} (history versions {history.count()}, erased {erased}), "
        f"audit.log: {audit.count()}",
        f"silver.products: {catalogue.all} ({catalogue.active} active, {catalogue.out_of_stock} out of stock)",
        f"silver.interactions: {interactions}; gold.user_features: {features.count()} users "
        f"(primary segments: {', '.join(f'{r.primary_segment} {r[1]}' for r in segments)})",
        f"gold.recommendations: {recommendations.count()} rows for "
        f"{recommendations.select('user_id').distinct().count()} users "
        f"(reasons: {', '.join(f'{r.reason} {r[1]}' for r in reasons)})",
        f"model: {_champion_metrics(config)}",
        f"gold.email_content: {content.count()} ({', '.join(f'{r.kind} {r[1]}' for r in by_kind)}); "
        f"fallback share {fallback_share:.0%}, holdout share {kinds.get('holdout', 0) / rows:.0%}; "
        f"serving store: {config.serving.type}",
        f"tables under {config.under_root('')}; `tailor status` shows where each job stands",
        f"dashboard: {Path(config.under_root(config.monitoring.dashboard_path)).resolve()}",
        f"quality report: {Path(config.under_root(config.quality.report_path)).resolve()}",
    ]
    return "\n".join(lines)


def _champion_metrics(config: Config) -> str:
    """The champion's test ndcg@k per model, the blend against the baselines it beat."""
    from pipelines.monitoring.status import model_status

    model = model_status(config)
    if model is None:
        return "no champion registered"
    suffix = f".ndcg_at_{config.recommend.k}"
    shown = ", ".join(f"{key.removesuffix(suffix)} {value:.3f}" for key, value in model["test_metrics"].items()
                      if key.endswith(suffix))
    return f"{model['name']} version {model['version']} (champion), test ndcg@{config.recommend.k}: {shown}"


if __name__ == "__main__":
    raise SystemExit(main())
