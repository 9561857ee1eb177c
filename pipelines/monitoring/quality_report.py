"""`tailor report quality`: the audit report a person reads. One static HTML page on the
state of the data the emails are built from: duplicate profiles (a shared email_hash),
how complete each profile attribute is, freshness, stale profiles, quarantine reasons over
time, the segment mix, the last validation's failures, and what changed since the
previous report.

Its pure DataFrame -> DataFrame functions are in transforms.py. gather() reads the tables
into plain rows; each report's headline numbers are appended to audit.quality_report, which is
where "since the last report" and the trend plots come from. render_quality_report needs
neither Spark nor a network. Counts and shares only: no user id, email or name reaches
the page (silver.duplicate_profiles lists the ids of shared emails for whoever merges them).
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import TABLES, Config
from pipelines.monitoring.freshness import Check, freshness_checks, quarantine_totals
from pipelines.monitoring.plots import DATA, checks_table, new_figure, page, panel, plain, svg
from pipelines.monitoring.status import utc_from_micros
from pipelines.monitoring.transforms import (
    NEVER_ACTIVE,
    completeness,
    idle_days,
    idle_histogram,
    quarantine_by_day,
    segment_mix,
    shared_email_groups,
)
from pipelines.runtime.delta_tables import delta_table, ensure_table, read_table, save, table_exists
from pipelines.schemas import QUALITY_REPORT

QUARANTINE_DAYS = 30      # quarantine reasons per day over this many days before the report
TREND_REPORTS = 30        # the trend plots show this many reports, the newest


# -- gathering (reads the tables into plain rows) ----------------------------------------

@dataclass
class QualityReportData:
    report_id: str
    generated_at: datetime
    as_of: datetime                      # what event-time freshness and idle days are measured against
    env: str
    stale_after_days: int
    max_segment_share: float
    max_null_share_increase: float
    profiles: int | None = None          # None: silver.profiles does not exist yet
    completeness: list[dict[str, Any]] = field(default_factory=list)
    shared_emails: list[dict[str, Any]] = field(default_factory=list)
    idle: list[dict[str, Any]] = field(default_factory=list)
    stale_profiles: int = 0                                           # idle stale_after_days or more
    has_features: bool = False                                        # activity known from gold.user_features
    checks: list[Check] = field(default_factory=list)
    tables: list[dict[str, Any]] = field(default_factory=list)       # each table's newest commit
    newest_event_at: datetime | None = None
    quarantine_rate: float | None = None                              # over quarantine_window_hours
    quarantine_window_hours: float = 24
    quarantine_since: date | None = None                              # the plot's first day
    quarantine: list[dict[str, Any]] = field(default_factory=list)   # per day and error code
    segments: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, Any] | None = None                          # the newest run, its failures
    history: list[dict[str, Any]] = field(default_factory=list)      # earlier reports, oldest first


def _rows(frame: DataFrame) -> list[dict[str, Any]]:
    return [row.asDict() for row in frame.collect()]


def _read(spark: SparkSession, config: Config, name: str) -> DataFrame | None:
    table = config.table(name)
    return read_table(spark, table) if table_exists(spark, table) else None


def gather_profiles(spark: SparkSession, config: Config, data: QualityReportData) -> None:
    profiles = _read(spark, config, "silver.profiles")
    if profiles is None:
        return
    data.completeness = _rows(completeness(profiles))
    data.profiles = data.completeness[0]["profiles"]
    data.shared_emails = _rows(shared_email_groups(profiles))
    features = _read(spark, config, "gold.user_features")
    data.has_features = features is not None
    data.idle = _rows(idle_histogram(idle_days(profiles, features, data.as_of), data.stale_after_days))
    data.stale_profiles = sum(row["stale"] for row in data.idle)


def gather_tables(spark: SparkSession, config: Config) -> list[dict[str, Any]]:
    """Every table's newest commit: its version, when, and what it was."""
    found = []
    for name in TABLES:
        table = config.table(name)
        if not table_exists(spark, table):
            continue
        commit = delta_table(spark, table).history(1).select(
            "version", "operation", F.unix_micros("timestamp").alias("micros")).first()
        found.append({"table": name, "version": commit.version, "operation": commit.operation,
                      "committed_at": utc_from_micros(commit.micros)})
    return found


