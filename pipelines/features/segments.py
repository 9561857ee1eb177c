"""Segment rules: a small declarative form over feature columns (conf/segments.yaml).

    default_segment: general
    segments:
      vip:
        priority: 10                 # lower wins when a user matches several
        all:                         # every condition must hold
          - {column: revenue_90d, op: ">=", value: 250}

A user belongs to every segment whose conditions all hold; the primary segment is the
matching one with the lowest priority, or `default_segment`. Rules are checked when they
are loaded: an unknown column or operator, or a value of the wrong kind, is reported with
the segment and condition it sits in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import read_yaml_mapping
from pipelines.errors import ConfigError
from pipelines.runtime.memo import per_object

NUMERIC_TYPES = {"int", "bigint", "double", "float", "decimal", "smallint", "tinyint"}
# operator -> what its `value` must be
OPERATORS = {
    "==": "scalar", "!=": "scalar", ">": "ordered", ">=": "ordered", "<": "ordered", "<=": "ordered",
    "in": "list", "not_in": "list", "between": "pair", "is_null": "none", "not_null": "none",
}


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Segment:
    name: str
    priority: int
    conditions: tuple[Condition, ...]


@dataclass(frozen=True)
class SegmentRules:
    segments: tuple[Segment, ...]      # by priority, lowest first
    default_segment: str


def _kind_ok(value: Any, column_type: str) -> bool:
    if column_type in NUMERIC_TYPES:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if column_type == "boolean":
        return isinstance(value, bool)
    if column_type in ("string", "date", "timestamp"):
        return isinstance(value, str)
    return False


def parse_rules(document: Any, columns: Mapping[str, str], source: str = "segments",
                choices: Mapping[str, tuple[str, ...]] | None = None) -> SegmentRules:
    """Rules from a parsed YAML document, checked against `columns` (name -> Spark type
    name) and, for columns that take only some values, `choices` (name -> those values)."""
    def fail(message: str) -> ConfigError:
        return ConfigError(f"{source}: {message}")

    if not isinstance(document, dict) or not isinstance(document.get("segments"), dict):
        raise fail("must hold a 'segments' mapping of segment name -> rule")
    unknown_top = set(document) - {"segments", "default_segment"}
    if unknown_top:
        raise fail(f"unknown key '{sorted(unknown_top)[0]}'; expected segments, default_segment")
    default = document.get("default_segment", "general")
    segments: list[Segment] = []
    priorities: dict[int, str] = {}
    for name, rule in document["segments"].items():
        where = f"segment '{name}'"
        if not isinstance(rule, dict):
            raise fail(f"{where} must be a mapping with priority and all")
        extra = set(rule) - {"priority", "all"}
        if extra:
            raise fail(f"{where}: unknown key '{sorted(extra)[0]}'; expected priority, all")
        priority = rule.get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise fail(f"{where}: priority must be an integer")
        if priority in priorities:
            raise fail(f"{where}: priority {priority} is already used by segment '{priorities[priority]}'")
        priorities[priority] = name
        raw_conditions = rule.get("all")
        if not isinstance(raw_conditions, list) or not raw_conditions:
            raise fail(f"{where}: 'all' must be a non-empty list of conditions")
        conditions = []
        for number, raw in enumerate(raw_conditions, start=1):
            at = f"{where}, condition {number}"
            if not isinstance(raw, dict) or "column" not in raw or "op" not in raw:
                raise fail(f"{at}: must be a mapping with column, op and (most ops) value")
            column, op, value = raw["column"], raw["op"], raw.get("value")
            if column not in columns:
                raise fail(f"{at}: unknown column '{column}'; known: {', '.join(sorted(columns))}")
            if op not in OPERATORS:
                raise fail(f"{at}: unknown operator '{op}'; use one of {', '.join(OPERATORS)}")
            column_type = columns[column]
            expects = OPERATORS[op]
            if expects == "none":
                if "value" in raw:
                    raise fail(f"{at}: '{op}' takes no value")
            elif expects == "list":
                if not isinstance(value, list) or not value or not all(_kind_ok(v, column_type) for v in value):
                    raise fail(f"{at}: '{op}' needs a non-empty list of {column_type} values")
            elif expects == "pair":
                if not (isinstance(value, list) and len(value) == 2 and all(_kind_ok(v, column_type) for v in value)):
                    raise fail(f"{at}: 'between' needs [low, high] of {column_type} values")
            else:
                if expects == "ordered" and column_type in ("boolean",):
                    raise fail(f"{at}: '{op}' does not apply to boolean column '{column}'")
                if not _kind_ok(value, column_type):
                    raise fail(f"{at}: value {value!r} does not fit {column_type} column '{column}'")
            allowed = (choices or {}).get(column)
            if allowed and expects != "none":
                for candidate in value if isinstance(value, list) else [value]:
                    if candidate not in allowed:
                        raise fail(f"{at}: '{column}' is never {candidate!r}; it is one of {', '.join(allowed)}")
            conditions.append(Condition(column, op, value))
        segments.append(Segment(name, priority, tuple(conditions)))
    return SegmentRules(tuple(sorted(segments, key=lambda s: s.priority)), default)


def load_segment_rules(path: str | Path, columns: Mapping[str, str],
                       choices: Mapping[str, tuple[str, ...]] | None = None) -> SegmentRules:
    path = Path(path)
    document = read_yaml_mapping(path, "segment rules file", "see conf/segments.yaml in git")
    return parse_rules(document, columns, str(path), choices)


def _condition_column(condition: Condition):
    from pyspark.sql import functions as F

    column = F.col(condition.column)
    op, value = condition.op, condition.value
    if op == "is_null":
        return column.isNull()
    if op == "not_null":
        return column.isNotNull()
    if op == "in":
        return column.isin(*value)
    if op == "not_in":
        return ~column.isin(*value)
    if op == "between":
        return column.between(value[0], value[1])
    return {"==": column == value, "!=": column != value, ">": column > value, ">=": column >= value,
            "<": column < value, "<=": column <= value}[op]


def assign_segments(rules: SegmentRules) -> Callable:
    """features -> features + `segments` (every match, by priority) + `primary_segment`.

    A condition on a null feature does not hold, so a user with no history matches only
    rules that ask for nulls, and otherwise gets the default segment."""

    segments, primary = _segment_columns(rules)

    def transform(features):
        return features.withColumn("segments", segments).withColumn("primary_segment", primary)

    return transform


@per_object
def _segment_columns(rules: SegmentRules) -> tuple:
    """(segments, primary_segment) as columns, built once per rules object."""
    from pyspark.sql import functions as F

    matches = []
    for segment in rules.segments:
        holds = F.lit(True)
        for condition in segment.conditions:
            holds = holds & F.coalesce(_condition_column(condition), F.lit(False))
        matches.append(F.when(holds, F.lit(segment.name)))
    segments = F.array_compact(F.array(*matches)) if matches else F.array().cast("array<string>")
    primary = F.coalesce(F.try_element_at("segments", F.lit(1)), F.lit(rules.default_segment))
    return segments, primary
