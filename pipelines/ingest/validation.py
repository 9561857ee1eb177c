"""Validate raw records against the event contract with Spark expressions only.

The JSON Schemas of `pipelines.contracts.events` are compiled into Column expressions over
Spark's VARIANT type (`try_parse_json`, `variant_get`, `schema_of_variant`), so the hot
path stays in the JVM: no Python UDF runs per record. The checks and their precedence
mirror the Python validator (`pipelines.contracts.validate_event`); a test holds the two to
the same answers on the same corpus.

Everything here is a pure `DataFrame -> DataFrame` function, safe on streaming frames.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from pipelines.contracts.events import (
    CONTRACT_VERSION,
    DEBEZIUM_OPS,
    EARLIEST_OCCURRED_AT,
    ENVELOPE,
    EVENTS_WITHOUT_USER,
    MAX_EVENT_BYTES,
    MAX_FUTURE_SKEW_HOURS,
    OCCURRED_AT_PATTERN,
    PAYLOADS,
)

CRM_EVENT_TYPE = "crm_customer_change"

# Columns every source hands to validation (see pipelines.sources.raw).
SOURCE_COORDINATES = ("source_kind", "source_stream", "source_partition", "source_offset")
RAW_COLUMNS = ("raw", *SOURCE_COORDINATES, "source_timestamp")


@dataclass(frozen=True)
class _Check:
    condition: Column
    message: Column | str


def _message(value: Column | str) -> Column:
    return F.lit(value) if isinstance(value, str) else value


class _Node(ABC):
    """A JSON value inside a record: its type name (null when absent) and typed reads."""

    @abstractmethod
    def type_name(self) -> Column: ...

    @abstractmethod
    def string(self) -> Column: ...

    @abstractmethod
    def double(self) -> Column: ...

    @abstractmethod
    def elements(self) -> Column: ...

    @abstractmethod
    def child(self, name: str) -> _Node: ...

    def present(self) -> Column:
        return self.type_name().isNotNull()


class _Inline(_Node):
    """A variant Column read where it is used: array elements inside a lambda."""

    def __init__(self, column: Column):
        self.column = column

    def type_name(self) -> Column:
        return F.schema_of_variant(self.column)

    def string(self) -> Column:
        return F.try_variant_get(self.column, "$", "string")

    def double(self) -> Column:
        return F.try_variant_get(self.column, "$", "double")

    def elements(self) -> Column:
        return F.try_variant_get(self.column, "$", "array<variant>")

    def child(self, name: str) -> _Node:
        return _Inline(F.variant_get(self.column, f"$.{name}", "variant"))


class _Reads:
    """Per-row reads of the parsed record, each computed once into its own column.

    The checks refer to these columns, not to fresh variant lookups: the rule set stays
    small enough for Spark to compile, and a path read by ten checks is read once."""

    def __init__(self, root: Column):
        self.root = root
        self.expressions: dict[str, Column] = {}
        self.names: dict[str, str] = {}

    def column(self, kind: str, path: str, scope: tuple[str, Column] | None = None) -> Column:
        """The read, computed only for rows in `scope` (name, condition), if one is given:
        a payload path is read only for the event types whose schema has it."""
        key = f"{kind}:{path}:{scope[0] if scope else ''}"
        if key not in self.names:
            name = self.names[key] = f"_read{len(self.names)}"
            variant = self.root if path == "$" else F.variant_get(self.root, path, "variant")
            expression = {
                "type": lambda: F.schema_of_variant(variant),
                "string": lambda: F.try_variant_get(self.root, path, "string"),
                "double": lambda: F.try_variant_get(self.root, path, "double"),
                "elements": lambda: F.try_variant_get(self.root, path, "array<variant>"),
            }[kind]()
            self.expressions[name] = F.when(scope[1], expression) if scope else expression
        return F.col(self.names[key])

    def add_to(self, df: DataFrame) -> DataFrame:
        return df.select("*", *[expression.alias(name) for name, expression in self.expressions.items()])


class _Path(_Node):
    def __init__(self, reads: _Reads, path: str = "$", scope: tuple[str, Column] | None = None):
        self.reads, self.path, self.scope = reads, path, scope

    def type_name(self) -> Column:
        return self.reads.column("type", self.path, self.scope)

    def string(self) -> Column:
        return self.reads.column("string", self.path, self.scope)

    def double(self) -> Column:
        return self.reads.column("double", self.path, self.scope)

    def elements(self) -> Column:
        return self.reads.column("elements", self.path, self.scope)

    def child(self, name: str) -> _Node:
        return _Path(self.reads, f"{self.path}.{name}", self.scope)

    def within(self, name: str, condition: Column) -> _Path:
        return _Path(self.reads, self.path, (name, condition))


def _has_json_type(node: _Node, kind: str | list[str]) -> Column:
    kinds = kind if isinstance(kind, list) else [kind]
    name = node.type_name()
    tests = []
    for one in kinds:
        if one == "string":
            tests.append(name == "STRING")
        elif one == "integer":
            # Integers that fit a long are BIGINT; DECIMAL(p,0) with p < 19 is a literal such
            # as 2.0 whose scale the variant encoding dropped: a number, not an integer.
            tests.append(name.isin("BIGINT", "INT", "SMALLINT", "TINYINT")
                         | name.rlike(r"^DECIMAL\((19|[23][0-9]),0\)$"))
        elif one == "number":
            tests.append(name.isin("BIGINT", "INT", "SMALLINT", "TINYINT", "DOUBLE", "FLOAT")
                         | name.startswith("DECIMAL"))
        elif one == "boolean":
            tests.append(name == "BOOLEAN")
        elif one == "object":
            tests.append(name.startswith("OBJECT"))
        elif one == "array":
            tests.append(name.startswith("ARRAY"))
        elif one == "null":
            tests.append(name == "VOID")
        else:
            raise ValueError(f"JSON type {one!r} has no Spark check")
    result = tests[0]
    for test in tests[1:]:
        result = result | test
    return result


def _value_checks(schema: dict[str, Any], node: _Node, where: str) -> list[_Check]:
    """Constraints on a value of the right type: enum, length, pattern, range, size."""
    checks: list[_Check] = []
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    not_null = node.type_name() != "VOID"
    if "enum" in schema:
        checks.append(_Check(not_null & ~node.string().isin(*schema["enum"]), f"'{where}' breaks enum"))
    if "string" in kinds:
        is_string = node.type_name() == "STRING"
        if "minLength" in schema:
            checks.append(_Check(is_string & (F.length(node.string()) < schema["minLength"]),
                                 f"'{where}' breaks minLength {schema['minLength']}"))
        if "maxLength" in schema:
            checks.append(_Check(is_string & (F.length(node.string()) > schema["maxLength"]),
                                 f"'{where}' breaks maxLength {schema['maxLength']}"))
        if "pattern" in schema:
            checks.append(_Check(is_string & ~node.string().rlike(schema["pattern"]),
                                 f"'{where}' breaks pattern"))
    if "minimum" in schema:
        checks.append(_Check(not_null & (node.double() < schema["minimum"]),
                             f"'{where}' breaks minimum {schema['minimum']}"))
    if "maximum" in schema:
        checks.append(_Check(not_null & (node.double() > schema["maximum"]),
                             f"'{where}' breaks maximum {schema['maximum']}"))
    if "minItems" in schema:
        checks.append(_Check(_has_json_type(node, "array") & (F.size(node.elements()) < schema["minItems"]),
                             f"'{where}' breaks minItems {schema['minItems']}"))
    return checks


def _compile(schema: dict[str, Any], node: _Node, where: str, guard: Column
             ) -> tuple[list[_Check], list[_Check], list[_Check]]:
    """(missing, wrong_type, invalid) checks for `node`, which is known present when `guard`."""
    missing: list[_Check] = []
    wrong: list[_Check] = []
    invalid: list[_Check] = []
    kind = schema.get("type")
    if kind is not None:
        wrong.append(_Check(guard & ~_has_json_type(node, kind), f"'{where or 'record'}' must be {kind}"))
    well_typed = guard & (_has_json_type(node, kind) if kind is not None else F.lit(True))
    invalid += [_Check(well_typed & check.condition, check.message)
                for check in _value_checks(schema, node, where or "record")]

    properties = schema.get("properties", {})
    if properties:
        is_object = well_typed & _has_json_type(node, "object")
        for name, sub in properties.items():
            child = node.child(name)
            sub_missing, sub_wrong, sub_invalid = _compile(
                sub, child, f"{where}.{name}".strip("."), is_object & child.present())
            missing += sub_missing
            wrong += sub_wrong
            invalid += sub_invalid
        for name in schema.get("required", []):
            field = f"{where}.{name}".strip(".")
            missing.append(_Check(is_object & ~node.child(name).present(),
                                  f"required field '{field}' is missing"))
    items = schema.get("items")
    if items and kind == "array":
        is_array = well_typed & _has_json_type(node, "array")
        elements = node.elements()
        item_where = f"{where}[]"
        # Compiled once to learn the checks an element gets; each is then re-compiled inside
        # `exists`, bound to the lambda's element.
        shape = _compile(items, _Inline(F.lit(None).cast("variant")), item_where, F.lit(True))
        for group, (bucket, template) in enumerate(zip((missing, wrong, invalid), shape, strict=True)):
            for position, check in enumerate(template):
                holds = _element_condition(items, item_where, group, position)
                bucket.append(_Check(is_array & F.exists(elements, holds), check.message))
    return missing, wrong, invalid


def _element_condition(items: dict[str, Any], where: str, group: int, position: int
                       ) -> Callable[[Column], Column]:
    # A one-argument function: Spark reads the lambda's arity from its signature.
    def holds(element: Column) -> Column:
        return _compile(items, _Inline(element), where, F.lit(True))[group][position].condition

    return holds


def first_problem(checks: list[tuple[str, _Check]]) -> Column:
    """struct(code, message) of the first check that holds, or null."""
    if not checks:
        return F.lit(None).cast("struct<code:string,message:string>")
    expression = None
    for code, check in checks:
        value = F.struct(F.lit(code).alias("code"), _message(check.message).alias("message"))
        expression = F.when(check.condition, value) if expression is None else expression.when(check.condition, value)
    return expression.otherwise(F.lit(None).cast("struct<code:string,message:string>"))


def _schema_checks(schema: dict[str, Any], node: _Node, where: str) -> list[tuple[str, _Check]]:
    missing, wrong, invalid = _compile(schema, node, where, node.present())
    return ([("missing_field", c) for c in missing] + [("wrong_type", c) for c in wrong]
            + [("invalid_value", c) for c in invalid])


def _envelope_known_version(event_type: Column, version: Column) -> Column:
    known = None
    for name, versions in PAYLOADS.items():
        test = (event_type == name) & version.isin(*versions)
        known = test if known is None else known | test
    return known


def _occurred_at_problems(text: Column, timestamp: Column, now: Column) -> list[tuple[str, _Check]]:
    earliest = F.lit(EARLIEST_OCCURRED_AT).cast("timestamp")
    latest = now + F.expr(f"INTERVAL {MAX_FUTURE_SKEW_HOURS} HOURS")
    return [
        ("bad_timestamp", _Check(~text.rlike(OCCURRED_AT_PATTERN) | timestamp.isNull(),
                                 "occurred_at must be ISO-8601 with a zone, e.g. 2026-11-27T08:00:00Z")),
        ("bad_timestamp", _Check((timestamp < earliest) | (timestamp > latest),
                                 f"occurred_at is outside the accepted range ({EARLIEST_OCCURRED_AT} "
                                 f"to {MAX_FUTURE_SKEW_HOURS}h from now)")),
    ]


def _raw_problems(raw: Column, text: Column, record: _Node) -> list[tuple[str, _Check]]:
    trimmed = F.trim(text)
    return [
        ("malformed_json", _Check(raw.isNull(), "empty message (null value)")),
        ("oversized", _Check(F.octet_length(raw) > MAX_EVENT_BYTES,
                             F.format_string(f"record is %d bytes; the limit is {MAX_EVENT_BYTES}",
                                             F.octet_length(raw)))),
        ("not_utf8", _Check(~F.is_valid_utf8(text), "record is not UTF-8")),
        ("malformed_json", _Check(~record.present(), "not JSON")),
        ("malformed_json", _Check(~_has_json_type(record, "object"), "record must be a JSON object")),
        # Spark's parser stops after the first value; Python's (the reference) refuses the rest.
        ("malformed_json", _Check(~trimmed.endswith("}"), "not JSON: extra data after the object")),
    ]


def _parse(raw: Column) -> tuple[Column, Column]:
    text = raw.cast("string")
    parsable = raw.isNotNull() & (F.octet_length(raw) <= MAX_EVENT_BYTES) & F.is_valid_utf8(text)
    return text, F.when(parsable, F.try_parse_json(text))


OUTPUT_COLUMNS = (
    "event_id", "event_type", "schema_version", "user_id", "occurred_at", "source", "payload",
    "event_date", *RAW_COLUMNS, "stream", "is_tombstone", "error_code", "error_message",
)


def _finish(df: DataFrame, reads: _Reads, problem: Column) -> DataFrame:
    return (reads.add_to(df)
            .withColumn("_problem", problem)
            .withColumn("error_code", F.col("_problem.code"))
            .withColumn("error_message", F.col("_problem.message"))
            .withColumn("event_date", F.to_date("occurred_at"))
            .select(*OUTPUT_COLUMNS))


def validate_events(df: DataFrame, now: Column | None = None) -> DataFrame:
    """Raw first-party records -> envelope columns plus error_code / error_message.

    A valid record has a null error_code; an invalid one keeps its raw bytes and source
    coordinates for the quarantine. `now` bounds future timestamps (default: batch time).
    """
    now = F.current_timestamp() if now is None else now
    text, parsed = _parse(F.col("raw"))
    df = df.withColumn("_v", parsed)
    v = F.col("_v")
    reads = _Reads(v)
    record = _Path(reads)
    occurred_text = F.try_variant_get(v, "$.occurred_at", "string")
    df = (df.withColumn("event_id", F.try_variant_get(v, "$.event_id", "string"))
          .withColumn("event_type", F.try_variant_get(v, "$.event_type", "string"))
          .withColumn("schema_version", F.try_variant_get(v, "$.schema_version", "int"))
          .withColumn("user_id", F.try_variant_get(v, "$.user_id", "string"))
          .withColumn("_occurred_text", occurred_text)
          .withColumn("occurred_at", F.when(occurred_text.rlike(OCCURRED_AT_PATTERN),
                                            F.try_to_timestamp(occurred_text)))
          .withColumn("source", F.try_variant_get(v, "$.source", "string"))
          .withColumn("payload", F.to_json(F.variant_get(v, "$.payload", "variant")))
          .withColumn("stream", F.lit("events"))
          .withColumn("is_tombstone", F.lit(False)))
    envelope_checks = (
        _raw_problems(F.col("raw"), text, record)
        + _schema_checks(ENVELOPE, record, "")
        + [("unknown_event_type", _Check(~F.col("event_type").isin(*PAYLOADS),
                                         F.concat(F.lit("event_type '"), F.substring("event_type", 1, 64),
                                                  F.lit("' is not registered")))),
           ("unknown_schema_version", _Check(~_envelope_known_version(F.col("event_type"), F.col("schema_version")),
                                             F.format_string("%s schema_version %s is unknown",
                                                             F.col("event_type"),
                                                             record.child("schema_version").string()))),
           ("missing_field", _Check(~F.col("event_type").isin(*EVENTS_WITHOUT_USER)
                                    & (F.col("user_id").isNull() | (F.col("user_id") == "")),
                                    F.format_string("required field 'user_id' is missing for %s",
                                                    F.col("event_type"))))]
        + _occurred_at_problems(F.col("_occurred_text"), F.col("occurred_at"), now)
    )
    payload = record.child("payload")
    payload_problem = None
    for name, versions in PAYLOADS.items():
        for number, schema in versions.items():
            matches = (F.col("event_type") == name) & (F.col("schema_version") == number)
            scoped = payload.within(f"{name}.v{number}", matches)
            problem = first_problem(_schema_checks(schema, scoped, "payload"))
            payload_problem = F.when(matches, problem) if payload_problem is None \
                else payload_problem.when(matches, problem)
    return _finish(df, reads, F.coalesce(first_problem(envelope_checks), payload_problem))


def _crm_row_checks(row: _Node, where: str) -> list[tuple[str, _Check]]:
    present = row.present() & (row.type_name() != "VOID")
    user_id = row.child("user_id")
    return [
        ("wrong_type", _Check(present & ~_has_json_type(row, "object"), f"'{where}' must be an object or null")),
        ("wrong_type", _Check(present & _has_json_type(row, "object") & user_id.present()
                              & ~_has_json_type(user_id, "string"), f"'{where}.user_id' must be string")),
    ]


def validate_crm_changes(df: DataFrame, now: Column | None = None) -> DataFrame:
    """Debezium change envelopes (bare, or in Kafka Connect's {"schema","payload"} wrapper)
    -> the same columns as `validate_events`, as `crm_customer_change` events.

    A Kafka tombstone (null value after a delete) is flagged `is_tombstone`, not an error.
    The event_id is the change's identity in the source database, so a redelivered change
    is a duplicate, not a second change.
    """
    now = F.current_timestamp() if now is None else now
    text, parsed = _parse(F.col("raw"))
    df = df.withColumn("_outer", parsed)
    outer = _Inline(F.col("_outer"))
    wrapped = _has_json_type(outer, "object") & _has_json_type(outer.child("payload"), "object") \
        & outer.child("schema").present()
    df = df.withColumn("_v", F.when(wrapped, F.variant_get(F.col("_outer"), "$.payload", "variant"))
                       .otherwise(F.col("_outer")))
    v = F.col("_v")
    reads = _Reads(v)
    change = _Path(reads)
    after, before = change.child("after"), change.child("before")
    lsn = F.try_variant_get(v, "$.source.lsn", "bigint")
    source_ts = F.try_variant_get(v, "$.source.ts_ms", "bigint")
    sequence = F.coalesce(lsn, source_ts)
    db_table = F.concat_ws(".", F.try_variant_get(v, "$.source.db", "string"),
                           F.try_variant_get(v, "$.source.table", "string"))
    occurred_at = F.timestamp_millis(source_ts)
    op = F.try_variant_get(v, "$.op", "string")
    df = (df.withColumn("_op", op)
          .withColumn("user_id", F.coalesce(F.try_variant_get(v, "$.after.user_id", "string"),
                                            F.try_variant_get(v, "$.before.user_id", "string")))
          .withColumn("_sequence", sequence)
          .withColumn("event_id", F.when(F.col("user_id").isNotNull() & F.col("_sequence").isNotNull(),
                                         F.concat_ws(":", F.lit("crm"), db_table,
                                                     F.col("_sequence").cast("string"), op, F.col("user_id"))))
          .withColumn("event_type", F.lit(CRM_EVENT_TYPE))
          .withColumn("schema_version", F.lit(1))
          .withColumn("occurred_at", occurred_at)
          .withColumn("source", F.lit("crm"))
          .withColumn("payload", F.to_json(v))
          .withColumn("stream", F.lit("crm"))
          .withColumn("is_tombstone", F.col("raw").isNull()))
    needs_after = F.col("_op").isin("c", "r", "u")
    has_row = lambda row: row.present() & (row.type_name() != "VOID")  # noqa: E731
    checks = (
        _raw_problems(F.col("raw"), text, outer)
        + [("missing_field", _Check(~change.child("op").present(), "required field 'op' is missing")),
           ("missing_field", _Check(~change.child("source").present(), "required field 'source' is missing")),
           ("missing_field", _Check(~change.child("ts_ms").present(), "required field 'ts_ms' is missing")),
           ("missing_field", _Check(needs_after & ~has_row(after),
                                    F.format_string("op '%s' needs 'after'", F.col("_op")))),
           ("missing_field", _Check((F.col("_op") == "d") & ~has_row(before), "op 'd' needs 'before'")),
           ("missing_field", _Check(F.col("user_id").isNull(),
                                    "change has no key: neither after.user_id nor before.user_id")),
           ("missing_field", _Check(F.col("_sequence").isNull(),
                                    "change has no sequence: neither source.lsn nor source.ts_ms"))]
        + _crm_row_checks(after, "after") + _crm_row_checks(before, "before")
        + [("wrong_type", _Check(~_has_json_type(change.child("op"), "string"), "'op' must be string")),
           ("wrong_type", _Check(~_has_json_type(change.child("source"), "object"), "'source' must be object")),
           ("wrong_type", _Check(~_has_json_type(change.child("ts_ms"), "integer"), "'ts_ms' must be integer")),
           ("invalid_value", _Check(~F.col("_op").isin(*DEBEZIUM_OPS),
                                    F.concat(F.lit("unknown op '"), F.substring("_op", 1, 8),
                                             F.lit(f"'; expected one of {', '.join(DEBEZIUM_OPS)}")))),
           ("bad_timestamp", _Check((F.col("occurred_at") < F.lit(EARLIEST_OCCURRED_AT).cast("timestamp"))
                                    | (F.col("occurred_at") > now + F.expr(f"INTERVAL {MAX_FUTURE_SKEW_HOURS} HOURS")),
                                    "source.ts_ms is outside the accepted range"))]
    )
    problem = F.when(F.col("raw").isNull(), F.lit(None).cast("struct<code:string,message:string>")) \
        .otherwise(first_problem(checks))
    return _finish(df, reads, problem)


def add_ingest_columns(df: DataFrame) -> DataFrame:
    """Stamp the batch time and the contract version every bronze row carries."""
    return (df.withColumn("ingested_at", F.current_timestamp())
            .withColumn("contract_version", F.lit(CONTRACT_VERSION)))
