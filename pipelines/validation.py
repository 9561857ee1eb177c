"""Validate raw records against the event contract with Spark expressions only.

The JSON Schemas of `pipelines.contracts.events` are compiled into Column expressions over
Spark's VARIANT type (`try_parse_json`, `variant_get`, `schema_of_variant`), so the hot
path stays in the JVM: no Python UDF runs per record. The checks and their precedence
mirror the Python validator (`pipelines.contracts.validate_event`); a test holds the two to
the same answers on the same corpus.

Everything here is a pure `DataFrame -> DataFrame` function, safe on streaming frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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

# Columns every source hands to validation (see pipelines.sources).
RAW_COLUMNS = ("raw", "source_kind", "source_stream", "source_partition", "source_offset",
               "source_timestamp")


@dataclass(frozen=True)
class _Check:
    condition: Column
    message: Column | str


def _message(value: Column | str) -> Column:
    return F.lit(value) if isinstance(value, str) else value


def _type_name(node: Column) -> Column:
    return F.schema_of_variant(node)


def _has_json_type(node: Column, kind: str | list[str]) -> Column:
    kinds = kind if isinstance(kind, list) else [kind]
    name = _type_name(node)
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


def _child(node: Column, name: str) -> Column:
    return F.variant_get(node, f"$.{name}", "variant")


def _value_checks(schema: dict[str, Any], node: Column, where: str) -> list[_Check]:
    """Constraints on a value of the right type: enum, length, pattern, range, size."""
    checks: list[_Check] = []
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    not_null = _type_name(node) != "VOID"
    as_string = F.variant_get(node, "$", "string")
    as_double = F.try_variant_get(node, "$", "double")
    if "enum" in schema:
        checks.append(_Check(not_null & ~as_string.isin(*schema["enum"]),
                             f"'{where}' breaks enum"))
    if "string" in kinds:
        is_string = _type_name(node) == "STRING"
        if "minLength" in schema:
            checks.append(_Check(is_string & (F.length(as_string) < schema["minLength"]),
                                 f"'{where}' breaks minLength {schema['minLength']}"))
        if "maxLength" in schema:
            checks.append(_Check(is_string & (F.length(as_string) > schema["maxLength"]),
                                 f"'{where}' breaks maxLength {schema['maxLength']}"))
        if "pattern" in schema:
            checks.append(_Check(is_string & ~as_string.rlike(schema["pattern"]),
                                 f"'{where}' breaks pattern"))
    if "minimum" in schema:
        checks.append(_Check(not_null & (as_double < schema["minimum"]),
                             f"'{where}' breaks minimum {schema['minimum']}"))
    if "maximum" in schema:
        checks.append(_Check(not_null & (as_double > schema["maximum"]),
                             f"'{where}' breaks maximum {schema['maximum']}"))
    if "minItems" in schema:
        items = F.variant_get(node, "$", "array<variant>")
        checks.append(_Check(_has_json_type(node, "array") & (F.size(items) < schema["minItems"]),
                             f"'{where}' breaks minItems {schema['minItems']}"))
    return checks


def _compile(schema: dict[str, Any], node: Column, where: str, guard: Column
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
            child = _child(node, name)
            sub_missing, sub_wrong, sub_invalid = _compile(
                sub, child, f"{where}.{name}".strip("."), is_object & child.isNotNull())
            missing += sub_missing
            wrong += sub_wrong
            invalid += sub_invalid
        for name in schema.get("required", []):
            field = f"{where}.{name}".strip(".")
            missing.append(_Check(is_object & _child(node, name).isNull(),
                                  f"required field '{field}' is missing"))
    items = schema.get("items")
    if items and kind == "array":
        is_array = well_typed & _has_json_type(node, "array")
        elements = F.variant_get(node, "$", "array<variant>")
        item_where = f"{where}[]"
        # Compiled once to learn the checks an element gets; each is then re-compiled inside
        # `exists`, bound to the lambda's element.
        shape = _compile(items, F.lit(None).cast("variant"), item_where, F.lit(True))
        for group, (bucket, template) in enumerate(zip((missing, wrong, invalid), shape)):
            for position, check in enumerate(template):
                holds = _element_condition(items, item_where, group, position)
                bucket.append(_Check(is_array & F.exists(elements, holds), check.message))
    return missing, wrong, invalid


def _element_condition(items: dict[str, Any], where: str, group: int, position: int
                       ) -> Callable[[Column], Column]:
    # A one-argument function: Spark reads the lambda's arity from its signature.
    def holds(element: Column) -> Column:
        return _compile(items, element, where, F.lit(True))[group][position].condition

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


def _schema_checks(schema: dict[str, Any], node: Column, where: str) -> list[tuple[str, _Check]]:
    missing, wrong, invalid = _compile(schema, node, where, node.isNotNull())
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


def _raw_problems(raw: Column, text: Column, parsed: Column) -> list[tuple[str, _Check]]:
    trimmed = F.trim(text)
    return [
        ("malformed_json", _Check(raw.isNull(), "empty message (null value)")),
        ("oversized", _Check(F.octet_length(raw) > MAX_EVENT_BYTES,
                             F.format_string(f"record is %d bytes; the limit is {MAX_EVENT_BYTES}",
                                             F.octet_length(raw)))),
        ("not_utf8", _Check(~F.is_valid_utf8(text), "record is not UTF-8")),
        ("malformed_json", _Check(parsed.isNull(), "not JSON")),
        ("malformed_json", _Check(~_has_json_type(parsed, "object"), "record must be a JSON object")),
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


def _finish(df: DataFrame, problem: Column) -> DataFrame:
    return (df.withColumn("_problem", problem)
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
    event_type = F.variant_get(v, "$.event_type", "string")
    version = F.try_variant_get(v, "$.schema_version", "int")
    user_id = F.try_variant_get(v, "$.user_id", "string")
    occurred_text = F.try_variant_get(v, "$.occurred_at", "string")
    occurred_at = F.try_to_timestamp(occurred_text)
    df = (df.withColumn("event_id", F.try_variant_get(v, "$.event_id", "string"))
          .withColumn("event_type", event_type)
          .withColumn("schema_version", version)
          .withColumn("user_id", user_id)
          .withColumn("_occurred_text", occurred_text)
          .withColumn("occurred_at", F.when(occurred_text.rlike(OCCURRED_AT_PATTERN), occurred_at))
          .withColumn("source", F.try_variant_get(v, "$.source", "string"))
          .withColumn("payload", F.to_json(_child(v, "payload")))
          .withColumn("stream", F.lit("events"))
          .withColumn("is_tombstone", F.lit(False)))
    envelope_checks = (
        _raw_problems(F.col("raw"), text, v)
        + _schema_checks(ENVELOPE, v, "")
        + [("unknown_event_type", _Check(~F.col("event_type").isin(*PAYLOADS),
                                         F.concat(F.lit("event_type '"), F.substring("event_type", 1, 64),
                                                  F.lit("' is not registered")))),
           ("unknown_schema_version", _Check(~_envelope_known_version(F.col("event_type"), F.col("schema_version")),
                                             F.format_string("%s schema_version %s is unknown",
                                                             F.col("event_type"),
                                                             F.variant_get(v, "$.schema_version", "string")))),
           ("missing_field", _Check(~F.col("event_type").isin(*EVENTS_WITHOUT_USER)
                                    & (F.col("user_id").isNull() | (F.col("user_id") == "")),
                                    F.format_string("required field 'user_id' is missing for %s",
                                                    F.col("event_type"))))]
        + _occurred_at_problems(F.col("_occurred_text"), F.col("occurred_at"), now)
    )
    payload = _child(v, "payload")
    payload_problem = None
    for name, versions in PAYLOADS.items():
        for number, schema in versions.items():
            matches = (F.col("event_type") == name) & (F.col("schema_version") == number)
            problem = first_problem(_schema_checks(schema, payload, "payload"))
            payload_problem = F.when(matches, problem) if payload_problem is None \
                else payload_problem.when(matches, problem)
    return _finish(df, F.coalesce(first_problem(envelope_checks), payload_problem))


def _crm_row_checks(row: Column, where: str) -> list[tuple[str, _Check]]:
    present = row.isNotNull() & (_type_name(row) != "VOID")
    return [
        ("wrong_type", _Check(present & ~_has_json_type(row, "object"), f"'{where}' must be an object or null")),
        ("wrong_type", _Check(present & _has_json_type(row, "object")
                              & _child(row, "user_id").isNotNull()
                              & ~_has_json_type(_child(row, "user_id"), "string"),
                              f"'{where}.user_id' must be string")),
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
    wrapped = _has_json_type(parsed, "object") & _has_json_type(_child(parsed, "payload"), "object") \
        & _child(parsed, "schema").isNotNull()
    df = df.withColumn("_v", F.when(wrapped, _child(parsed, "payload")).otherwise(parsed)) \
           .withColumn("_outer", parsed)
    v = F.col("_v")
    after, before = _child(v, "after"), _child(v, "before")
    op = F.try_variant_get(v, "$.op", "string")
    key = F.coalesce(F.try_variant_get(after, "$.user_id", "string"),
                     F.try_variant_get(before, "$.user_id", "string"))
    lsn = F.try_variant_get(v, "$.source.lsn", "bigint")
    source_ts = F.try_variant_get(v, "$.source.ts_ms", "bigint")
    db_table = F.concat_ws(".", F.try_variant_get(v, "$.source.db", "string"),
                           F.try_variant_get(v, "$.source.table", "string"))
    occurred_at = F.timestamp_millis(source_ts)
    df = (df.withColumn("_op", op)
          .withColumn("user_id", key)
          .withColumn("event_id", F.when(key.isNotNull() & F.coalesce(lsn, source_ts).isNotNull(),
                                         F.concat_ws(":", F.lit("crm"), db_table,
                                                     F.coalesce(lsn, source_ts).cast("string"), op, key)))
          .withColumn("event_type", F.lit(CRM_EVENT_TYPE))
          .withColumn("schema_version", F.lit(1))
          .withColumn("occurred_at", occurred_at)
          .withColumn("source", F.lit("crm"))
          .withColumn("payload", F.to_json(v))
          .withColumn("stream", F.lit("crm"))
          .withColumn("is_tombstone", F.col("raw").isNull()))
    needs_after = F.col("_op").isin("c", "r", "u")
    has_row = lambda row: row.isNotNull() & (_type_name(row) != "VOID")  # noqa: E731
    checks = (
        _raw_problems(F.col("raw"), text, F.col("_outer"))
        + [("missing_field", _Check(_child(v, "op").isNull(), "required field 'op' is missing")),
           ("missing_field", _Check(_child(v, "source").isNull(), "required field 'source' is missing")),
           ("missing_field", _Check(_child(v, "ts_ms").isNull(), "required field 'ts_ms' is missing")),
           ("missing_field", _Check(needs_after & ~has_row(after),
                                    F.format_string("op '%s' needs 'after'", F.col("_op")))),
           ("missing_field", _Check((F.col("_op") == "d") & ~has_row(before), "op 'd' needs 'before'")),
           ("missing_field", _Check(F.col("user_id").isNull(),
                                    "change has no key: neither after.user_id nor before.user_id")),
           ("missing_field", _Check(lsn.isNull() & source_ts.isNull(),
                                    "change has no sequence: neither source.lsn nor source.ts_ms"))]
        + _crm_row_checks(after, "after") + _crm_row_checks(before, "before")
        + [("wrong_type", _Check(~_has_json_type(_child(v, "op"), "string"), "'op' must be string")),
           ("wrong_type", _Check(~_has_json_type(_child(v, "source"), "object"), "'source' must be object")),
           ("wrong_type", _Check(~_has_json_type(_child(v, "ts_ms"), "integer"), "'ts_ms' must be integer")),
           ("invalid_value", _Check(~F.col("_op").isin(*DEBEZIUM_OPS),
                                    F.concat(F.lit("unknown op '"), F.substring("_op", 1, 8),
                                             F.lit(f"'; expected one of {', '.join(DEBEZIUM_OPS)}")))),
           ("bad_timestamp", _Check((occurred_at < F.lit(EARLIEST_OCCURRED_AT).cast("timestamp"))
                                    | (occurred_at > now + F.expr(f"INTERVAL {MAX_FUTURE_SKEW_HOURS} HOURS")),
                                    "source.ts_ms is outside the accepted range"))]
    )
    problem = F.when(F.col("raw").isNull(), F.lit(None).cast("struct<code:string,message:string>")) \
        .otherwise(first_problem(checks))
    return _finish(df, problem)


def add_ingest_columns(df: DataFrame) -> DataFrame:
    """Stamp the batch time and the contract version every bronze row carries."""
    return (df.withColumn("ingested_at", F.current_timestamp())
            .withColumn("contract_version", F.lit(CONTRACT_VERSION)))
