"""Contract validation as Spark expressions: expected rows written by hand, and the
same answers as the Python validator on a corpus of good and bad records."""

import json
import re
from datetime import UTC, datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from pipelines.contracts import validate_event
from pipelines.contracts.events import ENVELOPE, PAYLOADS
from pipelines.ingest.validation import _shape_regex, sql_literal, validate_crm_changes, validate_events
from pipelines.synthetic.generator import Faults, WorldSpec, generate_world
from tests.events import cart_event

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
RAW_SCHEMA = ("raw binary, source_kind string, source_stream string, source_partition string, "
              "source_offset string, source_timestamp timestamp")


def _raw(spark, records):
    rows = [(r if isinstance(r, (bytes, type(None))) else r.encode("utf-8"), "files", "landing", "f.jsonl",
             str(n), None) for n, r in enumerate(records)]
    return spark.createDataFrame(rows, RAW_SCHEMA)


def _now():
    return F.lit(NOW.isoformat()).cast("timestamp")


_event = cart_event


def test_valid_and_invalid_rows_by_hand(spark):
    source = _raw(spark, [
        _event(),
        _event(event_id="e-2", occurred_at="2026-11-27T09:30:00+01:00"),
        _event(event_id="e-3", payload__quantity="two"),
        "{not json",
    ])
    actual = validate_events(source, _now()).select(
        "event_id", "event_type", "schema_version", "user_id",
        F.date_format("occurred_at", "yyyy-MM-dd HH:mm:ss").alias("occurred_at_utc"),
        F.get_json_object("payload", "$.quantity").alias("quantity"),
        "source_offset", "error_code", "error_message")
    expected = spark.createDataFrame([
        ("e-1", "add_to_cart", 1, "u-1", "2026-11-27 08:00:00", "2", "0", None, None),
        ("e-2", "add_to_cart", 1, "u-1", "2026-11-27 08:30:00", "2", "1", None, None),
        ("e-3", "add_to_cart", 1, "u-1", "2026-11-27 08:00:00", "two", "2", "wrong_type",
         "'payload.quantity' must be integer"),
        (None, None, None, None, None, None, "3", "malformed_json", "not JSON"),
    ], "event_id string, event_type string, schema_version int, user_id string, occurred_at_utc string, "
       "quantity string, source_offset string, error_code string, error_message string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


BAD_CORPUS = {
    "malformed_json": '{"event_id": "e-9", ',
    "empty": "",
    "null_value": None,
    "json_array": "[1, 2, 3]",
    "trailing_garbage": _event() + " and more",
    "missing_event_id": _event(event_id=...),
    "missing_payload_field": _event(payload__cart_id=...),
    "wrong_type_version": _event(schema_version="1"),
    "wrong_type_payload": _event(payload=[1, 2]),
    "float_as_integer": _event(payload__quantity=2.0),
    "unknown_event_type": _event(event_type="add_to_basket"),
    "unknown_schema_version": _event(schema_version=7),
    "schema_version_beyond_int": _event(event_id="e-big-version", schema_version=4294967297),
    "oversized": _event(payload__note="x" * (1024 * 1024)),
    "bad_timestamp_no_zone": _event(occurred_at="2026-11-27T08:00:00"),
    "bad_timestamp_words": _event(occurred_at="last tuesday"),
    "year_9999": _event(occurred_at="9999-12-31T23:59:59Z"),
    "not_utf8": b'{"event_id": "e-\xff\xfe"}',
    "nul_byte_raw": _event().replace('"web"', '"w\x00eb"'),
    "nul_byte_escaped": _event(source="w\u0000eb"),
    "unicode_ok": _event(user_id="u-\u00e9\u4e2d\U0001F600"),
    "blank_user_id": _event(event_id="e-blank", user_id=" \t\r\n"),
    "empty_user_id": _event(event_id="e-empty-user", user_id=""),
    # A field the contract does not name, of a shape the fast path does not take: the full checks.
    "blank_user_id_full_checks": _event(event_id="e-blank-full", user_id=" ", meta={"a": 1}),
    "empty_user_id_full_checks": _event(event_id="e-empty-full", user_id="", meta={"a": 1}),
    "user_id_with_spaces": _event(event_id="e-spaces", user_id=" u-1 \n"),
    "user_id_line_separator": _event(event_id="e-u2028", user_id="\u2028"),
    "invalid_enum": _event(payload__currency="gbp"),
    "bad_nested": json.dumps({"event_id": "e-p", "event_type": "purchase", "schema_version": 1,
                              "user_id": "u-1", "occurred_at": "2026-11-27T08:00:00Z", "source": "web",
                              "payload": {"order_id": "o-1", "total": 3.0, "currency": "GBP",
                                          "items": [{"product_id": "p-1", "quantity": 1, "unit_price": 3.0},
                                                    {"quantity": 1, "unit_price": 3.0}]}}),
    "empty_items": json.dumps({"event_id": "e-q", "event_type": "purchase", "schema_version": 1,
                               "user_id": "u-1", "occurred_at": "2026-11-27T08:00:00Z", "source": "web",
                               "payload": {"order_id": "o-1", "total": 3.0, "currency": "GBP", "items": []}}),
    "catalogue_without_user": json.dumps({"event_id": "p-1", "event_type": "product_upsert", "schema_version": 1,
                                          "occurred_at": "2026-11-27T08:00:00Z", "source": "catalog",
                                          "payload": {"product_id": "1", "title": "Mug", "category": "kitchen",
                                                      "price": 2.5, "currency": "GBP"}}),
}

EXPECTED_CODES = {
    "malformed_json": "malformed_json", "empty": "malformed_json", "null_value": "malformed_json",
    "json_array": "malformed_json", "trailing_garbage": "malformed_json",
    "missing_event_id": "missing_field", "missing_payload_field": "missing_field",
    "wrong_type_version": "wrong_type", "wrong_type_payload": "wrong_type", "float_as_integer": "wrong_type",
    "unknown_event_type": "unknown_event_type", "unknown_schema_version": "unknown_schema_version",
    "schema_version_beyond_int": "unknown_schema_version",
    "oversized": "oversized", "bad_timestamp_no_zone": "bad_timestamp", "bad_timestamp_words": "bad_timestamp",
    "year_9999": "bad_timestamp", "not_utf8": "not_utf8", "nul_byte_raw": "malformed_json",
    "nul_byte_escaped": None, "unicode_ok": None, "invalid_enum": "invalid_value",
    "blank_user_id": "missing_field", "empty_user_id": "missing_field", "blank_user_id_full_checks": "missing_field",
    "empty_user_id_full_checks": "missing_field", "user_id_with_spaces": None, "user_id_line_separator": None,
    "bad_nested": "missing_field", "empty_items": "invalid_value", "catalogue_without_user": None,
}


def test_bad_corpus_gets_the_written_down_codes(spark):
    names = list(BAD_CORPUS)
    actual = {row.source_offset: row for row in
              validate_events(_raw(spark, [BAD_CORPUS[n] for n in names]), _now()).collect()}
    codes = {name: actual[str(n)].error_code for n, name in enumerate(names)}
    assert codes == EXPECTED_CODES
    assert actual[str(names.index("bad_nested"))].error_message == \
        "required field 'payload.items[].product_id' is missing"
    assert actual[str(names.index("oversized"))].error_message.startswith("record is 10")


def test_python_and_spark_validators_agree(spark):
    world = generate_world(WorldSpec(seed=17, users=40, products=30, days=4, faults=Faults.parse("all=0.03")))
    records = world.events + world.catalog + [r for r in BAD_CORPUS.values() if r is not None]
    spark_codes = {int(row.source_offset): row.error_code for row in
                   validate_events(_raw(spark, records), _now()).select("source_offset", "error_code").collect()}
    for n, record in enumerate(records):
        problem = validate_event(record if isinstance(record, bytes) else record.encode("utf-8"), NOW)
        assert spark_codes[n] == (problem.code if problem else None), record[:300]


def test_crm_changes_bare_wrapped_tombstone_and_bad(spark):
    change = {"before": None, "op": "c", "ts_ms": 1764230400500, "transaction": None,
              "after": {"user_id": "u-7", "email": "u7@example.com", "first_name": "Ada"},
              "source": {"lsn": 42, "ts_ms": 1764230400000, "db": "crm", "table": "customers"}}
    delete = {**change, "op": "d", "before": change["after"], "after": None,
              "source": {**change["source"], "lsn": 43}}
    records = [
        json.dumps(change),
        json.dumps({"schema": {"type": "struct"}, "payload": delete}),
        None,
        json.dumps({**change, "op": "x"}),
        json.dumps({**change, "after": {"email": "nokey@example.com"}}),
        json.dumps({**change, "source": {"db": "crm", "table": "customers"}}),
        json.dumps({**change, "op": "u", "after": None}),
    ]
    actual = validate_crm_changes(_raw(spark, records), _now()).select(
        "source_offset", "event_id", "event_type", "user_id",
        F.date_format("occurred_at", "yyyy-MM-dd HH:mm:ss").alias("occurred"),
        "control", "error_code", "error_message")
    expected = spark.createDataFrame([
        ("0", "crm:crm.customers:42:c:u-7", "crm_customer_change", "u-7", "2025-11-27 08:00:00", None, None, None),
        ("1", "crm:crm.customers:43:d:u-7", "crm_customer_change", "u-7", "2025-11-27 08:00:00", None, None, None),
        ("2", None, "crm_customer_change", None, None, "tombstone", None, None),
        ("3", "crm:crm.customers:42:x:u-7", "crm_customer_change", "u-7", "2025-11-27 08:00:00", None,
         "invalid_value", "unknown op 'x'; expected one of c, u, d, r"),
        ("4", None, "crm_customer_change", None, "2025-11-27 08:00:00", None,
         "missing_field", "change has no key: neither after.user_id nor before.user_id"),
        ("5", None, "crm_customer_change", "u-7", None, None,
         "missing_field", "change has no sequence: neither a log position nor source.ts_ms"),
        ("6", None, "crm_customer_change", None, "2025-11-27 08:00:00", None,
         "missing_field", "op 'u' needs 'after'"),
    ], "source_offset string, event_id string, event_type string, user_id string, occurred string, "
       "control string, error_code string, error_message string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)


def test_items_of_a_nullable_array_are_checked_like_python_does(spark):
    def preference(topics):
        return json.dumps({"event_id": f"e-{len(str(topics))}", "event_type": "preference_update",
                           "schema_version": 1, "user_id": "u-1", "occurred_at": "2026-11-27T08:00:00Z",
                           "source": "preference_centre", "payload": {"topics": topics}})

    records = [preference(["news", "sale"]), preference(None), preference(["news", 7]), preference(["news", ""])]
    actual = validate_events(_raw(spark, records), _now()).select("source_offset", "error_code", "error_message")
    expected = spark.createDataFrame([
        ("0", None, None),
        ("1", None, None),
        ("2", "wrong_type", "'payload.topics[]' must be string"),
        ("3", "invalid_value", "'payload.topics[]' breaks minLength 1"),
    ], "source_offset string, error_code string, error_message string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    for n, record in enumerate(records):
        problem = validate_event(record, NOW)
        assert (problem.code if problem else None) == expected.collect()[n].error_code


def test_faults_an_arrays_merged_shape_hides_are_still_found(spark):
    """The fast path reads a record's shape, in which an array's elements are merged: a
    null or a missing key in one element, or 2.0 beside 1, leaves the merged shape valid."""
    def purchase(items, **extra):
        return json.dumps({"event_id": "e-p", "event_type": "purchase", "schema_version": 1, "user_id": "u-1",
                           "occurred_at": "2026-11-27T08:00:00Z", "source": "web",
                           "payload": {"order_id": "o-1", "total": 3.0, "currency": "GBP", "items": items, **extra}})

    good = {"product_id": "p-1", "quantity": 1, "unit_price": 3.0}
    records = [
        purchase([good, {**good, "quantity": None}]),
        purchase([good, {**good, "quantity": 2.0}]),
        purchase([good, None]),
        purchase([good, {**good, "product_id": None}]),
        purchase([good, {"quantity": 1, "unit_price": 3.0}]),
        purchase([good, {**good, "title": None}, {**good, "unit_price": 1}]),
        purchase([good], coupon="X", meta={"a": 1}),
        purchase([{**good, "product_id": ""}, good]),
        _event(schema_version=1.0),
        # Hundreds of fields the contract does not name, and a long key that needs quoting:
        # valid, and the shape match must not overflow a task's stack on them.
        _event(event_id="e-wide", **{f"extra_{n}": n for n in range(800)}),
        _event(event_id="e-long-key", **{"ua note " + "x" * 3000: "v"}),
        _event(event_id="e-extra-next-to-bad", payload__currency=None, payload__Coupon="X"),
    ]
    actual = validate_events(_raw(spark, records), _now()).select("source_offset", "error_code", "error_message")
    expected = spark.createDataFrame([
        ("0", "wrong_type", "'payload.items[].quantity' must be integer"),
        ("1", "wrong_type", "'payload.items[].quantity' must be integer"),
        ("2", "wrong_type", "'payload.items[]' must be object"),
        ("3", "wrong_type", "'payload.items[].product_id' must be string"),
        ("4", "missing_field", "required field 'payload.items[].product_id' is missing"),
        ("5", None, None),
        ("6", None, None),
        ("7", "invalid_value", "'payload.items[].product_id' breaks minLength 1"),
        ("8", "wrong_type", "'schema_version' must be integer"),
        ("9", None, None),
        ("10", None, None),
        ("11", "wrong_type", "'payload.currency' must be string"),
    ], "source_offset string, error_code string, error_message string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    for n, record in enumerate(records):
        problem = validate_event(record, NOW)
        assert (problem and (problem.code, problem.message)) == \
            ((expected.collect()[n].error_code, expected.collect()[n].error_message)
             if n not in (5, 6, 9, 10) else None)


def test_the_fast_path_reads_typed_values_as_the_record_holds_them(spark):
    """A record on the fast path takes its values from Spark's JSON reader, not from the
    variant: keys match exactly (a key differing in case is another field), integers
    wider than a long still meet their range checks, characters (not bytes) are counted,
    and the payload keeps the fields the contract does not name, digit for digit."""
    preference = json.dumps({"event_id": "e-pref", "event_type": "preference_update", "schema_version": 1,
                             "user_id": "u-1", "occurred_at": "2026-11-27T08:00:00Z", "source": "web",
                             "payload": {"frequency_cap_per_week": 100000000000000000000}})
    records = [
        _event(event_id="e-lower", EVENT_ID="upper"),
        preference,
        _event(event_id="é" * 128),   # 256 bytes, 128 characters: at the limit
        _event(event_id="é" * 129),
        _event(payload__session_id="ü"),  # 2 bytes, 1 character: minLength 1 holds
        # More digits than a double holds, written into the text (json.dumps would round them).
        _event(event_id="e-extra", payload__coupon="X", payload__ratio="RATIO",
               payload__note="🙂").replace('"RATIO"', "0.12345678901234567890123"),
    ]
    fast_shapes = [_shape_regex({**ENVELOPE, "properties": {**ENVELOPE["properties"], "payload": payload}})
                   for payload in (PAYLOADS["add_to_cart"][1], PAYLOADS["preference_update"][1])]
    shapes = spark.createDataFrame([(r,) for r in records], "t string").select(
        F.expr("schema_of_variant(parse_json(t))").alias("shape")).collect()
    assert all(any(re.match("^" + shape + "$", row.shape) for shape in fast_shapes) for row in shapes)
    actual = validate_events(_raw(spark, records), _now()).select(
        "source_offset", "event_id", F.get_json_object("payload", "$.coupon").alias("coupon"),
        "error_code", "error_message")
    expected = spark.createDataFrame([
        ("0", "e-lower", None, None, None),
        ("1", "e-pref", None, "invalid_value", "'payload.frequency_cap_per_week' breaks maximum 100"),
        ("2", "é" * 128, None, None, None),
        ("3", "é" * 129, None, "invalid_value", "'event_id' breaks maxLength 128"),
        ("4", "e-1", None, None, None),
        ("5", "e-extra", "X", None, None),
    ], "source_offset string, event_id string, coupon string, error_code string, error_message string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    # The payload is stored as the variant writes it: every digit, the emoji as sent.
    (extra,) = validate_events(_raw(spark, records[-1:]), _now()).select("payload").collect()
    assert '"ratio":0.12345678901234567890123' in extra.payload and json.loads(extra.payload)["note"] == "🙂"
    for n, record in enumerate(records):
        problem = validate_event(record.encode("utf-8"), NOW)
        assert (problem and (problem.code, problem.message)) == \
            ((expected.collect()[n].error_code, expected.collect()[n].error_message)
             if expected.collect()[n].error_code else None)


CART_SHAPE = ("OBJECT<event_id: STRING, event_type: STRING, occurred_at: STRING, payload: OBJECT<cart_id: STRING, "
              "currency: STRING, product_id: STRING, quantity: BIGINT, session_id: STRING, unit_price: DECIMAL(4,2)>, "
              "schema_version: BIGINT, source: STRING, user_id: STRING>")


def test_a_valid_record_takes_the_fast_path(spark):
    """The fast path depends on how Spark prints a shape: if that changed, every record
    would silently take the full checks (still right, several times slower)."""
    (shape,) = spark.range(1).select(F.expr(f"schema_of_variant(parse_json({sql_literal(_event())}))")).first()
    assert shape == CART_SHAPE
    cart = re.compile("^" + _shape_regex({**ENVELOPE, "properties": {**ENVELOPE["properties"],
                                                                    "payload": PAYLOADS["add_to_cart"][1]}}) + "$")
    assert cart.match(CART_SHAPE)
    assert cart.match(CART_SHAPE.replace("source: STRING", "Note: STRING, `a b`: BIGINT, source: STRING"))
    for broken in (CART_SHAPE.replace("quantity: BIGINT", "quantity: STRING"),
                   CART_SHAPE.replace("quantity: BIGINT", "quantity: DECIMAL(2,1)"),
                   CART_SHAPE.replace("cart_id: STRING, ", ""),
                   CART_SHAPE.replace("user_id: STRING", "user_id: BIGINT"),
                   CART_SHAPE.replace("source: STRING", "source: VOID"),
                   CART_SHAPE.replace("source: STRING", "meta: OBJECT<a: BIGINT>, source: STRING")):
        assert not cart.match(broken), broken


def test_sql_literals_survive_quotes_and_backslashes(spark):
    values = ("it's", r"^\d{4}$", "back\\slash'quote", r"\%", r"\_", r"\u0041", "ünïcode ✓", 7, 2.5, 1e-05, True)
    (read,) = spark.range(1).select(*[F.expr(sql_literal(v)).alias(f"v{n}") for n, v in enumerate(values)]).collect()
    assert [(type(v), v) for v in read] == [(type(v), v) for v in values]
    assert spark.range(1).select(F.expr(sql_literal(None)).alias("v")).first().v is None
    for unwritable in (float("inf"), float("nan"), "${user}"):
        with pytest.raises(ValueError):
            sql_literal(unwritable)


def test_the_future_bound_is_the_batch_time_plus_the_allowed_skew(spark):
    """At the bound is accepted, a microsecond past it is not, in both validators."""
    bound = "2026-11-28T12:00:00Z"  # NOW + 24 h
    records = [_event(event_id="at", occurred_at=bound),
               _event(event_id="past", occurred_at="2026-11-28T12:00:00.000001Z"),
               _event(event_id="early", occurred_at="1999-12-31T23:59:59Z")]
    actual = validate_events(_raw(spark, records), _now()).select("event_id", "error_code")
    expected = spark.createDataFrame([("at", None), ("past", "bad_timestamp"), ("early", "bad_timestamp")],
                                     "event_id string, error_code string")
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    assert [getattr(validate_event(r.encode(), NOW), "code", None) for r in records] == \
        [None, "bad_timestamp", "bad_timestamp"]


def _compilations(spark) -> int:
    return spark._jvm.org.apache.spark.metrics.source.CodegenMetrics.METRIC_COMPILATION_TIME().getCount()


def test_generated_code_gives_the_same_codes_and_a_new_batch_time_compiles_none(spark):
    """The suite interprets expressions; production runs the generated Java, where the
    full checks sit in an interpreted lambda (`interpreted`): the written-down codes hold
    there too. And every micro-batch validates at its own time: were that time a constant
    in the generated Java, each batch would compile the whole rule set again (seconds)."""
    names = list(BAD_CORPUS)
    changes = ['{"op":"c","ts_ms":1,"source":{"table":"customers","ts_ms":1},"after":{"user_id":"u-1"}}']

    def validate(at: str) -> dict[str, str | None]:
        now = F.lit(at).cast("timestamp")
        rows = validate_events(_raw(spark, [BAD_CORPUS[n] for n in names]), now).select(
            "source_offset", "error_code").collect()
        validate_crm_changes(_raw(spark, changes), now).select("error_code").collect()
        codes = {row.source_offset: row.error_code for row in rows}
        return {name: codes[str(n)] for n, name in enumerate(names)}

    # The suite's sessions interpret expressions (tests/settings.py); this test is about
    # the generated code, so it turns code generation back on for itself.
    settings = {"spark.sql.codegen.factoryMode": "CODEGEN_ONLY", "spark.sql.codegen.wholeStage": "true"}
    saved = {key: spark.conf.get(key) for key in settings}
    try:
        for key, value in settings.items():
            spark.conf.set(key, value)
        assert validate("2026-11-27T12:00:00Z") == EXPECTED_CODES
        before = _compilations(spark)
        validate("2026-11-27T12:00:05.123Z")
        assert _compilations(spark) == before
    finally:
        for key, value in saved.items():
            spark.conf.set(key, value)


def _rounds(spark, rule: str) -> tuple[int, int]:
    """(rounds in which `rule` changed a plan, rounds it ran) since the optimiser's
    metrics were reset."""
    dump = spark._jvm.org.apache.spark.sql.catalyst.rules.RuleExecutor.dumpTimeSpent()
    for line in dump.splitlines():
        if line.startswith(f"{rule} "):
            changed, ran = re.search(r"(\d+) / (\d+)\s*$", line).groups()
            return int(changed), int(ran)
    return 0, 0


def test_the_event_rules_reach_the_optimiser_already_simplified(spark):
    """Spark re-optimises the plan in every micro-batch, running each rule over the whole
    plan until none changes it. A NOT over a tree of ORs takes a round per level of the
    tree (one De Morgan step each): the rules, written as the optimiser would leave them,
    take none. The old rules took five."""
    executor = spark._jvm.org.apache.spark.sql.catalyst.rules.RuleExecutor
    # Over a source, as ingest's plans are: the optimiser would evaluate the rules over a
    # local relation itself.
    validated = validate_events(_raw(spark, [_event()]).repartition(1))
    executor.resetMetrics()
    validated._jdf.queryExecution().optimizedPlan()
    changed, ran = _rounds(spark, "org.apache.spark.sql.catalyst.optimizer.BooleanSimplification")
    assert ran > 0
    assert changed == 0
