"""Every critical expectation against bad data that fails it and good data that passes,
asserted by name; the null-share checks compare with the previous run; the gate names
what failed at the version a job is about to read; dry runs never count."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from expectations import DATASETS
from expectations.bronze_events import freshness
from expectations.runner import docs_index, gate_refusals, validate
from jobs.validate import BUILT_BY
from jobs.validate import main as validate_main
from pipelines.config import load_config
from tests.expectations.helpers import record_failure
from tests.settings import SPARK_TEST_SETTINGS

AS_OF = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
RECENT = AS_OF - timedelta(hours=2)
STALE = AS_OF - timedelta(hours=72)
ITEMS = "array<struct<product_id:string>>"
DUPLICATED_ID = "u-dup-7f3a"


def _write(spark, config, name, rows, ddl):
    (spark.createDataFrame(rows, ddl).write.format("delta").mode("overwrite").option("overwriteSchema", "true")
     .save(config.table(name).path))


def _good_world(spark, config):
    _write(spark, config, "bronze.events", [("e1", RECENT), ("e2", RECENT - timedelta(hours=1))],
           "event_id string, occurred_at timestamp")
    # The batch 72 hours back is outside the last day of ingest: its 90% does not count.
    _write(spark, config, "bronze.ingest_metrics", [(RECENT, 100, 2), (STALE, 100, 90)],
           "batch_timestamp timestamp, input_rows long, quarantined_rows long")
    _write(spark, config, "silver.profiles", [("u1", "h1", "GB", "en-GB"), ("u2", "h2", "DE", "de-DE")],
           "user_id string, email_hash string, country string, locale string")
    _write(spark, config, "silver.products", [("p1", "Mug", 5.0, "https://x.test/p1", True),
                                              ("p2", "Candle", 7.5, "https://x.test/p2", False)],
           "product_id string, title string, price double, url string, active boolean")
    _write(spark, config, "silver.interactions", [("e1", "u1"), ("e2", "u2")], "event_id string, user_id string")
    _write(spark, config, "gold.user_features", [(f"u{n}", "vip" if n < 4 else "general", 9) for n in range(10)],
           "user_id string, primary_segment string, best_send_hour int")
    _write(spark, config, "gold.recommendations", [("u1", [("p1",)]), ("u2", [])], f"user_id string, items {ITEMS}")
    _write(spark, config, "gold.email_content", [("u1", "published", ("Hi Ada",), [("p1",)]),
                                                 ("u2", "suppressed", None, None)],
           f"user_id string, status string, greeting struct<text:string>, products {ITEMS}")


def _bad_world(spark, config):
    # One event stamped a month ahead (a bad clock) must not make the table look fresh.
    _write(spark, config, "bronze.events", [("e1", STALE), ("e1", STALE), (None, STALE),
                                            ("e9", AS_OF + timedelta(days=30))],
           "event_id string, occurred_at timestamp")
    _write(spark, config, "bronze.ingest_metrics", [(RECENT, 100, 10)],
           "batch_timestamp timestamp, input_rows long, quarantined_rows long")
    _write(spark, config, "silver.profiles",
           [(DUPLICATED_ID, "h1", None, "en-GB"), (DUPLICATED_ID, "h2", None, "de-DE")],
           "user_id string, email_hash string, country string, locale string")
    _write(spark, config, "silver.products", [("p1", None, -1.0, "https://x.test/p1", True),
                                              ("p1", None, 7.5, "https://x.test/p2", True)],
           "product_id string, title string, price double, url string, active boolean")
    _write(spark, config, "silver.interactions", [("e1", "u1"), ("e1", None)], "event_id string, user_id string")
    _write(spark, config, "gold.user_features", [(f"u{n}", "vip" if n < 9 else "general", 9) for n in range(10)],
           "user_id string, primary_segment string, best_send_hour int")
    _write(spark, config, "gold.recommendations", [("u1", [("p1",), ("p2",)]), ("u2", [("gone",)])],
           f"user_id string, items {ITEMS}")
    _write(spark, config, "gold.email_content", [("u1", "published", (" ",), [("p1",)]),
                                                 ("u2", "published", ("Hi Bo",), [])],
           f"user_id string, status string, greeting struct<text:string>, products {ITEMS}")


def test_each_critical_expectation_fails_on_bad_data_and_passes_on_good(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    _good_world(spark, config)
    _, results = validate(spark, config, DATASETS, "enabled", AS_OF, AS_OF, build_docs=False)
    assert [r.expectation for r in results if not r.success] == []
    assert {r.expectation for r in results if r.severity == "critical"} >= {
        "silver.profiles.country_null_share", "gold.user_features.segment_share", "bronze.events.quarantine_rate"}
    assert gate_refusals(spark, config, ("silver.profiles", "gold.email_content")) == []

    _bad_world(spark, config)
    _, results = validate(spark, config, DATASETS, "enabled", AS_OF, AS_OF + timedelta(minutes=1), build_docs=False)
    failed = {(r.expectation, r.severity) for r in results if not r.success}
    assert failed == {
        ("bronze.events.event_id_not_null", "critical"), ("bronze.events.event_id_unique", "critical"),
        ("bronze.events.freshness_lag_hours", "critical"), ("bronze.events.quarantine_rate", "critical"),
        ("silver.profiles.user_id_unique", "critical"),
        ("silver.profiles.country_null_share", "critical"),      # 0% blank last run, 100% now
        ("silver.products.product_id_unique", "critical"), ("silver.products.title_null_share", "critical"),
        ("silver.products.price_not_negative", "warning"),
        ("silver.interactions.event_id_unique", "critical"), ("silver.interactions.user_id_not_null", "critical"),
        ("gold.user_features.segment_share", "critical"),        # 90% in vip, 80% allowed
        ("gold.recommendations.products_known_and_active", "critical"),  # p2 inactive, "gone" unknown
        ("gold.email_content.greeting_present", "critical"), ("gold.email_content.products_present", "critical"),
    }
    # Running validate again over the same version does not make the blank countries the
    # baseline: the previous passing run over an earlier version is.
    _, again = validate(spark, config, ("silver.profiles",), "enabled", AS_OF, AS_OF + timedelta(minutes=2),
                        build_docs=False)
    assert {r.expectation for r in again if not r.success} == {"silver.profiles.user_id_unique",
                                                              "silver.profiles.country_null_share"}
    # The gate names what failed, for the version each job would read now.
    refusals = gate_refusals(spark, config, ("silver.profiles", "gold.recommendations"))
    assert refusals == [
        "gold.recommendations version 1: gold.recommendations.products_known_and_active failed",
        "silver.profiles version 1: silver.profiles.country_null_share failed",
        "silver.profiles version 1: silver.profiles.user_id_unique failed",
    ]


def _keyless_world(spark, config):
    """Every keyed table with a missing key, the gold ones a repeated one too (the bad world
    repeats the others'), otherwise good; bronze.events holds only an event from a bad
    clock, so no event time can be believed."""
    _write(spark, config, "bronze.events", [("e1", AS_OF + timedelta(days=30))],
           "event_id string, occurred_at timestamp")
    _write(spark, config, "bronze.ingest_metrics", [(RECENT, 100, 0)],
           "batch_timestamp timestamp, input_rows long, quarantined_rows long")
    _write(spark, config, "silver.profiles", [(None, "h1", "GB", "en-GB"), ("u2", "h2", "DE", "de-DE")],
           "user_id string, email_hash string, country string, locale string")
    _write(spark, config, "silver.products", [(None, "Mug", 5.0, "https://x.test/p1", True),
                                              ("p1", "Candle", 7.5, "https://x.test/p2", True)],
           "product_id string, title string, price double, url string, active boolean")
    _write(spark, config, "silver.interactions", [(None, "u1"), ("e2", "u2")], "event_id string, user_id string")
    _write(spark, config, "gold.user_features",
           [("u1", "vip", 9), ("u1", "general", 9), (None, "loyal", 9), ("u4", "new", 9)],
           "user_id string, primary_segment string, best_send_hour int")
    _write(spark, config, "gold.recommendations", [("u1", [("p1",)]), ("u1", [("p1",)]), (None, [])],
           f"user_id string, items {ITEMS}")
    _write(spark, config, "gold.email_content", [("u1", "published", ("Hi",), [("p1",)]),
                                                 ("u1", "published", ("Hi",), [("p1",)]),
                                                 (None, "suppressed", None, None)],
           f"user_id string, status string, greeting struct<text:string>, products {ITEMS}")


def test_missing_and_repeated_keys_fail_by_name_in_every_table(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    _keyless_world(spark, config)
    _, results = validate(spark, config, DATASETS, "enabled", AS_OF, AS_OF, build_docs=False)
    assert {(r.expectation, r.severity) for r in results if not r.success} == {
        ("bronze.events.freshness_known", "critical"),
        ("silver.profiles.user_id_not_null", "critical"),
        ("silver.products.product_id_not_null", "critical"),
        ("silver.interactions.event_id_not_null", "critical"),
        ("gold.user_features.user_id_not_null", "critical"), ("gold.user_features.user_id_unique", "critical"),
        ("gold.recommendations.user_id_not_null", "critical"), ("gold.recommendations.user_id_unique", "critical"),
        ("gold.email_content.user_id_not_null", "critical"), ("gold.email_content.user_id_unique", "critical"),
    }


def test_an_empty_features_table_holds_no_segment_above_the_cap(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    _write(spark, config, "gold.user_features", [], "user_id string, primary_segment string, best_send_hour int")
    _, results = validate(spark, config, ("gold.user_features",), "enabled", AS_OF, AS_OF, build_docs=False)
    assert [r.expectation for r in results if not r.success] == []
    assert "gold.user_features.segment_share" in {r.expectation for r in results}


def test_validate_exits_non_zero_naming_each_failure_and_dry_run_never_fails(spark, tmp_path, capsys):
    argv = ["--set", f"storage.root={tmp_path}", *[part for s in SPARK_TEST_SETTINGS for part in ("--set", s)],
            "--as-of", AS_OF.isoformat(), "--dataset", "gold.email_content", "--dataset", "gold.user_features",
            "--dataset", "silver.profiles"]
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    _bad_world(spark, config)

    assert validate_main([*argv, "--mode", "dry_run"]) == 0
    captured = capsys.readouterr()
    assert '"critical_failed": ["gold.email_content.greeting_present"' in captured.out
    # A dry run's results do not count: the gate checks these versions itself, and refuses.
    assert gate_refusals(spark, config, ("gold.email_content",)) == [
        "gold.email_content version 0: gold.email_content.greeting_present failed",
        "gold.email_content version 0: gold.email_content.products_present failed"]

    assert validate_main(argv) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert [line.split(" on ")[0] for line in err] == [
        "tailor: critical expectation failed: gold.email_content.greeting_present",
        "tailor: critical expectation failed: gold.email_content.products_present",
        "tailor: critical expectation failed: gold.user_features.segment_share",
        "tailor: critical expectation failed: silver.profiles.user_id_unique",
    ]
    index = docs_index(config)
    assert open(index).read().count("gold.email_content") > 0  # Data Docs name the suites they ran
    # The duplicated user id is in no line printed, no stored result, no Data Docs page.
    assert DUPLICATED_ID not in captured.out + captured.err
    observed = [row.observed_value or "" for row in spark.read.format("delta").load(
        config.table("audit.quality_results").path).collect()]
    assert '"unexpected_count": 2' in " ".join(observed) and not any(DUPLICATED_ID in value for value in observed)
    written = [path for path in Path(config.under_root("quality")).rglob("*") if path.is_file()]
    assert any(path.suffix == ".html" for path in written)
    assert [path for path in written if DUPLICATED_ID.encode() in path.read_bytes()] == []

    assert validate_main([*argv, "--mode", "disabled"]) == 0


def test_an_unknown_watched_column_or_dataset_is_one_line_naming_it(spark, tmp_path, capsys):
    argv = ["--set", f"storage.root={tmp_path}", *[part for s in SPARK_TEST_SETTINGS for part in ("--set", s)],
            "--as-of", AS_OF.isoformat(), "--dataset", "silver.profiles"]
    _good_world(spark, load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS]))
    assert validate_main([*argv, "--set", "quality.watched_columns={silver.profiles: [contry]}"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tailor: quality.watched_columns.silver.profiles: 'contry' is not a column of silver.profiles"]
    assert validate_main([*argv, "--set", "quality.watched_columns={silver.profile: [country]}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quality.watched_columns" in err[0] and "'silver.profile' has no suite" in err[0]


def test_a_table_not_built_yet_is_skipped_and_named_when_asked_for(spark, tmp_path, capsys):
    argv = ["--set", f"storage.root={tmp_path}", *[part for s in SPARK_TEST_SETTINGS for part in ("--set", s)],
            "--as-of", AS_OF.isoformat()]
    _write(spark, load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS]), "silver.profiles",
           [("u1", "h1", "GB", "en-GB")], "user_id string, email_hash string, country string, locale string")
    assert validate_main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["missing"] == ["bronze.events", "silver.products", "silver.interactions", "gold.user_features",
                                  "gold.recommendations", "gold.email_content"]
    assert summary["results"] > 0 and summary["failed"] == 0
    assert validate_main([*argv, "--dataset", "silver.profiles", "--dataset", "gold.email_content"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "tailor: gold.email_content does not exist yet (tailor publish builds it): nothing to validate"]


def test_every_dataset_names_the_job_that_builds_it():
    assert sorted(BUILT_BY) == sorted(DATASETS)


def test_thresholds_come_from_config(spark, tmp_path):
    """The same tables pass under the defaults and fail under stricter settings: the
    quarantine rate (2% of the last day), a segment's share (40%), and a watched column's
    null share rising from a non-zero baseline (10% to 25% blank countries)."""
    default = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    strict = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, "quality.max_quarantine_rate=0.01",
                                   "quality.max_segment_share=0.3", "quality.max_null_share_increase=0.1"])
    datasets = ("bronze.events", "silver.profiles", "gold.user_features")
    _good_world(spark, default)

    def profiles(blank: int) -> None:
        _write(spark, default, "silver.profiles",
               [(f"u{n}", f"h{n}", None if n < blank else "GB", "en-GB") for n in range(20)],
               "user_id string, email_hash string, country string, locale string")

    def failed(config, minutes: int) -> set[str]:
        _, results = validate(spark, config, datasets, "enabled", AS_OF, AS_OF + timedelta(minutes=minutes),
                              build_docs=False)
        return {r.expectation for r in results if not r.success}

    profiles(blank=2)
    assert failed(default, 0) == set()
    profiles(blank=5)
    assert failed(strict, 1) == {"bronze.events.quarantine_rate", "gold.user_features.segment_share",
                                 "silver.profiles.country_null_share"}
    assert failed(default, 2) == set()
    # A window of 100 hours takes in the batch 72 hours back, 90% of it quarantined.
    wide = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS,
                                 "quality.quarantine_window_hours=100"])
    assert failed(wide, 3) == {"bronze.events.quarantine_rate"}


def test_an_event_ahead_of_the_run_counts_within_the_configured_clock_skew(spark):
    events = spark.createDataFrame([(AS_OF - timedelta(hours=30),), (AS_OF + timedelta(minutes=20),)],
                                   "occurred_at timestamp")
    lags = [freshness(events, AS_OF, timedelta(minutes=minutes)).first().lag_hours for minutes in (10, 30)]
    assert lags == [30.0, pytest.approx(-1 / 3)]


def _config(tmp_path, *extra):
    return load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS, *extra])


def _modes(spark, config) -> list[str]:
    return sorted({row.mode for row in spark.read.format("delta").load(
        config.table("audit.quality_results").path).collect()})


def _runs(spark, config) -> int:
    results = spark.read.format("delta").load(config.table("audit.quality_results").path)
    return results.select("run_id").distinct().count()


def test_a_pass_over_another_tables_old_version_or_fewer_checks_does_not_count(spark, tmp_path):
    config = _config(tmp_path)
    _good_world(spark, config)
    validate(spark, config, DATASETS, "enabled", AS_OF, AS_OF, build_docs=False)
    # At the versions the pass read (the recommendations' and the catalogue's), it counts:
    # the gate runs nothing again, for one table or several.
    assert gate_refusals(spark, config, ("gold.recommendations",)) == []
    assert gate_refusals(spark, config, ("silver.profiles", "gold.recommendations", "gold.email_content")) == []
    assert _runs(spark, config) == 1
    # Freshness is measured against the time of the run, so a recorded pass never counts:
    # bronze.events is checked again (with a bound the wall clock cannot break).
    assert gate_refusals(spark, _config(tmp_path, "quality.max_freshness_lag_hours=1000000"),
                         ("bronze.events",)) == []
    assert _runs(spark, config) == 2
    # The catalogue withdraws p1 after the recommendations passed: their version is the same,
    # but what they were checked against is not.
    _write(spark, config, "silver.products", [("p1", "Mug", 5.0, "https://x.test/p1", False)],
           "product_id string, title string, price double, url string, active boolean")
    assert gate_refusals(spark, config, ("gold.recommendations",)) == [
        "gold.recommendations version 0: gold.recommendations.products_known_and_active failed"]
    assert _runs(spark, config) == 3

    # One passing row for a version is not a check of it by the whole suite.
    _write(spark, config, "silver.interactions", [("e1", "u1"), ("e1", "u2")], "event_id string, user_id string")
    record_failure(spark, config, "silver.interactions", "silver.interactions.user_id_not_null", success=True)
    assert gate_refusals(spark, config, ("silver.interactions",)) == [
        "silver.interactions version 1: silver.interactions.event_id_unique failed"]


@pytest.mark.parametrize(("mode", "required", "refused", "recorded"), [
    ("dry_run", False, [], ["dry_run"]),
    ("dry_run", True, ["silver.interactions version 0 was never validated (tailor validate)"], ["dry_run"]),
    ("disabled", False, [], None),
    ("disabled", True, ["silver.interactions version 0 was never validated (tailor validate)"], None),
])
def test_the_gate_in_each_mode_over_a_version_never_checked(spark, tmp_path, mode, required, refused, recorded):
    config = _config(tmp_path, f"quality.mode={mode}", f"quality.require_validation={str(required).lower()}")
    _write(spark, config, "silver.interactions", [("e1", "u1"), ("e1", "u2")], "event_id string, user_id string")
    assert gate_refusals(spark, config, ("silver.interactions",)) == refused
    if recorded is None:
        assert not Path(config.table("audit.quality_results").path).exists()
    else:
        assert _modes(spark, config) == recorded
    assert gate_refusals(spark, _config(tmp_path, "quality.gate=off"), ("silver.interactions",)) == []


def test_results_recorded_before_input_versions_existed_are_kept_and_checked_again(spark, tmp_path):
    """An audit.quality_results table from before the column: its rows stay, the gate reads
    it, and a suite reading another table is checked again (the old row names no catalogue
    version); the new run's rows carry the column."""
    from pyspark.sql.types import StructType

    from pipelines.schemas import QUALITY_RESULTS

    config = _config(tmp_path)
    _good_world(spark, config)
    old_schema = StructType([field for field in QUALITY_RESULTS if field.name != "input_versions"])
    spark.createDataFrame([("run-old", AS_OF, "enabled", "gold.recommendations", 0,
                            "gold.recommendations.products_known_and_active", "expect_column_values_to_be_in_set",
                            "critical", False, None)], old_schema).write.format("delta").save(
        config.table("audit.quality_results").path)
    assert gate_refusals(spark, config, ("gold.recommendations",)) == []
    results = spark.read.format("delta").load(config.table("audit.quality_results").path)
    recorded = results.collect()
    assert [row.input_versions for row in recorded if row.run_id == "run-old"] == [None]
    assert {str(row.input_versions) for row in recorded if row.run_id != "run-old"} == {"{'silver.products': 0}"}
