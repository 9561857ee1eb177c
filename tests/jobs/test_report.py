"""tailor report quality over real Delta tables: the page a person reads, the numbers it
keeps for the next report, and what the next report says changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from jobs import report
from pipelines.config import load_config
from pipelines.runtime.delta_tables import read_table
from pipelines.schemas import PROFILES, QUALITY_RESULTS, QUARANTINE
from tests.settings import job_args

AS_OF = "2026-11-29T02:00:00+02:00"  # midnight UTC, written in another zone


def _profiles(spark, config, countries: list[str | None]) -> None:
    # Five profiles: u-secret-1 and u-secret-2 share an email hash; u-secret-5 changed long ago.
    rows = [{"user_id": f"u-secret-{n}", "email_hash": "h-shared" if n <= 2 else f"h-{n}", "country": country,
             "updated_at": datetime(2025, 1, 1, tzinfo=UTC) if n == 5 else datetime(2026, 11, 27, tzinfo=UTC)}
            for n, country in enumerate(countries, start=1)]
    frame = spark.createDataFrame([{field.name: row.get(field.name) for field in PROFILES} for row in rows], PROFILES)
    frame.write.format("delta").mode("overwrite").save(config.table("silver.profiles").path)


def _world(spark, config) -> None:
    _profiles(spark, config, ["FR", "FR", "DE", "UK", None])
    spark.createDataFrame(
        [(f"u-secret-{n}", "vip" if n == 1 else "general", datetime(2026, 11, 28, tzinfo=UTC)) for n in range(1, 5)],
        "user_id string, primary_segment string, last_seen_at timestamp",
    ).write.format("delta").save(config.table("gold.user_features").path)
    now = datetime.now(UTC)
    quarantined = [{"quarantine_id": f"q-{n}", "source_kind": "files", "stream": "events", "error_code": code,
                    "error_message": "bad", "ingested_at": now - timedelta(days=days), "contract_version": "1"}
                   for n, (code, days) in enumerate([("malformed_json", 0), ("malformed_json", 1),
                                                     ("missing_field", 1), ("malformed_json", 40)])]
    spark.createDataFrame([{field.name: row.get(field.name) for field in QUARANTINE} for row in quarantined],
                          QUARANTINE).write.format("delta").save(config.table("bronze.quarantine").path)
    observed = json.dumps({"unexpected_count": 2, "partial_unexpected_list": ["u-secret-1"]})
    spark.createDataFrame([("run-1", now, "enabled", "silver.profiles", 0, "silver.profiles.user_id_unique",
                            "expect_column_values_to_be_unique", "critical", False, observed, None)],
                          QUALITY_RESULTS).write.format("delta").save(config.table("audit.quality_results").path)


def test_two_reports_show_the_data_and_what_changed_between_them(spark, tmp_path, capsys):
    config = load_config("local", [f"storage.root={tmp_path}"])
    _world(spark, config)
    assert report.main(job_args(tmp_path, "quality", "--as-of", AS_OF)) == 0
    path = tmp_path / "quality" / "report.html"
    assert capsys.readouterr().out.strip().endswith(f"quality report: {path}")
    first = path.read_text(encoding="utf-8")
    assert "the first report: nothing to compare with yet" in first
    assert "1 email hash is shared by 2 profiles (40.0% of 5)" in first
    assert '<td>country</td><td class="num">4</td><td class="num">80.0%</td>' in first
    assert ("1 profiles (20.0%) have neither changed nor shown activity for 180 days or more (quality.stale_profile_"
            "days), counted back from 2026-11-29 00:00 UTC; 0 more have no change or activity recorded") in first
    assert "silver.profiles.user_id_unique" in first
    for plot in ("completeness", "idle", "quarantine", "segments"):
        assert f'<figure class="plot" id="{plot}">' in first, plot
    assert first.count("<title>") == 1 and "u-secret" not in first

    _profiles(spark, config, ["FR", None, None, None, None])     # a CRM import blanks three countries
    output = tmp_path / "elsewhere" / "second.html"
    assert report.main(job_args(tmp_path, "quality", "--as-of", AS_OF, "--output", str(output))) == 0
    second = output.read_text(encoding="utf-8")
    assert ('<tr class="bad"><td>completeness.country</td><td class="num">80.0%</td><td class="num">20.0%</td>'
            '<td class="num">-60.0 pts</td></tr>') in second
    assert '<figure class="plot" id="completeness-trend">' in second and "u-secret" not in second

    # A one-off look keeps nothing for the next report to compare with.
    assert report.main(job_args(tmp_path, "quality", "--no-record", "--output", str(tmp_path / "look.html"))) == 0
    kept = read_table(spark, config.table("audit.quality_report"))
    assert kept.select("report_id").distinct().count() == 2
    country = sorted((row.reported_at, row.value) for row in kept.where("metric = 'completeness.country'").collect())
    assert [value for _, value in country] == [0.8, 0.2]


def test_a_report_on_an_empty_root_says_what_is_missing(spark, tmp_path):
    assert report.main(job_args(tmp_path, "quality")) == 0
    page = (tmp_path / "quality" / "report.html").read_text(encoding="utf-8")
    assert '<p class="empty" id="duplicates">no silver.profiles yet' in page
    assert "nothing has been published yet" in page


def test_an_unknown_report_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        report.main(job_args(tmp_path, "quailty"))
    assert stopped.value.code == 2
    assert "invalid choice: 'quailty'" in capsys.readouterr().err


def test_an_as_of_that_is_no_time_is_refused_by_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        report.main(job_args(tmp_path, "quality", "--as-of", "yesterday"))
    assert stopped.value.code == 2
    assert "argument --as-of: 'yesterday' is not an ISO-8601 date or time" in capsys.readouterr().err
