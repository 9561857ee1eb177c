"""`tailor dashboard`: one static HTML page with the pipeline's health, its plots drawn by
matplotlib as inline SVG, so the file opens anywhere (a laptop, an S3 bucket, a CI
artifact) with no server and no script from the network.

gather_* read what the jobs leave behind (Spark, MLflow, the API's /metrics) into plain
rows; render_dashboard turns rows into HTML and needs neither Spark nor a network."""

from __future__ import annotations

import html
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.monitoring.freshness import Check, freshness_checks
from pipelines.monitoring.plots import DATA, checks_table, new_figure, page, panel, svg, time_series
from pipelines.monitoring.status import utc_from_micros
from pipelines.runtime.delta_tables import read_table, table_exists

MAX_POINTS = 2000  # per series: the newest batches; a page, not an archive


@dataclass
class DashboardData:
    generated_at: datetime
    env: str
    checks: list[Check] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)     # audit.streaming_progress
    ingest: list[dict[str, Any]] = field(default_factory=list)       # bronze.ingest_metrics
    quality: list[dict[str, Any]] = field(default_factory=list)      # per validation run
    models: list[dict[str, Any]] = field(default_factory=list)       # per registered model version
    job_runs: list[dict[str, Any]] = field(default_factory=list)     # audit.job_runs, newest first
    api: dict[str, Any] | None = None                                 # parsed /metrics
    api_error: str | None = None
    models_error: str | None = None


def _newest(spark: SparkSession, config: Config, name: str, time_column: str, columns: list[str]) -> list[dict]:
    table = config.table(name)
    if not table_exists(spark, table):
        return []
    rows = (read_table(spark, table).select(*columns, F.unix_micros(time_column).alias("_micros"))
            .orderBy(F.desc("_micros")).limit(MAX_POINTS).collect())
    return [{**row.asDict(), "at": utc_from_micros(row._micros)} for row in reversed(rows)]


def gather_quality(spark: SparkSession, config: Config) -> list[dict[str, Any]]:
    table = config.table("audit.quality_results")
    if not table_exists(spark, table):
        return []
    runs = (read_table(spark, table).groupBy("run_id").agg(
        F.max(F.unix_micros("run_at")).alias("micros"),
        F.count_if("success").alias("passed"),
        F.count_if(~F.col("success") & (F.col("severity") == "critical")).alias("critical_failed"),
        F.count_if(~F.col("success") & (F.col("severity") != "critical")).alias("warnings_failed"))
        .orderBy(F.desc("micros")).limit(60).collect())
    return [{**row.asDict(), "at": utc_from_micros(row.micros)} for row in reversed(runs)]


def gather_models(config: Config) -> list[dict[str, Any]]:
    """Every registered version's test metrics (train logs test.<model>.<metric>)."""
    from pipelines.recommend.tracking import existing_store_client

    client = existing_store_client(config)
    if client is None:
        return []
    name = config.mlflow.registered_model
    versions = client.search_model_versions(f"name = '{name}'")
    found = []
    for version in sorted(versions, key=lambda version: int(version.version)):
        metrics = client.get_run(version.run_id).data.metrics
        found.append({"version": int(version.version), "aliases": list(version.aliases or []),
                      "metrics": {key.removeprefix("test."): value for key, value in metrics.items()
                                  if key.startswith("test.")}})
    return found


