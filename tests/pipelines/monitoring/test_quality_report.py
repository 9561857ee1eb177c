"""The audit report's transforms, by hand-counted rows, and its page from hand-made
figures: what it says, what it marks, and what it never shows."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

from chispa import assert_df_equality

from pipelines.monitoring.freshness import Check
from pipelines.monitoring.quality_report import QualityReportData, headline_metrics, render_quality_report
from pipelines.monitoring.transforms import (
    NEVER_ACTIVE,
    completeness,
    idle_days,
    idle_histogram,
    quarantine_by_day,
    segment_mix,
    shared_email_groups,
)
from pipelines.schemas import PROFILES

AS_OF = datetime(2026, 11, 29, tzinfo=UTC)


def _at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def _profiles(spark, rows: list[dict]):
    return spark.createDataFrame([{field.name: row.get(field.name) for field in PROFILES} for row in rows], PROFILES)


def test_completeness_counts_an_attribute_only_where_it_holds_something(spark):
    granted = {"status": "granted", "granted_at": None, "revoked_at": None, "source": "crm", "actor": None,
               "updated_at": None}
    profiles = _profiles(spark, [
        {"user_id": "u-1", "email_hash": "h1", "phone_encrypted": b"x", "first_name_encrypted": b"y",
         "country": "FR", "topics": ["garden"], "consent_email_marketing": granted, "preferred_send_hour": 9},
        # a blank country, an empty topic list and a consent without a status hold nothing;
        # a name is judged by its ciphertext (a blank one is stored as none)
        {"user_id": "u-2", "email_hash": "h2", "last_name_key_id": "k1", "topics": [], "language": "fr",
         "country": "  ", "consent_email_marketing": {**granted, "status": None}},
        {"user_id": "u-3"},
    ])
    expected = spark.createDataFrame([
        ("email", 2, 3), ("phone", 1, 3), ("first_name", 1, 3), ("last_name", 0, 3), ("country", 1, 3),
        ("locale", 0, 3), ("topics", 1, 3), ("frequency_cap_per_week", 0, 3), ("language", 1, 3),
        ("preferred_send_hour", 1, 3), ("consent_email_marketing", 1, 3), ("consent_personalization", 0, 3),
        ("consent_profiling", 0, 3),
    ], "attribute string, filled long, profiles long")
    assert_df_equality(completeness(profiles), expected, ignore_nullable=True)


def test_completeness_of_no_profiles_is_zero_of_zero(spark):
    result = completeness(_profiles(spark, [])).collect()
    assert len(result) == 13 and all((row.filled, row.profiles) == (0, 0) for row in result)


def test_shared_emails_are_counted_by_how_many_profiles_share_each(spark):
    hashes = ["h1", "h1", "h2", "h2", "h2", "h3", "h4", "h4", None, None]
    profiles = _profiles(spark, [{"user_id": f"u-{n}", "email_hash": value} for n, value in enumerate(hashes)])
    expected = spark.createDataFrame([(2, 2), (3, 1)], "profiles_per_email long, emails long")
    assert_df_equality(shared_email_groups(profiles), expected, ignore_nullable=True)


def test_idle_days_take_the_later_of_a_change_and_an_activity(spark):
    profiles = _profiles(spark, [
        {"user_id": "u-1", "updated_at": _at(2026, 11, 28, 12)},    # half a day: 0
        {"user_id": "u-2", "updated_at": _at(2026, 1, 1)},          # seen 2026-11-20: 9
        {"user_id": "u-3", "updated_at": _at(2025, 6, 1)},          # no features row: 546
        {"user_id": "u-4"},                                         # nothing known
        {"user_id": "u-5", "updated_at": _at(2026, 11, 22)},        # 7
        {"user_id": "u-6", "updated_at": _at(2026, 5, 1)},          # seen never: 212
        {"user_id": "u-7", "updated_at": _at(2026, 11, 21, 23)},    # 7 days and an hour: 7
        {"user_id": "u-8", "updated_at": _at(2026, 6, 2)},          # 180: stale, at the threshold
    ])
    features = spark.createDataFrame([("u-2", _at(2026, 11, 20)), ("u-6", None)],
                                      "user_id string, last_seen_at timestamp")
    expected = spark.createDataFrame([("u-1", 0), ("u-2", 9), ("u-3", 546), ("u-4", None), ("u-5", 7), ("u-6", 212),
                                      ("u-7", 7), ("u-8", 180)], "user_id string, idle_days int")
    actual = idle_days(profiles, features, AS_OF)
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_row_order=True)

    # (bucket, profiles, stale at 180 days or more)
    histogram = spark.createDataFrame([
        ("up to 7 days", 3, 0), ("8-30 days", 1, 0), ("31-90 days", 0, 0), ("91-180 days", 1, 1),
        ("181-365 days", 1, 1), ("over a year", 1, 1), (NEVER_ACTIVE, 1, 0)],
        "bucket string, profiles long, stale long")
    assert_df_equality(idle_histogram(actual, 180), histogram, ignore_nullable=True)


def test_idle_days_without_features_count_profile_changes_only(spark):
    profiles = _profiles(spark, [{"user_id": "u-2", "updated_at": _at(2026, 1, 1)}])
    assert [tuple(row) for row in idle_days(profiles, None, AS_OF).collect()] == [("u-2", 332)]


def test_quarantine_is_counted_per_day_and_reason_since_a_day(spark):
    rows = [(_at(2026, 11, 1, 10), "malformed_json"),        # before the window
            (_at(2026, 11, 27, 0, 5), "malformed_json"), (_at(2026, 11, 27, 23, 55), "malformed_json"),
            (_at(2026, 11, 28, 8), "missing_field"), (_at(2026, 11, 28, 9), "malformed_json")]
    quarantine = spark.createDataFrame(rows, "ingested_at timestamp, error_code string")
    expected = spark.createDataFrame([(date(2026, 11, 27), "malformed_json", 2),
                                      (date(2026, 11, 28), "malformed_json", 1),
                                      (date(2026, 11, 28), "missing_field", 1)],
                                     "day date, error_code string, records long")
    assert_df_equality(quarantine_by_day(quarantine, date(2026, 11, 27)), expected, ignore_nullable=True)


def test_segment_mix_counts_primary_segments_largest_first(spark):
    features = spark.createDataFrame([("u-1", "vip"), ("u-2", "general"), ("u-3", "general"), ("u-4", None)],
                                     "user_id string, primary_segment string")
    expected = spark.createDataFrame([("general", 2), ("(none)", 1), ("vip", 1)], "segment string, users long")
    assert_df_equality(segment_mix(features), expected, ignore_nullable=True)


# -- the page, from hand-made figures (no Spark) ------------------------------------------

def _data(**changes) -> QualityReportData:
    data = QualityReportData(
        report_id="r-2", generated_at=_at(2026, 11, 29, 6), as_of=AS_OF, env="local", stale_after_days=180,
        max_segment_share=0.8, max_null_share_increase=0.2, profiles=200,
        completeness=[{"attribute": "email", "filled": 190, "profiles": 200},
                      {"attribute": "country", "filled": 100, "profiles": 200}],
        shared_emails=[{"profiles_per_email": 2, "emails": 3}, {"profiles_per_email": 3, "emails": 1}],
        idle=[{"bucket": "up to 7 days", "profiles": 150}, {"bucket": "over a year", "profiles": 50}],
        stale_profiles=50, has_features=True, checks=[Check("publish", False, "last publish 30.0 h ago (limit 26 h)")],
        tables=[{"table": "silver.profiles", "version": 7, "operation": "MERGE",
                 "committed_at": _at(2026, 11, 29, 5)}],
        newest_event_at=_at(2026, 11, 28, 18), quarantine_rate=0.015, quarantine_window_hours=24,
        quarantine=[{"day": date(2026, 11, 28), "error_code": "malformed_json", "records": 12}],
        segments=[{"segment": "general", "users": 170}, {"segment": "vip", "users": 30}],
        validation={"run_id": "v-1", "run_at": _at(2026, 11, 29, 2), "mode": "enabled", "checked": 30, "failed": [
            {"dataset": "silver.profiles", "table_version": 7, "expectation": "silver.profiles.user_id_unique",
             "severity": "critical", "observed_value": json.dumps(
                 {"unexpected_count": 2, "partial_unexpected_list": ["u-private-1", "u-private-2"]})}]},
        history=[{"report_id": "r-1", "reported_at": _at(2026, 11, 28, 6), "metrics": {
            "profiles": 180.0, "completeness.email": 0.95, "completeness.country": 0.9, "shared_emails": 2.0,
            "segment_share.general": 0.7, "segment_share.lapsed": 0.1}}])
    for name, value in changes.items():
        setattr(data, name, value)
    return data


def test_headline_metrics_are_the_shares_and_counts_of_the_figures():
    assert headline_metrics(_data()) == {
        "profiles": 200, "shared_emails": 4, "profiles_sharing_an_email": 9, "stale_profile_share": 0.25,
        "completeness.email": 0.95, "completeness.country": 0.5, "segment_share.general": 0.85,
        "segment_share.vip": 0.15, "event_lag_hours": 6.0, "quarantine_rate": 0.015}


def _row(page: str, metric: str) -> str:
    start = page.index(f"<td>{metric}</td>")
    return page[page.rindex("<tr", 0, start):page.index("</tr>", start)]


def test_the_page_compares_with_the_last_report_and_marks_what_got_worse():
    data = _data()
    page = render_quality_report(data, headline_metrics(data))
    assert "previous report 2026-11-28 06:00 UTC" in page
    # Country emptied by 40 points, past the 20-point allowance; email held.
    assert _row(page, "completeness.country") == (
        '<tr class="bad"><td>completeness.country</td><td class="num">90.0%</td><td class="num">50.0%</td>'
        '<td class="num">-40.0 pts</td>')
    assert _row(page, "completeness.email").startswith("<tr><td>completeness.email</td>")
    assert 'class="bad"><td>segment_share.general</td>' in page      # 85% above the 80% cap
    assert _row(page, "shared_emails").startswith('<tr class="bad">')  # 2 -> 4
    assert '<td class="num">new</td>' in _row(page, "segment_share.vip")
    assert '<td class="num">gone</td>' in _row(page, "segment_share.lapsed")
    assert "4 email hashes are shared by 9 profiles (4.5% of 200)" in page
    assert "50 profiles (25.0%) have neither changed nor shown activity for 180 days or more" in page
    assert "18:00 UTC, 6.0 h before 2026-11-29 00:00 UTC" in page
    assert "silver.profiles.user_id_unique" in page and "unexpected_count" in page


def test_the_page_draws_every_plot_and_never_shows_an_expectations_sample():
    data = _data()
    page = render_quality_report(data, headline_metrics(data))
    for plot in ("completeness", "idle", "quarantine", "segments", "completeness-trend", "segments-trend"):
        start = page.index(f'<figure class="plot" id="{plot}">')
        assert 'id="data' in page[start:page.index("</figure>", start)], plot
    assert "u-private" not in page


def test_a_first_report_on_an_empty_root_says_what_is_missing():
    data = QualityReportData(report_id="r-1", generated_at=_at(2026, 11, 29, 6), as_of=AS_OF, env="local",
                             stale_after_days=180, max_segment_share=0.8, max_null_share_increase=0.2)
    metrics = headline_metrics(data)
    assert metrics == {}
    page = render_quality_report(data, metrics)
    assert "the first report: nothing to compare with yet" in page
    for missing in ('<p class="empty" id="duplicates">no silver.profiles yet',
                    '<p class="empty" id="completeness">no silver.profiles yet',
                    '<p class="empty" id="tables">no table yet',
                    '<p class="empty" id="quarantine">nothing quarantined in the last 30 days',
                    '<p class="empty" id="segments">no gold.user_features yet',
                    '<p class="empty" id="validation">tailor validate has not run yet',
                    '<p class="empty" id="completeness-trend">one report so far'):
        assert missing in page, missing
    assert "<figure" not in page


def test_names_from_config_and_data_are_escaped_on_the_page_and_drawn_as_written():
    # "$\\frac$" is a formula matplotlib cannot parse: drawn as a formula, it would fail the page.
    data = _data(segments=[{"segment": "<b>&$x$", "users": 10}, {"segment": "$\\frac$", "users": 5}],
                 quarantine=[{"day": date(2026, 11, 28), "error_code": "<i>$\\frac", "records": 1}])
    page = render_quality_report(data, headline_metrics(data))
    assert "<b>&" not in page and "<i>" not in page
    assert "segment_share.&lt;b&gt;&amp;$x$" in page
    for plot in ("segments", "quarantine", "segments-trend"):
        assert f'<figure class="plot" id="{plot}">' in page, plot


def test_an_empty_profiles_table_is_told_apart_from_a_missing_one():
    data = _data(profiles=0, completeness=[], shared_emails=[], idle=[], stale_profiles=0, segments=[])
    page = render_quality_report(data, headline_metrics(data))
    assert '<p class="empty" id="duplicates">silver.profiles holds no profile' in page
    assert '<p class="empty" id="completeness">silver.profiles holds no profile' in page
    assert '<p class="empty" id="segments">gold.user_features holds no user' in page
    assert headline_metrics(data)["profiles"] == 0