def newest_event_at(spark: SparkSession, config: Config, as_of: datetime) -> datetime | None:
    """The newest event time in bronze.events: from the last week's partitions when they
    hold any (the table is the largest there is), else from the whole table."""
    events = _read(spark, config, "bronze.events")
    if events is None:
        return None
    newest = F.max(F.unix_micros("occurred_at"))
    recent = events.where(F.col("event_date") >= F.lit((as_of - timedelta(days=7)).date())).agg(newest).first()[0]
    return utc_from_micros(recent if recent is not None else events.agg(newest).first()[0])


def gather_validation(spark: SparkSession, config: Config) -> dict[str, Any] | None:
    results = _read(spark, config, "audit.quality_results")
    if results is None:
        return None
    newest = results.orderBy(F.desc("run_at")).select("run_id").first()
    if newest is None:
        return None
    run = results.where(F.col("run_id") == newest.run_id)
    summary = run.agg(F.max(F.unix_micros("run_at")).alias("micros"), F.first("mode").alias("mode"),
                      F.count(F.lit(1)).alias("checked")).first()
    failed = (run.where(~F.col("success"))
              .select("dataset", "table_version", "expectation", "severity", "observed_value")
              .orderBy(F.desc(F.col("severity") == "critical"), "dataset", "expectation"))
    return {"run_id": newest.run_id, "run_at": utc_from_micros(summary.micros), "mode": summary.mode,
            "checked": summary.checked, "failed": _rows(failed)}


def gather_history(spark: SparkSession, config: Config) -> list[dict[str, Any]]:
    """The newest earlier reports' metrics, oldest first: {report_id, reported_at, metrics}."""
    reports = _read(spark, config, "audit.quality_report")
    if reports is None:
        return []
    newest = (reports.groupBy("report_id").agg(F.max(F.unix_micros("reported_at")).alias("micros"))
              .orderBy(F.desc("micros")).limit(TREND_REPORTS - 1))
    rows = (reports.join(newest, "report_id").select("report_id", "micros", "metric", "value").collect())
    by_report: dict[str, dict[str, Any]] = {}
    for row in rows:
        report = by_report.setdefault(row.report_id, {"report_id": row.report_id,
                                                      "reported_at": utc_from_micros(row.micros), "metrics": {}})
        report["metrics"][row.metric] = row.value
    return sorted(by_report.values(), key=lambda report: report["reported_at"])


def gather(spark: SparkSession, config: Config, as_of: datetime | None = None) -> QualityReportData:
    now = datetime.now(UTC)
    data = QualityReportData(report_id=uuid.uuid4().hex, generated_at=now, as_of=as_of or now, env=config.env,
                             stale_after_days=config.quality.stale_profile_days,
                             max_segment_share=config.quality.max_segment_share,
                             max_null_share_increase=config.quality.max_null_share_increase,
                             quarantine_window_hours=config.monitoring.window_hours,
                             quarantine_since=(now - timedelta(days=QUARANTINE_DAYS - 1)).date())
    gather_profiles(spark, config, data)
    data.checks = freshness_checks(spark, config, now)
    data.tables = gather_tables(spark, config)
    data.newest_event_at = newest_event_at(spark, config, data.as_of)
    totals = quarantine_totals(spark, config, now)
    data.quarantine_rate = totals[1] / totals[0] if totals and totals[0] else None
    quarantine = _read(spark, config, "bronze.quarantine")
    if quarantine is not None:
        data.quarantine = _rows(quarantine_by_day(quarantine, data.quarantine_since))
    features = _read(spark, config, "gold.user_features")
    data.has_features = features is not None
    if features is not None:
        data.segments = _rows(segment_mix(features))
    data.validation = gather_validation(spark, config)
    data.history = gather_history(spark, config)
    return data


def headline_metrics(data: QualityReportData) -> dict[str, float]:
    """The numbers a report keeps for the next one to compare with (audit.quality_report)."""
    metrics: dict[str, float] = {}
    if data.profiles is not None:
        metrics["profiles"] = data.profiles
        metrics["shared_emails"] = sum(row["emails"] for row in data.shared_emails)
        metrics["profiles_sharing_an_email"] = sum(row["emails"] * row["profiles_per_email"]
                                                   for row in data.shared_emails)
        if data.profiles:
            metrics["stale_profile_share"] = data.stale_profiles / data.profiles
            metrics |= {f"completeness.{row['attribute']}": row["filled"] / data.profiles
                        for row in data.completeness}
    users = sum(row["users"] for row in data.segments)
    metrics |= {f"segment_share.{row['segment']}": row["users"] / users for row in data.segments}
    if data.newest_event_at is not None:
        metrics["event_lag_hours"] = (data.as_of - data.newest_event_at).total_seconds() / 3600
    if data.quarantine_rate is not None:
        metrics["quarantine_rate"] = data.quarantine_rate
    return metrics


