"""Stragglers: bronze events of an erased person that occurred at or before the erasure
are purged when they reach bronze late; one after it belongs to a new life of the id.
"At or before" is the one order of README's "Order": the millisecond, then the CRM log
position (a first-party event has none), with the delete winning a tie."""

from __future__ import annotations

import json
from datetime import date, datetime

from chispa import assert_df_equality

from pipelines.profiles.transforms import stragglers

ERASED_AT = datetime(2026, 11, 3, 9, 0)
ERASED_MS = int((ERASED_AT - datetime(1970, 1, 1)).total_seconds() * 1000)


def _crm(position: str) -> str:
    return json.dumps({"op": "u", "position": position, "after": {"user_id": "u-ann"}})


def test_events_at_or_before_the_erasure_are_stragglers_and_later_ones_a_new_life(spark):
    # A CRM delete at position 500, in the millisecond that starts at 09:00:00.000.
    erased = spark.createDataFrame(
        [("u-ann", datetime(2026, 11, 3, 9, 0, 0, 999), (ERASED_MS, "00000000000000000500"))],
        "user_id string, erased_through timestamp, erased_position struct<ts_ms: bigint, position: string>")
    crm = "crm_customer_change"
    events = spark.createDataFrame([
        ("e-1", "u-ann", "page_view", "{}", datetime(2026, 11, 2, 8, 0), date(2026, 11, 2)),  # before: a straggler
        ("e-2", "u-ann", "page_view", "{}", ERASED_AT, date(2026, 11, 3)),  # at the erasure: one too
        ("e-2", "u-ann", "page_view", "{}", ERASED_AT, date(2026, 11, 3)),  # redelivered: listed once
        # 400 microseconds into the delete's millisecond: the same millisecond, no position: before it
        ("e-5", "u-ann", "page_view", "{}", datetime(2026, 11, 3, 9, 0, 0, 400), date(2026, 11, 3)),
        # CRM changes in that millisecond: before the delete's position, or after it (a re-creation)
        ("c-1", "u-ann", crm, _crm("00000000000000000420"), ERASED_AT, date(2026, 11, 3)),
        ("c-2", "u-ann", crm, _crm("00000000000000000600"), ERASED_AT, date(2026, 11, 3)),
        ("e-6", "u-ann", "page_view", "{}", datetime(2026, 11, 3, 9, 0, 0, 1000), date(2026, 11, 3)),  # next ms
        ("e-3", "u-ann", "page_view", "{}", datetime(2026, 11, 4, 10, 0), date(2026, 11, 4)),  # after: kept
        ("e-4", "u-kit", "page_view", "{}", datetime(2026, 11, 2, 8, 0), date(2026, 11, 2)),  # not erased
        ("p-1", None, "product_upsert", "{}", datetime(2026, 11, 2, 8, 0), date(2026, 11, 2)),  # names no one
    ], "event_id string, user_id string, event_type string, payload string, occurred_at timestamp, event_date date")
    expected = spark.createDataFrame([(date(2026, 11, 2), "e-1", "u-ann"), (date(2026, 11, 3), "e-2", "u-ann"),
                                      (date(2026, 11, 3), "e-5", "u-ann"), (date(2026, 11, 3), "c-1", "u-ann")],
                                     "event_date date, event_id string, user_id string")
    assert_df_equality(stragglers(erased)(events), expected, ignore_row_order=True, ignore_nullable=True)
