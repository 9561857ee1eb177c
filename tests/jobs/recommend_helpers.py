"""A small shop for the recommender's jobs, written straight into its tables: two taste
groups over 57 days, each person viewing and buying their group's items and reordering a
favourite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipelines.runtime.delta_tables import ensure_table
from pipelines.schemas import INTERACTIONS

START = datetime(2026, 9, 1, tzinfo=UTC)
GROUPS = (("g", "garden"), ("k", "kitchen"))


def interaction_rows(user: str, prefix: str, person: int, days=range(0, 60, 4)) -> list[tuple]:
    rows = []
    for day in days:
        at = START + timedelta(days=day)
        items = [f"{prefix}-{(person + day) % 6}", f"{prefix}-fav{person % 2}"]
        order = f"{user}-{day}"
        rows.append((f"v-{order}", user, "product_view", at, at.date(), "web", None, items[0], None, None,
                     None, None, None, None, None, None, None, None, at))
        rows.append((f"o-{order}", user, "purchase", at, at.date(), "web", None, None, None, None, "GBP",
                     None, order, [(item, 1, 2.0) for item in items], 4.0, False, None, None, at))
    return rows


def write_interactions(spark, config, rows: list[tuple] | None = None) -> None:
    if rows is None:
        rows = [row for group, prefix in GROUPS for person in range(8)
                for row in interaction_rows(f"{group}{person}", prefix, person)]
    table = config.table("silver.interactions")
    ensure_table(spark, table, INTERACTIONS, properties={"delta.enableChangeDataFeed": "true"})
    spark.createDataFrame(rows, INTERACTIONS).write.format("delta").mode("append").save(table.path)
