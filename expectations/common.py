"""Checks several suites share: a key that is present and unique, and null shares that
may not jump against the previous run."""

from __future__ import annotations

from typing import Any

import great_expectations.expectations as gxe
from pyspark.sql import DataFrame

from expectations import Check, Previous
from pipelines.errors import ConfigError


def key_checks(dataset: str, key: str) -> list[Check]:
    """Null keys and duplicate keys: both critical (a MERGE keyed on them goes wrong)."""
    return [Check(f"{dataset}.{key}_not_null", "critical", gxe.ExpectColumnValuesToNotBeNull(column=key)),
            Check(f"{dataset}.{key}_unique", "critical", gxe.ExpectColumnValuesToBeUnique(column=key))]


def previous_null_share(observed: Any) -> float | None:
    """The null share a not-null check measured, from its stored observed value."""
    if isinstance(observed, dict) and isinstance(observed.get("unexpected_percent"), int | float):
        return float(observed["unexpected_percent"]) / 100
    return None


def null_share_checks(dataset: str, frame: DataFrame, columns: tuple[str, ...], previous: Previous,
                      max_increase: float) -> list[Check]:
    """Per watched column: critical when its null share rose more than `max_increase`
    since the previous run (a CRM import that blanks every country). The first run only
    records the share."""
    checks = []
    for column in columns:
        if column not in frame.columns:
            raise ConfigError(f"quality.watched_columns.{dataset}: '{column}' is not a column of {dataset}")
        name = f"{dataset}.{column}_null_share"
        before = previous_null_share(previous(name))
        allowed = 1.0 if before is None else min(1.0, before + max_increase)
        checks.append(Check(name, "critical",
                            gxe.ExpectColumnValuesToNotBeNull(column=column, mostly=round(1.0 - allowed, 6))))
    return checks
