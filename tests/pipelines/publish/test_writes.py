"""gold.holdout_assignments keeps a person's start day while their side stays; a new
salt draws a new group."""

from __future__ import annotations

from datetime import date

from chispa import assert_df_equality

from pipelines.config import load_config
from pipelines.publish.writes import ensure_publish_tables, merge_holdout
from pipelines.runtime.delta_tables import read_table
from tests.settings import SPARK_TEST_SETTINGS

ASSIGNMENTS = "user_id string, salt_id string, share double, bucket double, in_holdout boolean"
EXPECTED = ASSIGNMENTS + ", assigned_on date"


def test_holdout_start_days_survive_reruns_and_change_only_with_the_side(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    ensure_publish_tables(spark, config)
    table = config.table("gold.holdout_assignments")

    def merge(rows, on):
        return merge_holdout(spark, config, spark.createDataFrame(rows, ASSIGNMENTS), on)

    day1, day2, day3, day4 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)
    assert merge([("a", "s1", 0.05, 0.01, True), ("b", "s1", 0.05, 0.30, False), ("c", "s1", 0.05, 0.04, True)],
                 day1) == {"inserted": 3, "updated": 0, "deleted": 0}
    # The same group the next day: nothing changes, the start days stay.
    assert merge([("a", "s1", 0.05, 0.01, True), ("b", "s1", 0.05, 0.30, False), ("c", "s1", 0.05, 0.04, True)],
                 day2) == {"inserted": 0, "updated": 0, "deleted": 0}
    # The share drops to 3%: c leaves the group (a new start), a stays in (same start), d is new.
    merge([("a", "s1", 0.03, 0.01, True), ("b", "s1", 0.03, 0.30, False), ("c", "s1", 0.03, 0.04, False),
           ("d", "s1", 0.03, 0.02, True)], day3)
    assert_df_equality(read_table(spark, table), spark.createDataFrame([
        ("a", "s1", 0.03, 0.01, True, day1), ("b", "s1", 0.03, 0.30, False, day1),
        ("c", "s1", 0.03, 0.04, False, day3), ("d", "s1", 0.03, 0.02, True, day3)], EXPECTED),
        ignore_row_order=True, ignore_nullable=True)
    # A new salt draws a new group; b was erased: the old salt's rows and b's are gone.
    merge([("a", "s2", 0.03, 0.50, False), ("c", "s2", 0.03, 0.02, True), ("d", "s2", 0.03, 0.90, False)], day4)
    assert_df_equality(read_table(spark, table), spark.createDataFrame([
        ("a", "s2", 0.03, 0.50, False, day4), ("c", "s2", 0.03, 0.02, True, day4),
        ("d", "s2", 0.03, 0.90, False, day4)], EXPECTED), ignore_row_order=True, ignore_nullable=True)


def test_a_table_from_an_older_tailor_gets_the_new_columns(spark, tmp_path):
    from pyspark.sql.types import StructType

    from pipelines.runtime.delta_tables import ensure_table
    from pipelines.schemas import EMAIL_CONTENT

    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    older = StructType([field for field in EMAIL_CONTENT if field.name != "email_consent_at"])
    ensure_table(spark, config.table("gold.email_content"), older)
    ensure_publish_tables(spark, config)
    assert read_table(spark, config.table("gold.email_content")).schema["email_consent_at"].dataType.simpleString() \
        == "timestamp"