def record_report(spark: SparkSession, config: Config, data: QualityReportData, metrics: dict[str, float]) -> None:
    """Append the report's headline numbers to audit.quality_report."""
    table = config.table("audit.quality_report")
    ensure_table(spark, table, QUALITY_REPORT)
    rows = [(data.report_id, data.generated_at, data.as_of, metric, float(value))
            for metric, value in sorted(metrics.items())]
    save(spark.createDataFrame(rows, QUALITY_REPORT).write.format("delta").mode("append"), table)


# -- rendering (pure) ----------------------------------------------------------------------

def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _is_share(metric: str) -> bool:
    return metric.startswith(("completeness.", "segment_share.")) or metric in ("stale_profile_share",
                                                                                "quarantine_rate")


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "none"
    if _is_share(metric):
        return f"{value:.1%}"
    if metric == "event_lag_hours":
        return f"{value:.1f} h"
    return f"{value:,.0f}"


def _change(metric: str, before: float | None, now: float | None) -> str:
    if before is None or now is None:
        return "new" if before is None else "gone"
    difference = now - before
    if _is_share(metric):
        return f"{100 * difference:+.1f} pts"
    return f"{difference:+.1f} h" if metric == "event_lag_hours" else f"{difference:+,.0f}"


def _worse(metric: str, before: float | None, now: float | None, data: QualityReportData) -> bool:
    """A change worth a second look: an attribute emptied by more than the validation's
    own allowance, a segment past its cap, more shared emails or stale profiles."""
    if metric.startswith("segment_share."):
        return now is not None and now > data.max_segment_share
    if before is None or now is None:
        return False
    if metric.startswith("completeness."):
        return before - now > data.max_null_share_increase
    return metric in ("shared_emails", "profiles_sharing_an_email", "stale_profile_share") and now > before


def _trend_html(data: QualityReportData, metrics: dict[str, float]) -> str:
    if not data.history:
        return ('<section><h2>Since the last report</h2><p class="empty" id="trend">the first report: '
                "nothing to compare with yet</p></section>")
    previous = data.history[-1]
    rows = []
    for metric in sorted(set(previous["metrics"]) | set(metrics)):
        before, now = previous["metrics"].get(metric), metrics.get(metric)
        marked = ' class="bad"' if _worse(metric, before, now, data) else ""
        rows.append(f"<tr{marked}><td>{html.escape(metric)}</td><td class=\"num\">{_value(metric, before)}</td>"
                    f"<td class=\"num\">{_value(metric, now)}</td><td class=\"num\">{_change(metric, before, now)}"
                    "</td></tr>")
    return (f"<section><h2>Since the last report</h2><p>previous report {previous['reported_at']:%Y-%m-%d %H:%M} "
            'UTC</p><table id="trend"><tr><th>metric</th><th class="num">then</th><th class="num">now</th>'
            f'<th class="num">change</th></tr>{"".join(rows)}</table></section>')


def _no_profiles(data: QualityReportData) -> str:
    return "no silver.profiles yet" if data.profiles is None else "silver.profiles holds no profile"


def _duplicates_html(data: QualityReportData) -> str:
    if not data.profiles:
        return (f'<section><h2>Duplicate profiles</h2><p class="empty" id="duplicates">{_no_profiles(data)}</p>'
                "</section>")
    emails = sum(row["emails"] for row in data.shared_emails)
    profiles = sum(row["emails"] * row["profiles_per_email"] for row in data.shared_emails)
    hashes = "email hash is" if emails == 1 else "email hashes are"
    summary = (f"{emails:,} {hashes} shared by {profiles:,} profiles ({_share(profiles, data.profiles)} of "
               f"{data.profiles:,}); silver.duplicate_profiles lists them for merging.")
    rows = "".join(f'<tr><td class="num">{row["profiles_per_email"]}</td><td class="num">{row["emails"]:,}</td></tr>'
                   for row in data.shared_emails)
    table = (f'<table id="duplicates"><tr><th class="num">profiles per email</th><th class="num">emails</th></tr>'
             f"{rows}</table>" if rows else '<p id="duplicates">no email is shared by two profiles</p>')
    return f"<section><h2>Duplicate profiles</h2><p>{html.escape(summary)}</p>{table}</section>"


