"""Stragglers: bronze events of an erased person that occurred at or before the erasure
are purged when they reach bronze late; one after it belongs to a new life of the id."""

from __future__ import annotations

from datetime import date, datetime

from chispa import assert_df_equality

from pipelines.profiles.transforms import stragglers


def test_events_at_or_before_the_erasure_are_stragglers_and_later_ones_a_new_life(spark):
    erased = spark.createDataFrame([("u-ann", datetime(2026, 11, 3, 9, 0))],
                                   "user_id string, erased_through timestamp")
    events = spark.createDataFrame([
        ("e-1", "u-ann", datetime(2026, 11, 2, 8, 0), date(2026, 11, 2)),   # before: a straggler
        ("e-2", "u-ann", datetime(2026, 11, 3, 9, 0), date(2026, 11, 3)),   # at the erasure: one too
        ("e-2", "u-ann", datetime(2026, 11, 3, 9, 0), date(2026, 11, 3)),   # redelivered: listed once
        ("e-3", "u-ann", datetime(2026, 11, 4, 10, 0), date(2026, 11, 4)),  # after: a new life, kept
        ("e-4", "u-kit", datetime(2026, 11, 2, 8, 0), date(2026, 11, 2)),   # not erased
        ("p-1", None, datetime(2026, 11, 2, 8, 0), date(2026, 11, 2)),      # names no one
    ], "event_id string, user_id string, occurred_at timestamp, event_date date")
    expected = spark.createDataFrame([(date(2026, 11, 2), "e-1", "u-ann"), (date(2026, 11, 3), "e-2", "u-ann")],
                                     "event_date date, event_id string, user_id string")
    assert_df_equality(stragglers(erased)(events), expected, ignore_row_order=True, ignore_nullable=True)
