"""CRM changes from every Debezium connector, as each connector's documentation shows
them (Kafka Connect's JsonConverter, with and without schemas), read through the CRM
tables' configuration: the user id from each table's own key, the mapped columns only,
each connector's log position, Debezium's decimal and temporal encodings, and truncate
and schema-change messages that are counted rather than quarantined."""

from __future__ import annotations

import base64
import json
import random
from datetime import UTC, date, datetime, timedelta
from decimal import Context, Decimal

from chispa import assert_df_equality
from pyspark.sql import functions as F

from pipelines.config import CrmColumnType, CrmTableConfig
from pipelines.ingest.crm import KEPT_SOURCE_FIELDS, scaled_text, signed_decimal
from pipelines.ingest.replay import replay_outcomes
from pipelines.ingest.validation import validate_crm_changes
from tests.profile_events import NOW, raw_records

TABLES = {
    # MongoDB's db.collection first: a bare "customers" would match it too.
    "shop.customers": CrmTableConfig(key=("_id",), columns={"email": "email", "first_name": "first_name"},
                                     deletes_profile=True),
    # Three parts, so only SQL Server's testDB.dbo.customers: it maps the email alone.
    "testDB.dbo.customers": CrmTableConfig(key=("id",), columns={"email": "email"}, deletes_profile=True),
    "customers": CrmTableConfig(key=("id",), columns={"email": "email", "first_name": "first_name",
                                                      "last_name": "last_name"}, deletes_profile=True),
    "CUSTOMERS": CrmTableConfig(key=("ID",), columns={"EMAIL": "email", "FIRST_NAME": "first_name"},
                                deletes_profile=True),
    "customer_addresses": CrmTableConfig(key=("customer_id",), row_key=("id",), columns={"country_code": "country"},
                                         deletes_profile=False, types={"customer_id": CrmColumnType(
                                             type="decimal", scale=0)}),
}
AT = 1764230400000  # 2025-11-27T08:00:00Z


def _decimal_base64(unscaled: int) -> str:
    """Kafka Connect's decimal encoding, written from its spec: big-endian two's complement."""
    size = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def _wrapped(change: dict, row_fields: list[dict]) -> dict:
    """Kafka Connect's JsonConverter with schemas.enable=true: the envelope's schema, then
    the change under "payload"."""
    row = {"type": "struct", "optional": True, "name": "server1.Value", "fields": row_fields}
    return {"schema": {"type": "struct", "name": "server1.Envelope", "optional": False, "fields": [
        {**row, "field": "before"}, {**row, "field": "after"},
        {"type": "struct", "optional": False, "field": "source", "fields": []},
        {"type": "string", "optional": False, "field": "op"},
        {"type": "int64", "optional": True, "field": "ts_ms"}]}, "payload": change}


POSTGRES = _wrapped({
    "before": None,
    "after": {"id": _decimal_base64(1001), "email": "annek@noanswer.org", "first_name": "Anne",
              "last_name": "Kretchmar", "notes": "not mapped", "signup_date": 19000},
    "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "PostgreSQL_server", "ts_ms": AT,
               "snapshot": "false", "db": "postgres", "sequence": "[\"24023119\",\"24023128\"]",
               "schema": "public", "table": "customers", "txId": 555, "lsn": 24023128, "xmin": None},
    "op": "c", "ts_ms": AT + 300, "transaction": None,
}, [{"type": "bytes", "optional": False, "name": "org.apache.kafka.connect.data.Decimal", "version": 1,
     "parameters": {"scale": "0", "connect.decimal.precision": "10"}, "field": "id"},
    {"type": "string", "optional": True, "field": "email"},
    {"type": "string", "optional": True, "field": "first_name"},
    {"type": "string", "optional": True, "field": "last_name"},
    {"type": "string", "optional": True, "field": "notes"},
    {"type": "int32", "optional": True, "name": "io.debezium.time.Date", "version": 1, "field": "signup_date"}])


def _mysql(op: str, pos: int, row: int, before: dict | None, after: dict | None, file: str = "mysql-bin.000003",
           at: int = AT) -> dict:
    return {"before": before, "after": after, "op": op, "ts_ms": at + 500, "transaction": None,
            "source": {"version": "2.7.0.Final", "connector": "mysql", "name": "mysql-server-1", "ts_ms": at,
                       "snapshot": "false", "db": "inventory", "table": "customers", "server_id": 223344,
                       "gtid": None, "file": file, "pos": pos, "row": row, "thread": 7, "query": None}}