def _completeness_plot(data: QualityReportData) -> str | None:
    if not data.profiles:
        return None
    figure, axes = new_figure("Profiles holding each attribute", (7.5, 0.28 * len(data.completeness) + 1))
    labels = [plain(row["attribute"]) for row in reversed(data.completeness)]
    shares = [100 * row["filled"] / data.profiles for row in reversed(data.completeness)]
    axes.barh(labels, shares, color="#4c7fb0", gid=DATA)
    axes.set_xlim(0, 100)
    axes.set_xlabel(f"% of {data.profiles:,} profiles")
    axes.tick_params(axis="y", labelsize=8)
    return svg(figure)


def _completeness_table(data: QualityReportData) -> str:
    if not data.profiles:
        return ""
    rows = "".join(f'<tr><td>{html.escape(row["attribute"])}</td><td class="num">{row["filled"]:,}</td>'
                   f'<td class="num">{_share(row["filled"], data.profiles)}</td></tr>' for row in data.completeness)
    return (f'<table id="completeness-table"><tr><th>attribute</th><th class="num">profiles</th>'
            f'<th class="num">share</th></tr>{rows}</table>')


def _freshness_html(data: QualityReportData) -> str:
    if data.newest_event_at is None:
        lag = "no event in bronze.events yet"
    else:
        hours = (data.as_of - data.newest_event_at).total_seconds() / 3600
        lag = (f"newest event time in bronze.events: {data.newest_event_at:%Y-%m-%d %H:%M} UTC, "
               f"{hours:.1f} h before {data.as_of:%Y-%m-%d %H:%M} UTC")
    rows = "".join(f'<tr><td>{html.escape(row["table"])}</td><td class="num">{row["version"]}</td>'
                   f'<td>{row["committed_at"]:%Y-%m-%d %H:%M:%S}</td><td>{html.escape(row["operation"])}</td></tr>'
                   for row in data.tables)
    tables = (f'<table id="tables"><tr><th>table</th><th class="num">version</th><th>last commit (UTC)</th>'
              f"<th>operation</th></tr>{rows}</table>" if rows else '<p class="empty" id="tables">no table yet</p>')
    return checks_table(data.checks) + f"<section><h2>Tables</h2><p>{html.escape(lag)}</p>{tables}</section>"


def _idle_plot(data: QualityReportData) -> str | None:
    if not data.profiles:
        return None
    figure, axes = new_figure("Profiles by time since their last change or activity")
    labels = [row["bucket"] for row in data.idle]
    axes.bar(range(len(labels)), [row["profiles"] for row in data.idle], color="#8e6bb0", gid=DATA)
    axes.set_xticks(list(range(len(labels))), labels, rotation=20, fontsize=8)
    axes.set_ylabel("profiles")
    return svg(figure)


def _quarantine_plot(data: QualityReportData) -> str | None:
    if not data.quarantine:
        return None
    first = data.quarantine_since or min(row["day"] for row in data.quarantine)
    last = max(data.generated_at.date(), *(row["day"] for row in data.quarantine))
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]  # a quiet day is a zero, not a gap
    codes = sorted({row["error_code"] for row in data.quarantine})
    counts = {(row["day"], row["error_code"]): row["records"] for row in data.quarantine}
    figure, axes = new_figure("Quarantined records per day, by reason")
    bottom = [0] * len(days)
    for code in codes:
        heights = [counts.get((day, code), 0) for day in days]
        axes.bar(range(len(days)), heights, bottom=bottom, label=plain(code), gid=DATA)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_xticks(list(range(len(days))), [f"{day:%m-%d}" for day in days], rotation=60, fontsize=7)
    axes.set_ylabel("records")
    axes.legend(fontsize=7, loc="upper left")
    return svg(figure)


def _segments_plot(data: QualityReportData) -> str | None:
    users = sum(row["users"] for row in data.segments)
    if not users:
        return None
    figure, axes = new_figure(f"Primary segment of {users:,} users")
    labels = [plain(row["segment"]) for row in data.segments]
    axes.bar(range(len(labels)), [100 * row["users"] / users for row in data.segments], color="#4c9a2a", gid=DATA)
    axes.axhline(100 * data.max_segment_share, color="#c0392b", linestyle="--", linewidth=1,
                 label=f"cap {data.max_segment_share:.0%} (quality.max_segment_share)")
    axes.set_xticks(list(range(len(labels))), labels, rotation=20, fontsize=8)
    axes.set_ylabel("% of users")
    axes.legend(fontsize=8)
    return svg(figure)