def parse_api_metrics(text: str) -> dict[str, Any]:
    """Requests by status, latency quantiles per route (from the histogram's buckets), and
    fallbacks by reason, from the API's Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    statuses: dict[str, float] = defaultdict(float)
    fallbacks: dict[str, float] = defaultdict(float)
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tailor_api_requests_total":
                statuses[sample.labels["status"]] += sample.value
            elif sample.name == "tailor_api_fallbacks_total":
                fallbacks[sample.labels["reason"]] += sample.value
            elif sample.name == "tailor_api_request_seconds_bucket":
                buckets[sample.labels["route"]].append((float(sample.labels["le"]), sample.value))
    latency = {}
    for route, points in buckets.items():
        points.sort()
        total = points[-1][1] if points else 0
        if total:
            latency[route] = {"count": total, **{name: _quantile(points, q) for name, q in (("p50", .5), ("p95", .95))}}
    return {"requests_by_status": dict(statuses), "fallbacks_by_reason": dict(fallbacks), "latency_s": latency}


def _quantile(points: list[tuple[float, float]], q: float) -> float:
    """The upper bound of the bucket holding the q-th request (Prometheus' buckets are
    cumulative); the largest finite bound when it falls in +Inf."""
    total = points[-1][1]
    finite = [bound for bound, _ in points if bound != float("inf")]
    for bound, count in points:
        if count >= q * total:
            return bound if bound != float("inf") else max(finite, default=0.0)
    return max(finite, default=0.0)


def fetch_api_metrics(url: str, timeout_s: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (a configured URL)
        return response.read().decode("utf-8")


def gather(spark: SparkSession, config: Config, api_metrics_url: str | None = None) -> DashboardData:
    data = DashboardData(generated_at=datetime.now(UTC), env=config.env)
    data.checks = freshness_checks(spark, config, data.generated_at)
    data.progress = _newest(spark, config, "audit.streaming_progress", "batch_timestamp",
                            ["query_name", "input_rows_per_second", "processed_rows_per_second",
                             "batch_duration_ms", "state_rows", "watermark_lag_s"])
    data.ingest = _newest(spark, config, "bronze.ingest_metrics", "batch_timestamp",
                          ["input_rows", "quarantined_rows", "max_event_time_lag_s"])
    data.quality = gather_quality(spark, config)
    try:
        data.models = gather_models(config)
    except Exception as error:  # noqa: BLE001 (a registry that cannot be read is shown, not fatal)
        data.models_error = f"MLflow: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    data.job_runs = list(reversed(_newest(spark, config, "audit.job_runs", "started_at",
                                          ["job", "outcome", "exit_code", "duration_s", "error"])))[:40]
    url = api_metrics_url or config.monitoring.api_metrics_url
    if url:
        try:
            data.api = parse_api_metrics(fetch_api_metrics(url))
        except Exception as error:  # noqa: BLE001 (an API that is down is shown on the page, not fatal)
            data.api_error = f"{url}: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"
    return data


# -- rendering (pure) --------------------------------------------------------------------

def _by_query(rows: list[dict[str, Any]], column: str) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = {}
    for row in rows:
        if row[column] is None:
            continue
        times, values = series.setdefault(row["query_name"], ([], []))
        times.append(row["at"])
        values.append(row[column])
    return series


def _throughput(data: DashboardData) -> str | None:
    if not data.progress:
        return None
    series = {f"{name} in": values for name, values in _by_query(data.progress, "input_rows_per_second").items()}
    series.update({f"{name} processed": values
                   for name, values in _by_query(data.progress, "processed_rows_per_second").items()})
    return time_series("Rows per second, per batch", series, "rows/s")


def _freshness(data: DashboardData) -> str | None:
    series = {name: (times, [ms / 1000 for ms in values])
              for name, (times, values) in _by_query(data.progress, "batch_duration_ms").items()}
    lags = [(row["at"], row["max_event_time_lag_s"]) for row in data.ingest if row["max_event_time_lag_s"] is not None]
    if lags:
        series["ingest event-time lag"] = ([at for at, _ in lags], [lag for _, lag in lags])
    return time_series("Batch duration and event-time lag", series, "seconds") if series else None


def _quarantine(data: DashboardData) -> str | None:
    rows = [row for row in data.ingest if row["input_rows"]]
    if not rows:
        return None
    rates = [100 * row["quarantined_rows"] / row["input_rows"] for row in rows]
    return time_series("Quarantined share of each ingest batch", {"quarantine": ([r["at"] for r in rows], rates)},
                        "% of records")


def _quality(data: DashboardData) -> str | None:
    if not data.quality:
        return None
    figure, axes = new_figure("Expectations per validation run")
    labels = [row["at"].strftime("%m-%d %H:%M") for row in data.quality]
    positions = range(len(labels))
    passed = [row["passed"] for row in data.quality]
    warnings = [row["warnings_failed"] for row in data.quality]
    critical = [row["critical_failed"] for row in data.quality]
    axes.bar(positions, passed, color="#4c9a2a", label="passed", gid=DATA)
    axes.bar(positions, warnings, bottom=passed, color="#e0a800", label="warning failed", gid=DATA)
    axes.bar(positions, critical, bottom=[p + w for p, w in zip(passed, warnings, strict=True)], color="#c0392b",
             label="critical failed", gid=DATA)
    axes.set_xticks(list(positions), labels, rotation=30, fontsize=8)
    axes.set_ylabel("expectations")
    axes.legend(fontsize=8)
    return svg(figure)


def _models(data: DashboardData, k: int) -> str | None:
    suffix = f".ndcg_at_{k}"
    series: dict[str, tuple[list, list]] = {}
    for version in data.models:
        for key, value in version["metrics"].items():
            if key.endswith(suffix):
                versions, values = series.setdefault(key.removesuffix(suffix), ([], []))
                versions.append(version["version"])
                values.append(value)
    if not series:
        return None
    figure, axes = new_figure(f"Test NDCG@{k} per registered version (the blend against its baselines)")
    for model, (versions, values) in sorted(series.items()):
        axes.plot(versions, values, marker="o", linewidth=1.2, label=model, gid=DATA)
    axes.set_xlabel("model version")
    axes.set_xticks(sorted({version["version"] for version in data.models}))
    axes.legend(fontsize=8)
    return svg(figure)


def _api(data: DashboardData) -> str | None:
    if not data.api or not (data.api["latency_s"] or data.api["fallbacks_by_reason"]):
        return None
    import matplotlib.pyplot as plt

    figure, (latency, fallbacks) = plt.subplots(1, 2, figsize=(9, 3.2))
    routes = sorted(data.api["latency_s"])
    positions = range(len(routes))
    latency.barh([p - 0.2 for p in positions], [1000 * data.api["latency_s"][r]["p50"] for r in routes],
                 height=0.4, label="p50", gid=DATA)
    latency.barh([p + 0.2 for p in positions], [1000 * data.api["latency_s"][r]["p95"] for r in routes],
                 height=0.4, label="p95", gid=DATA)
    latency.set_yticks(list(positions), routes, fontsize=7)
    latency.set_xlabel("ms (bucket upper bound)")
    latency.set_title("Latency per route", fontsize=11, loc="left")
    latency.legend(fontsize=8)
    reasons = sorted(data.api["fallbacks_by_reason"])
    fallbacks.bar(range(len(reasons)), [data.api["fallbacks_by_reason"][r] for r in reasons], color="#e0a800",
                  gid=DATA)
    fallbacks.set_xticks(list(range(len(reasons))), reasons, rotation=30, fontsize=8)
    fallbacks.set_title("Fallback rows served, by reason", fontsize=11, loc="left")
    return svg(figure)


def _runs_html(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return '<section><h2>Job runs</h2><p class="empty" id="job-runs">no job has recorded a run yet</p></section>'
    rows = "".join(
        f'<tr><td>{run["at"]:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(run["job"])}</td>'
        f'<td class="{"ok" if run["outcome"] == "succeeded" else "bad"}">{html.escape(run["outcome"])}</td>'
        f'<td>{run["duration_s"]:.1f} s</td><td>{html.escape(run["error"] or "")}</td></tr>' for run in runs)
    return ('<section><h2>Job runs</h2><table id="job-runs"><tr><th>started (UTC)</th><th>job</th><th>outcome</th>'
            f"<th>took</th><th>error</th></tr>{rows}</table></section>")


def render_dashboard(data: DashboardData, k: int) -> str:
    api_empty = data.api_error or ("no API metrics URL configured (monitoring.api_metrics_url or --api-metrics)"
                                   if data.api is None else "the API has served no content request yet")
    sections = [
        checks_table(data.checks),
        panel("throughput", "Throughput", _throughput(data), "no streaming batch recorded yet"),
        panel("freshness", "Batch duration and lag", _freshness(data), "no streaming batch recorded yet"),
        panel("quarantine", "Quarantine rate", _quarantine(data), "no ingest batch recorded yet"),
        panel("quality", "Data quality", _quality(data), "no validation run yet"),
        panel("models", "Model metrics across versions", _models(data, k),
               data.models_error or "no registered model version yet"),
        panel("api", "Content API", _api(data), api_empty,
               "from /metrics since the API started" if data.api else ""),
        _runs_html(data.job_runs),
    ]
    stamp = data.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return page("Tailor dashboard", f"Tailor ({data.env})", stamp, sections)