ANNE_MYSQL = {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
# Two updates of one customer committed in the same millisecond (MySQL's binlog time has
# whole seconds): two changes, ordered by their binlog position.
MYSQL_FIRST = _mysql("u", 484, 0, ANNE_MYSQL, {**ANNE_MYSQL, "first_name": "Anne Marie"})
# With include.query on, the statement's text rides along: bronze must not keep it.
MYSQL_FIRST["source"]["query"] = "UPDATE customers SET first_name='Anne Marie', notes='not mapped' WHERE id=1004"
MYSQL_SECOND = _mysql("u", 1310, 0, {**ANNE_MYSQL, "first_name": "Anne Marie"}, {**ANNE_MYSQL, "first_name": "Annie"})

SQLSERVER = {
    "before": None, "after": {"id": 1005, "first_name": "john", "last_name": "doe", "email": "john.doe@example.org"},
    "source": {"version": "2.7.0.Final", "connector": "sqlserver", "name": "server1", "ts_ms": AT,
               "snapshot": "false", "db": "testDB", "schema": "dbo", "table": "customers",
               "change_lsn": "00000027:00000758:0003", "commit_lsn": "00000027:00000758:0005",
               "event_serial_no": 1},
    "op": "c", "ts_ms": AT + 200, "transaction": None,
}

ORACLE = _wrapped({
    "before": None,
    # NUMBER without a precision: Debezium's VariableScaleDecimal, a struct of scale and bytes.
    "after": {"ID": {"scale": 0, "value": _decimal_base64(1006)}, "FIRST_NAME": "Ada", "LAST_NAME": "Byron",
              "EMAIL": "ada@example.org"},
    "source": {"version": "2.7.0.Final", "connector": "oracle", "name": "server1", "ts_ms": AT, "txId": "6.28.807",
               "scn": "2122185", "commit_scn": "2122186", "rs_id": " 0x000012.000034d5.0010 ", "ssn": 0,
               "redo_thread": 1, "user_name": "DEBEZIUM", "redo_sql": "insert into CUSTOMERS values ('Ada')",
               "snapshot": "false", "db": "ORCLPDB1", "schema": "DEBEZIUM", "table": "CUSTOMERS"},
    "op": "c", "ts_ms": AT + 100, "transaction": None,
}, [{"type": "struct", "optional": False, "name": "io.debezium.data.VariableScaleDecimal", "version": 1,
     "field": "ID", "fields": [{"type": "int32", "field": "scale"}, {"type": "bytes", "field": "value"}]},
    {"type": "string", "optional": True, "field": "FIRST_NAME"},
    {"type": "string", "optional": True, "field": "LAST_NAME"},
    {"type": "string", "optional": True, "field": "EMAIL"}])

MONGODB = {
    "after": json.dumps({"_id": {"$numberLong": "1007"}, "first_name": "Grace", "email": "grace@example.org",
                         "orders": [1, 2]}),
    "source": {"version": "2.7.0.Final", "connector": "mongodb", "name": "fulfillment", "ts_ms": AT,
               "snapshot": "false", "db": "shop", "rs": "rs0", "collection": "customers", "ord": 31,
               "h": 1546547425148721999},
    "op": "c", "ts_ms": AT + 50,
}

# An address table: keyed by the customer, its delete clears the country and no more.
# Sent without a schema, so the key's decimal encoding comes from crm.tables types.
ADDRESS = {"id": 9, "customer_id": _decimal_base64(1004), "country_code": "FR", "street": "not mapped"}
ADDRESS_DELETE = _mysql("d", 2048, 0, ADDRESS, None)
ADDRESS_DELETE["source"]["table"] = "customer_addresses"


def _validated(spark, records):
    frame = validate_crm_changes(raw_records(spark, records, "landing/crm"), F.lit(NOW.isoformat()).cast("timestamp"),
                                 TABLES)
    return {int(row.source_offset): row for row in frame.collect()}


def test_every_connector_gives_its_table_key_as_the_user_and_only_the_mapped_columns(spark):
    records = [POSTGRES, MYSQL_FIRST, SQLSERVER, ORACLE, MONGODB, ADDRESS_DELETE]
    rows = _validated(spark, records)
    assert [(rows[n].error_code, rows[n].error_message) for n in range(len(records))] == [(None, None)] * 6
    assert [rows[n].user_id for n in range(6)] == ["1001", "1004", "1005", "1006", "1007", "1004"]
    assert [rows[n].event_id for n in range(6)] == [
        "crm:postgres.customers:24023128:c:1001",
        "crm:inventory.customers:mysql-bin.000003:484:0:u:1004",
        "crm:testDB.customers:00000027:00000758:0005:00000027:00000758:0003:1:c:1005",
        "crm:ORCLPDB1.CUSTOMERS:2122186:2122185:0x000012.000034d5.0010:0:c:1006",
        "crm:shop.customers:1764230400000:31:c:1007",
        "crm:inventory.customer_addresses:mysql-bin.000003:2048:0:d:1004:9",
    ]
    payloads = [json.loads(rows[n].payload) for n in range(6)]
    assert [(p["op"], p["before"], p["after"]) for p in payloads] == [
        ("c", None, {"user_id": "1001", "email": "annek@noanswer.org", "first_name": "Anne", "last_name": "Kretchmar"}),
        ("u", {"user_id": "1004", "email": "annek@noanswer.org", "first_name": "Anne", "last_name": "Kretchmar"},
         {"user_id": "1004", "email": "annek@noanswer.org", "first_name": "Anne Marie", "last_name": "Kretchmar"}),
        ("c", None, {"user_id": "1005", "email": "john.doe@example.org"}),
        ("c", None, {"user_id": "1006", "email": "ada@example.org", "first_name": "Ada"}),
        ("c", None, {"user_id": "1007", "email": "grace@example.org", "first_name": "Grace"}),
        # Not a profile delete: an update that clears what the address table maps.
        ("u", {"user_id": "1004", "country": "FR"}, {"user_id": "1004", "country": None}),
    ]
    assert [p.get("clears_fields") for p in payloads] == [None] * 5 + [True]
    # Only the source's place and log position: no statement text, no unmapped column.
    for payload in payloads:
        assert set(payload["source"]) <= set(KEPT_SOURCE_FIELDS)
        assert "not mapped" not in json.dumps(payload) and "Ada')" not in json.dumps(payload)
    assert [p["position"] for p in payloads] == [
        "00000000000024023128",
        "mysql-bin.000003/00000000000000000484/0000000000",
        "00000027:00000758:0005/00000027:00000758:0003/00000000000000000001",
        f"{2122186:040d}/{2122185:040d}/0x000012.000034d5.0010/0000000000",
        "00000001764230400000/0000000031",
        "mysql-bin.000003/00000000000000002048/0000000000",
    ]


def test_two_mysql_updates_in_one_millisecond_are_two_changes_in_binlog_order(spark):
    rolled_over = _mysql("u", 4, 0, ANNE_MYSQL, ANNE_MYSQL, file="mysql-bin.000004")
    rows = _validated(spark, [MYSQL_SECOND, MYSQL_FIRST, rolled_over])
    assert rows[0].event_id != rows[1].event_id
    assert rows[0].occurred_at == rows[1].occurred_at
    positions = [json.loads(rows[n].payload)["position"] for n in (1, 0, 2)]
    assert positions == sorted(positions), "binlog order: pos 484, then pos 1310, then the next file"


# (earlier, later) source fields, in each connector's log order.
LOG_ORDER = [
    # SQL Server: a primary-key update is a delete and an insert sharing both LSNs, serials 1 and 2.
    ({"commit_lsn": "00000027:00000758:0005", "change_lsn": "00000027:00000758:0003", "event_serial_no": 1},
     {"commit_lsn": "00000027:00000758:0005", "change_lsn": "00000027:00000758:0003", "event_serial_no": 2}),
    ({"commit_lsn": "00000027:00000758:0005", "change_lsn": "00000027:00000758:0003", "event_serial_no": 2},
     {"commit_lsn": "00000027:00000a10:0002", "change_lsn": "00000027:00000a10:0001", "event_serial_no": 1}),
    # Oracle: redo records sharing an SCN, told apart by rs_id.
    ({"scn": "1000", "commit_scn": "1002", "rs_id": " 0x000012.000034d5.0010 "},
     {"scn": "1000", "commit_scn": "1002", "rs_id": " 0x000012.000034d5.0011 "}),
    # Oracle SCNs are decimal strings: 999 before 1000, which text order alone gets wrong.
    ({"scn": "999", "commit_scn": "999"}, {"scn": "1000", "commit_scn": "1000"}),
    ({"scn": "1000", "commit_scn": "1002", "ssn": 0}, {"scn": "1001", "commit_scn": "1002", "ssn": 1}),
    # MongoDB: ord counts within the ts_ms second.
    ({"ord": 9}, {"ord": 10}),
    # PostgreSQL: lsn as a number, not as text ("999" sorts after "1000" as text).
    ({"lsn": 999}, {"lsn": 1000}),
]


def test_positions_sort_in_each_connectors_log_order(spark):
    def change(source):
        return {"before": None, "after": {"id": 1}, "op": "c", "ts_ms": AT,
                "source": {"ts_ms": AT, "db": "d", "table": "customers", **source}}

    # Each pair sent later first.
    rows = _validated(spark, [change(source) for earlier, later in LOG_ORDER for source in (later, earlier)])
    for pair, (earlier, _) in enumerate(LOG_ORDER):
        sent_later, sent_earlier = rows[2 * pair], rows[2 * pair + 1]
        assert json.loads(sent_earlier.payload)["position"] < json.loads(sent_later.payload)["position"], earlier
        assert sent_earlier.event_id != sent_later.event_id


def test_truncates_and_schema_changes_are_control_records_and_an_unknown_table_is_quarantined(spark):
    truncate = {"op": "t", "ts_ms": AT, "source": {**MYSQL_FIRST["source"]}, "transaction": None}
    schema_change = {"source": {"server": "mysql-server-1"}, "position": {"file": "mysql-bin.000003", "pos": 154},
                     "databaseName": "inventory", "ddl": "ALTER TABLE customers ADD COLUMN vip BOOLEAN",
                     "tableChanges": [{"type": "ALTER", "id": "\"inventory\".\"customers\""}]}
    orders = _mysql("c", 900, 0, None, {"id": 5, "total": 10})
    orders["source"]["table"] = "orders"
    bad_decimal = _mysql("c", 950, 0, None, {**ADDRESS, "customer_id": "%%%"})
    bad_decimal["source"]["table"] = "customer_addresses"
    rows = _validated(spark, [truncate, {"schema": {"type": "struct"}, "payload": schema_change}, orders,
                              bad_decimal])
    actual = spark.createDataFrame([(n, rows[n].control, rows[n].error_code, rows[n].error_message) for n in range(4)],
                                   "n int, control string, error_code string, error_message string")
    expected = spark.createDataFrame([
        (0, "truncate", None, None),
        (1, "schema_change", None, None),
        (2, None, "invalid_value", "table 'inventory.orders' is not in crm.tables"),
        (3, None, "invalid_value",
         "'after.customer_id' cannot be read as decimal (by its schema or crm.tables types)"),
    ], actual.schema)
    assert_df_equality(actual, expected)


def test_two_addresses_of_one_customer_in_one_snapshot_are_two_changes(spark):
    def snapshot_read(address):
        read = _mysql("r", 154, 0, None, address)
        read["source"].update(table="customer_addresses", snapshot="true")
        return read

    home, work = {**ADDRESS, "id": 9}, {**ADDRESS, "id": 10, "country_code": "DE"}
    # decimal.format=NUMERIC: the configured decimal key arrives as a JSON number.
    numeric = {**snapshot_read({**ADDRESS, "id": 11}), "after": {**ADDRESS, "id": 11, "customer_id": 1004}}
    rows = _validated(spark, [snapshot_read(home), snapshot_read(work), numeric])
    assert [(rows[n].error_code, rows[n].user_id) for n in range(3)] == [(None, "1004")] * 3
    assert [rows[n].event_id for n in range(3)] == [
        f"crm:inventory.customer_addresses:mysql-bin.000003:154:0:r:1004:{address}" for address in (9, 10, 11)]


def test_a_replayed_truncate_is_not_data(spark):
    truncate = {"op": "t", "ts_ms": AT, "source": {**MYSQL_FIRST["source"]}}
    validated = validate_crm_changes(raw_records(spark, [truncate], "landing/crm"), None, TABLES)
    outcome = replay_outcomes(validated, spark.createDataFrame([], "event_id string"))
    assert [row.replay_outcome for row in outcome.collect()] == ["not_data:truncate"]


def test_kafka_connect_decimals_decode_exactly(spark):
    random.seed(7)
    cases = [(1, 2), (-1, 0), (-128, 0), (127, 3), (10**20 + 7, 4), (-(2**63), 0), (2**63, 1), (-(2**100), 5)]
    cases += [(random.randrange(-(2**110), 2**110), random.choice((0, 2, 9))) for _ in range(40)]
    frame = spark.createDataFrame([(_decimal_base64(v), s) for v, s in cases], "encoded string, scale int")
    decoded = frame.selectExpr(scaled_text(signed_decimal("hex(unbase64(encoded))"), "scale")).collect()
    exact = Context(prec=100)  # the default context rounds past 28 digits
    expected = [format(Decimal(v).scaleb(-s, context=exact), "f") for v, s in cases]
    assert [row[0] for row in decoded] == expected


def test_debezium_temporal_columns_decode_to_iso_text(spark):
    moment = datetime(2025, 3, 9, 14, 5, 7, 123456, tzinfo=UTC)
    since_epoch = moment - datetime(1970, 1, 1, tzinfo=UTC)
    micros = since_epoch // timedelta(microseconds=1)
    of_day = timedelta(hours=14, minutes=5, seconds=7, microseconds=123456) // timedelta(microseconds=1)
    columns = {  # column -> (Debezium logical name, value as sent, expected text)
        "d": ("io.debezium.time.Date", (date(2025, 3, 9) - date(1970, 1, 1)).days, "2025-03-09"),
        "ms": ("io.debezium.time.Timestamp", micros // 1000, "2025-03-09T14:05:07.123"),
        "us": ("io.debezium.time.MicroTimestamp", micros, "2025-03-09T14:05:07.123456"),
        "ns": ("io.debezium.time.NanoTimestamp", micros * 1000, "2025-03-09T14:05:07.123456"),
        "t": ("io.debezium.time.Time", of_day // 1000, "14:05:07.123"),
        "tu": ("io.debezium.time.MicroTime", of_day, "14:05:07.123456"),
        "kd": ("org.apache.kafka.connect.data.Date", 0, "1970-01-01"),
        # PostgreSQL's infinity: no value (the change has no key then), not a stopped stream.
        "inf": ("io.debezium.time.MicroTimestamp", 9223372036854775807, None),
    }
    tables = {"people": CrmTableConfig(key=("id",), columns={}, deletes_profile=True)}
    results = {}
    for column, (logical, value, _) in columns.items():
        tables["people"] = CrmTableConfig(key=(column,), columns={}, deletes_profile=True)
        change = _wrapped({"before": None, "after": {column: value}, "op": "c", "ts_ms": AT,
                           "source": {"ts_ms": AT, "db": "hr", "table": "people", "lsn": 1}},
                          [{"type": "int64", "name": logical, "field": column}])
        frame = validate_crm_changes(raw_records(spark, [change], "landing/crm"),
                                     F.lit(NOW.isoformat()).cast("timestamp"), tables)
        results[column] = frame.first().user_id
    assert results == {column: text for column, (_, _, text) in columns.items()}


def test_a_snapshot_read_takes_its_place_from_when_the_row_last_changed(spark):
    """A snapshot read holds the row as of the snapshot's start; with `updated_at` named, it
    is placed by that column, on the connector's clock: PostgreSQL's milliseconds, SQL
    Server's 10 ms, the start of the second for MySQL and Oracle (their positions break the
    tie), a millisecond before it for MongoDB (time-based positions); never later than the
    read. A streamed change keeps its commit time, a table without `updated_at` its read
    time. Only a read's updated_at must be there and decode."""
    read_at = AT + 3_600_000                                  # read an hour after the row last changed
    micros = (AT + 403) * 1000                                # 08:00:00.403
    table = CrmTableConfig(key=("id",), columns={"email": "email"}, deletes_profile=True, updated_at="updated_at",
                           types={"updated_at": CrmColumnType(type="micro_timestamp")})

    def change(op: str, updated_at, table_name: str = "customers", at: int = read_at, **position) -> dict:
        row = {"id": 1, "email": "a@example.org", "updated_at": updated_at}
        if updated_at == "absent":
            del row["updated_at"]
        source = {"ts_ms": at, "db": "crm", "table": table_name, "snapshot": "true" if op == "r" else "false",
                  **(position or {"lsn": 5000})}
        return {"before": row if op == "d" else None, "after": None if op == "d" else row, "op": op,
                "ts_ms": at + 5, "source": source}

    zoned = _wrapped(change("r", "2025-11-27T08:00:00.403Z", table_name="accounts"),
                     [{"type": "string", "name": "io.debezium.time.ZonedTimestamp", "field": "updated_at"}])

    def mongodb(document: dict, collection: str = "members") -> dict:
        return {"after": json.dumps({"_id": {"$numberLong": "1"}, **document}), "op": "r", "ts_ms": read_at + 5,
                "source": {"ts_ms": read_at, "db": "shop", "collection": collection, "ord": 3, "snapshot": "true"}}

    records = [
        change("r", micros),                                    # PostgreSQL, by crm.tables types: micro_timestamp
        zoned,                                                  # timestamptz: ISO text with its zone
        change("r", micros, file="mysql-bin.000003", pos=154),  # MySQL
        change("r", micros, commit_lsn="00000027:00000758:0005", change_lsn="00000027:00000758:0003"),  # SQL Server
        change("r", micros, scn="2122185"),                     # Oracle
        mongodb({"updated_at": {"$date": {"$numberLong": str(AT + 403)}}}),     # canonical extended JSON
        mongodb({"updated_at": {"$date": "2025-11-27T08:00:00.403Z"}}),         # relaxed extended JSON
        mongodb({"updated_at": {"$date": AT + 403}}, collection="typed"),       # types: timestamp
        mongodb({"email": "a@example.org"}),                    # a document without the field: the read time
        change("r", micros + 7_200_000_000),                    # a clock ahead of the read: the read time
        change("r", None),                                      # never set: the read time
        change("u", micros, at=read_at + 60_000, lsn=5100),     # streamed: its commit time
        change("r", micros, table_name="people"),               # a table without updated_at: the read time
        change("u", "%%%", at=read_at + 60_000, lsn=5200),      # not a read: its updated_at is not needed
        change("d", "absent", at=read_at + 60_000, lsn=5300),
        change("r", "yesterday", table_name="accounts"),        # no time at all
        change("r", "%%%"),                                     # not a micro_timestamp
        change("r", "absent"),                                  # a relational row always has it
        change("r", micros, at=AT + 10 * 86_400_000),           # read ten days from now
    ]
    members = CrmTableConfig(key=("_id",), columns={"email": "email"}, deletes_profile=True, updated_at="updated_at")
    tables = {"shop.members": members,
              "shop.typed": members.model_copy(update={"types": {"updated_at": CrmColumnType(type="timestamp")}}),
              "customers": table, "accounts": table.model_copy(update={"types": {}}),
              "people": CrmTableConfig(key=("id",), columns={"email": "email"}, deletes_profile=True)}
    now = F.lit("2025-11-28T08:00:00Z").cast("timestamp")
    frame = validate_crm_changes(raw_records(spark, records, "landing/crm"), now, tables)
    rows = {int(row.source_offset): row for row in frame.collect()}
    valid = 15
    assert [(n, rows[n].error_code) for n in range(valid)] == [(n, None) for n in range(valid)]
    millis_of = [int(rows[n].occurred_at.replace(tzinfo=UTC).timestamp() * 1000) for n in range(valid)]
    assert millis_of == [AT + 403, AT + 403, AT, AT + 400, AT, AT - 1, AT - 1, AT - 1, read_at, read_at, read_at,
                         read_at + 60_000, read_at, read_at + 60_000, read_at + 60_000]
    assert [(rows[n].error_code, rows[n].error_message) for n in range(valid, len(records))] == [
        ("invalid_value", "'after.updated_at' is not a time (crm.tables updated_at; an epoch number needs its "
                          "encoding in crm.tables types)"),
        ("invalid_value", "'after.updated_at' cannot be read as micro_timestamp (by its schema or crm.tables types)"),
        ("invalid_value", "'after.updated_at' is missing: a snapshot read is placed by it (crm.tables updated_at)"),
        ("bad_timestamp", "source.ts_ms is outside the accepted range")]
    assert "updated_at" not in json.loads(rows[0].payload)["after"], "not a profile field: not kept"