def _validation_html(data: QualityReportData) -> str:
    run = data.validation
    if run is None:
        return ('<section><h2>Latest validation</h2><p class="empty" id="validation">tailor validate has not run '
                "yet</p></section>")
    summary = (f"run {run['run_at']:%Y-%m-%d %H:%M} UTC ({run['mode']}): {run['checked']} expectations, "
               f"{len(run['failed'])} failed")
    rows = "".join(
        f'<tr><td class="{"bad" if row["severity"] == "critical" else ""}">{html.escape(row["severity"])}</td>'
        f'<td>{html.escape(row["expectation"])}</td><td class="num">{row["table_version"]}</td>'
        f"<td>{html.escape(_observed(row['observed_value']))}</td></tr>" for row in run["failed"])
    table = (f'<table id="validation"><tr><th>severity</th><th>expectation</th><th class="num">version</th>'
             f"<th>observed</th></tr>{rows}</table>" if rows else '<p id="validation">every expectation passed</p>')
    return f"<section><h2>Latest validation</h2><p>{html.escape(summary)}</p>{table}</section>"


def _observed(observed_json: str | None) -> str:
    """What an expectation measured, without its sample of unexpected values (which may be
    user ids or email hashes)."""
    import json

    if not observed_json:
        return ""
    observed = json.loads(observed_json)
    kept = {key: value for key, value in observed.items() if key != "partial_unexpected_list"}
    return json.dumps(kept, sort_keys=True, default=str)[:300]


def _across_reports(data: QualityReportData, metrics: dict[str, float], prefix: str, title: str) -> str | None:
    reports = [*data.history, {"reported_at": data.generated_at, "metrics": metrics}]
    if len(reports) < 2:
        return None
    series: dict[str, tuple[list, list]] = {}
    for report in reports:
        for metric, value in report["metrics"].items():
            if metric.startswith(prefix):
                times, values = series.setdefault(metric.removeprefix(prefix), ([], []))
                times.append(report["reported_at"])
                values.append(100 * value)
    if not series:
        return None
    figure, axes = new_figure(title, (7.5, 3.6))
    for label, (times, values) in sorted(series.items()):
        axes.plot(times, values, marker="o", markersize=3, linewidth=1.2, label=plain(label), gid=DATA)
    axes.set_ylabel("%")
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
    figure.autofmt_xdate()
    return svg(figure)


def render_quality_report(data: QualityReportData, metrics: dict[str, float]) -> str:
    activity = "neither changed nor shown activity" if data.has_features else "not changed (no gold.user_features)"
    never = next((row["profiles"] for row in data.idle if row["bucket"] == NEVER_ACTIVE), 0)
    stale = (f"{data.stale_profiles:,} profiles ({_share(data.stale_profiles, data.profiles or 0)}) have {activity} "
             f"for {data.stale_after_days} days or more (quality.stale_profile_days), counted back from "
             f"{data.as_of:%Y-%m-%d %H:%M} UTC; {never:,} more have no change or activity recorded at all")
    quarantine_note = ("" if data.quarantine_rate is None else
                       f"quarantined in the last {data.quarantine_window_hours:g} h of ingest: "
                       f"{data.quarantine_rate:.2%} of records read")
    no_profiles = _no_profiles(data)
    no_features = "gold.user_features holds no user" if data.has_features else "no gold.user_features yet"
    sections = [
        _trend_html(data, metrics),
        _duplicates_html(data),
        panel("completeness", "Completeness per attribute", _completeness_plot(data), no_profiles)
        + _completeness_table(data),
        _freshness_html(data),
        panel("idle", "Stale profiles", _idle_plot(data), no_profiles, stale if data.profiles else ""),
        panel("quarantine", f"Quarantine reasons, last {QUARANTINE_DAYS} days", _quarantine_plot(data),
              f"nothing quarantined in the last {QUARANTINE_DAYS} days", quarantine_note),
        panel("segments", "Segment mix", _segments_plot(data), no_features),
        _validation_html(data),
        panel("completeness-trend", "Completeness across reports",
              _across_reports(data, metrics, "completeness.", "Profiles holding each attribute, per report"),
              "one report so far: the trend starts with the next"),
        panel("segments-trend", "Segment mix across reports",
              _across_reports(data, metrics, "segment_share.", "Share of users per primary segment, per report"),
              "one report so far: the trend starts with the next"),
    ]
    stamp = data.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return page("Tailor data quality report", f"Data quality report ({data.env})", stamp, sections)
