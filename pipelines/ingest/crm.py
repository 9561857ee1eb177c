"""Debezium change messages from any connector and any CRM table, read as profile changes.

Knowledge of Debezium's message shapes lives here, as Spark SQL expression text that
`pipelines.ingest.validation.validate_crm_changes` builds its columns from:

- **Positions.** Each connector says where a change sits in its database's log in its own
  fields. `position_sort` turns them into one string that sorts in log order within a
  source; `position_id` into the text a change's event id carries, so two changes of one
  row in one millisecond (MySQL's binlog time has seconds) stay two changes.
- **Tables.** `crm.tables` maps each table's key column(s) to the user id and its columns
  to profile fields. The change bronze keeps is in one canonical shape, whatever the
  table: `{op, ts_ms, source, position, before, after}` with `before`/`after` holding
  `user_id` and the mapped profile fields only. A mapped column missing from a row is
  left out (not set); unmapped columns never reach bronze.
- **Encodings.** Debezium's defaults for decimal (`bytes`, base64 of a two's-complement
  integer, the scale in the schema) and temporal columns (`io.debezium.time.*` integers)
  are decoded to text, from the Kafka Connect schema when the message carries one, else
  from `crm.tables.<t>.types`.
"""

from __future__ import annotations

from pipelines.config import CrmColumnType, CrmTableConfig
from pipelines.contracts.events import PERSON_FIELDS

# Logical type names (Kafka Connect's and Debezium's) -> the decoder `_decoded` applies.
LOGICAL_TYPES = {
    "org.apache.kafka.connect.data.Decimal": "decimal",
    "io.debezium.data.VariableScaleDecimal": "variable_scale_decimal",
    "org.apache.kafka.connect.data.Date": "date",
    "io.debezium.time.Date": "date",
    "org.apache.kafka.connect.data.Timestamp": "timestamp",
    "io.debezium.time.Timestamp": "timestamp",
    "io.debezium.time.MicroTimestamp": "micro_timestamp",
    "io.debezium.time.NanoTimestamp": "nano_timestamp",
    "org.apache.kafka.connect.data.Time": "time",
    "io.debezium.time.Time": "time",
    "io.debezium.time.MicroTime": "micro_time",
    "io.debezium.time.NanoTime": "nano_time",
}
# The CRM table Tailor's own generator and tests write: `customers`, keyed by `user_id`,
# its columns named as the profile fields (conf/base.yaml's default).
CUSTOMERS_TABLE = {"customers": CrmTableConfig(key=("user_id",), columns={field: field for field in PERSON_FIELDS},
                                               deletes_profile=True)}
# Sixteen bytes overflow DECIMAL(38); wider decimals are refused rather than rounded.
MAX_DECIMAL_BYTES = 15
_TWO_TO_64 = "CAST('18446744073709551616' AS DECIMAL(38,0))"
_EPOCH = "TIMESTAMP_NTZ'1970-01-01 00:00:00'"


def _source(field: str, kind: str) -> str:
    return f"try_variant_get(_v, '$.source.{field}', '{kind}')"


def _pad(expression: str, width: int) -> str:
    return f"lpad(CAST({expression} AS STRING), {width}, '0')"


def _position(kind: str) -> str:
    """Each connector's log position, tried in turn by the fields it has: PostgreSQL `lsn`;
    MySQL binlog `file` + `pos` + `row`; SQL Server `commit_lsn` + `change_lsn` +
    `event_serial_no` (fixed-width hex, so they sort as text); Oracle `commit_scn` + `scn`
    (decimal strings) + `rs_id` + `ssn`; MongoDB `ord` within its `ts_ms` second. Without any of
    them, the source time. `kind` is "sort" (numbers padded, to sort as text) or "id"."""
    sort = kind == "sort"
    lsn, file, pos, row = (_source("lsn", "bigint"), _source("file", "string"), _source("pos", "bigint"),
                           _source("row", "bigint"))
    commit_lsn, change_lsn, serial = (_source("commit_lsn", "string"), _source("change_lsn", "string"),
                                      _source("event_serial_no", "bigint"))
    scn, commit_scn, ssn = _source("scn", "string"), _source("commit_scn", "string"), _source("ssn", "bigint")
    # Many redo records share an SCN: rs_id (fixed-width hex) tells them apart, as LogMiner does.
    rs_id = f"trim({_source('rs_id', 'string')})"
    order, ts = _source("ord", "bigint"), _source("ts_ms", "bigint")

    def joined(*parts: tuple[str, int]) -> str:
        """(expression, width): a width pads a number to sort as text; 0 keeps text as it is."""
        if sort:
            shown = [_pad(expression, width) if width else f"coalesce({expression}, '')" for expression, width in parts]
            return f"concat_ws('/', {', '.join(shown)})"
        return f"concat_ws(':', {', '.join(f'CAST({expression} AS STRING)' for expression, _ in parts)})"

    return _by_connector(
        postgresql=joined((lsn, 20)),
        mysql=joined((file, 0), (pos, 20), (f"coalesce({row}, 0)", 10)),
        sqlserver=joined((commit_lsn, 0), (change_lsn, 0), (f"coalesce({serial}, 0)", 20)),
        oracle=joined((f"coalesce({commit_scn}, {scn})", 40), (scn, 40), (rs_id, 0), (f"coalesce({ssn}, 0)", 10)),
        mongodb=joined((ts, 20), (order, 10)),
        otherwise=_pad(ts, 20) if sort else f"CAST({ts} AS STRING)")


def _by_connector(postgresql: str, mysql: str, sqlserver: str, oracle: str, mongodb: str, otherwise: str) -> str:
    """SQL: the expression for the change's connector, told apart by its position fields
    (PostgreSQL `lsn`, MySQL `file` + `pos`, SQL Server `commit_lsn`/`change_lsn`, Oracle
    `scn`, MongoDB `ord`), tried in that order."""
    return (f"CASE WHEN {_source('lsn', 'bigint')} IS NOT NULL THEN {postgresql} "
            f"WHEN {_source('file', 'string')} IS NOT NULL AND {_source('pos', 'bigint')} IS NOT NULL THEN {mysql} "
            f"WHEN {_source('change_lsn', 'string')} IS NOT NULL OR {_source('commit_lsn', 'string')} IS NOT NULL "
            f"THEN {sqlserver} "
            f"WHEN {_source('scn', 'string')} IS NOT NULL THEN {oracle} "
            f"WHEN {_source('ord', 'bigint')} IS NOT NULL THEN {mongodb} "
            f"ELSE {otherwise} END")


def snapshot_read_time(changed_at: str) -> str:
    """Where a snapshot read goes in the order, from `changed_at` (when its row last changed;
    README, "Order"), by the connector (`_by_connector`). The read's
    own position is where the snapshot began, so within one source a tie in time goes to
    the change committed after that. MySQL's binlog and Oracle's LogMiner stamp whole
    seconds, so a change committed later in the row's last second carries that second's
    start: the read goes there too, and positions break the tie. SQL Server's commit times
    are `datetime` (steps of about 3 ms): to the 10 ms. MongoDB's position is time, not a log:
    the read goes just before the second, so every change stamped in it wins. PostgreSQL
    stamps milliseconds: the column's own time."""
    second = f"date_trunc('SECOND', {changed_at})"
    return _by_connector(postgresql=changed_at, mysql=second,
                         sqlserver=f"timestamp_millis(unix_millis({changed_at}) DIV 10 * 10)", oracle=second,
                         mongodb=f"{second} - INTERVAL 1 MILLISECOND", otherwise=changed_at)


# The source fields bronze keeps: where the change came from and its place in the log.
# Others can carry row data: MySQL's `query` (include.query) and Oracle's `redo_sql` hold
# the statement's text, unmapped columns included.
KEPT_SOURCE_FIELDS = ("version", "connector", "name", "ts_ms", "snapshot", "db", "schema", "table", "collection",
                      "rs", "lsn", "txId", "sequence", "xmin", "file", "pos", "row", "server_id", "gtid", "thread",
                      "change_lsn", "commit_lsn", "event_serial_no", "scn", "commit_scn", "rs_id", "ssn",
                      "redo_thread", "ord")


def kept_source() -> str:
    """The change's `source` as JSON with only KEPT_SOURCE_FIELDS (null ones left out)."""
    fields = ", ".join(f"'{name}', try_variant_get(_v, '$.source.{name}', 'variant')" for name in KEPT_SOURCE_FIELDS)
    return f"to_json(named_struct({fields}))"


def position_sort() -> str:
    return _position("sort")


def position_id() -> str:
    return _position("id")


def _let(name: str, value: str, body: str) -> str:
    """`body` with `name` bound to `value`, which is written once. Spark's optimizer inlines
    a column's expression wherever a later one uses it (a filter pushed down substitutes
    every alias), so a value used ten times costs ten copies at each level it is nested
    in; a lambda's variable is one copy whatever the number of uses."""
    return f"element_at(transform(array({value}), {name} -> {body}), 1)"


def signed_decimal(hexed: str) -> str:
    """A big-endian two's-complement integer, as hex text, as DECIMAL(38,0); null past
    MAX_DECIMAL_BYTES or when empty."""
    size = "(length(h) DIV 2)"
    high = "CASE WHEN length(h) > 16 THEN substr(h, 1, length(h) - 16) ELSE '0' END"
    unsigned = (f"(CAST(conv({high}, 16, 10) AS DECIMAL(38,0)) * {_TWO_TO_64} "
                "+ CAST(conv(right(h, 16), 16, 10) AS DECIMAL(38,0)))")
    # 2^(8 x size), for a negative number: one conv up to seven bytes, times 2^64 beyond.
    modulus = (f"CASE WHEN {size} < 8 THEN CAST(conv(concat('1', repeat('0', 2 * {size})), 16, 10) AS DECIMAL(38,0)) "
               f"ELSE CAST(conv(concat('1', repeat('0', 2 * {size} - 16)), 16, 10) AS DECIMAL(38,0)) * {_TWO_TO_64} "
               "END")
    return _let("h", hexed, f"CASE WHEN {size} BETWEEN 1 AND {MAX_DECIMAL_BYTES} THEN "
                            f"{unsigned} - CASE WHEN substr(h, 1, 1) >= '8' THEN {modulus} ELSE 0 END END")


def scaled_text(unscaled: str, scale: str) -> str:
    """An integer (DECIMAL(38,0)) and a scale as exact decimal text: (1, 2) -> '0.01'."""
    digits = "CAST(abs(q.u) AS STRING)"
    # lpad cuts a longer string to the length: pad only up to one digit before the point.
    padded = f"lpad({digits}, greatest(length({digits}), q.s + 1), '0')"
    body = ("CASE WHEN q.u IS NOT NULL AND q.s BETWEEN -38 AND 38 THEN "
            "concat(CASE WHEN q.u < 0 THEN '-' ELSE '' END, "
            f"CASE WHEN q.s > 0 THEN concat(substr({padded}, 1, length({padded}) - q.s), '.', "
            f"right({padded}, q.s)) ELSE concat({digits}, repeat('0', -q.s)) END) END")
    return _let("q", f"named_struct('u', {unscaled}, 's', {scale})", body)


def _number_text(number: str) -> str:
    """A DECIMAL(38,18) as plain text without trailing zeros: 12.340000 -> '12.34'."""
    plain = f"CAST({number} AS STRING)"
    return f"CASE WHEN {number} IS NOT NULL THEN regexp_replace(regexp_replace({plain}, '0+$', ''), '\\.$', '') END"


def _logical_case(name: str) -> str:
    pairs = ", ".join(f"'{logical}', '{decoder}'" for logical, decoder in LOGICAL_TYPES.items())
    return f"try_element_at(map({pairs}), {name})"


# Years 0001-9999 in each unit: timestampadd raises past them (PostgreSQL's infinity arrives
# as Long.MAX_VALUE), and one such value would stop the stream.
_CLOCK_RANGE = {"MILLISECOND": (-62135596800000, 253402300799999),
                "MICROSECOND": (-62135596800000000, 253402300799999999)}


def _clock(unit: str, amount: str, with_date: bool, fraction: str) -> str:
    low, high = _CLOCK_RANGE[unit]
    moment = f"timestampadd({unit}, CASE WHEN {amount} BETWEEN {low} AND {high} THEN {amount} END, {_EPOCH})"
    time_of_day = f"date_format({moment}, 'HH:mm:ss.{fraction}')"
    return f"concat(date_format({moment}, 'yyyy-MM-dd'), 'T', {time_of_day})" if with_date else time_of_day


class CrmRows:
    """Columns over both sides (`before`, `after`) of a change of each configured table.

    Each side of each table is one array with an entry per column the table reads (keys,
    row keys, mapped columns): its profile field, whether it is a key, whether it was sent,
    sent as null, and its text, decoded. One lambda decodes every column, so the plan
    holds one decoder per side and table, not one per column: a plan this size is built
    again for every micro-batch.

    `_v` is the change (unwrapped), `_outer` the message (with Kafka Connect's schema when
    it carries one). MongoDB's connector sends a row as a JSON string: it is parsed."""

    SIDES = ("before", "after")

    def __init__(self, tables: dict[str, CrmTableConfig]):
        self.tables = tables

    @staticmethod
    def row(side: str) -> str:
        return f"_crm_{side}"

    @staticmethod
    def entries(table_index: int, side: str) -> str:
        return f"_crm{table_index}_{side}"

    def stages(self) -> list[dict[str, str]]:
        rows, fields, entries = {}, {}, {}
        for side in self.SIDES:
            sent = f"try_variant_get(_v, '$.{side}', 'variant')"
            rows[self.row(side)] = _let("r", sent, "CASE WHEN schema_of_variant(r) = 'STRING' "
                                                   "THEN try_parse_json(try_variant_get(r, '$', 'string')) ELSE r END")
            rows[f"_crm_{side}_schema"] = (
                "try_variant_get(try_element_at(filter(try_variant_get(_outer, '$.schema.fields', 'array<variant>'), "
                f"f -> try_variant_get(f, '$.field', 'string') = '{side}'), 1), '$.fields', 'array<variant>')")
            fields[f"_crm_{side}_fields"] = f"try_variant_get({self.row(side)}, '$', 'map<string,variant>')"
        for index, table in enumerate(self.tables.values()):
            for side in self.SIDES:
                entries[self.entries(index, side)] = f"transform(array({_columns_read(table)}), m -> {_read(side)})"
        return [rows, fields, entries]

    def exists(self, side: str) -> str:
        return f"({self.row(side)} IS NOT NULL AND NOT coalesce(is_variant_null({self.row(side)}), FALSE))"

    def undecodable(self, table_index: int, side: str) -> tuple[str, str]:
        """(a value is sent, not null, and its decoding gives nothing; the message naming
        the first such column). The `updated_at` column alone counts only in a snapshot
        read's row, the one change it places."""
        read_only = "(_op = 'r')" if side == "after" else "FALSE"
        failed = (f"filter({self.entries(table_index, side)}, e -> e.present AND NOT e.is_null AND e.text IS NULL "
                  f"AND (e.k OR e.rk OR e.f IS NOT NULL OR {read_only}))")
        first = f"element_at({failed}, 1)"
        message = (f"format_string('\\'{side}.%s\\' cannot be read as %s (by its schema or crm.tables types)', "
                   f"substring({first}.c, 1, 128), {first}.type)")
        return f"(size({failed}) > 0)", message

    def _joined(self, table_index: int, side: str, flag: str) -> str:
        """The values of the entries flagged `flag` (k: key, rk: row key) joined with ':',
        when the row has them all."""
        chosen = f"filter({self.entries(table_index, side)}, e -> e.{flag})"
        return (f"CASE WHEN {self.exists(side)} AND forall({chosen}, e -> e.text IS NOT NULL) "
                f"THEN array_join(transform({chosen}, e -> e.text), ':') END")

    def user_id(self, table_index: int, side: str) -> str:
        return self._joined(table_index, side, "k")

    def row_key(self, table_index: int, side: str) -> str:
        return self._joined(table_index, side, "rk")

    def updated_at(self, table_index: int, side: str) -> str:
        """The entry of the table's `updated_at` column (null when the table names none)."""
        return f"try_element_at(filter({self.entries(table_index, side)}, e -> e.ua), 1)"

    def canonical(self, table_index: int, side: str, user_id: str) -> str:
        """The row as JSON text: `user_id` and each mapped column sent, under its profile
        field's name (null for a JSON null); null when the change has no such row."""
        sent = (f"transform(filter({self.entries(table_index, side)}, e -> e.f IS NOT NULL AND e.present), "
                "e -> concat('\"', e.f, '\":', CASE WHEN e.is_null THEN 'null' "
                "ELSE to_json(CAST(e.text AS VARIANT)) END))")
        user = f"concat('\"user_id\":', to_json(CAST({user_id} AS VARIANT)))"
        fields = f"array_join(concat(array({user}), {sent}), ',')"
        return f"CASE WHEN {self.exists(side)} THEN concat('{{', {fields}, '}}') END"


def _columns_read(table: CrmTableConfig) -> str:
    """Each column the table reads, as a struct of what the decoding lambda needs."""
    keys, row_keys = set(table.key), set(table.row_key or ())
    entries = []
    for column in table.read_columns:
        configured: CrmColumnType | None = table.types.get(column)
        scale = configured.scale if configured and configured.scale is not None else "NULL"
        entries.append(f"named_struct('c', '{column}', 'f', {sql_text(table.columns.get(column))}, "
                       f"'k', {str(column in keys).upper()}, 'rk', {str(column in row_keys).upper()}, "
                       f"'ua', {str(column == table.updated_at).upper()}, "
                       f"'t', {sql_text(configured.type if configured else None)}, 's', CAST({scale} AS INT))")
    return ", ".join(entries)


def _read(side: str) -> str:
    """The decoding lambda's body for entry `m`: the entry with `present`, `is_null`,
    `type` and `text`. Its value comes from the row's map, its logical type from the
    message's schema when there is one, else from `crm.tables` types."""
    value = f"try_element_at(_crm_{side}_fields, m.c)"
    schema_field = f"try_element_at(filter(_crm_{side}_schema, g -> try_variant_get(g, '$.field', 'string') = m.c), 1)"
    found = f"named_struct('v', {value}, 'sf', {schema_field})"
    logical = _logical_case("try_variant_get(x.sf, '$.name', 'string')")
    typed = (f"named_struct('v', x.v, 'd', coalesce({logical}, m.t), "
             "'sc', coalesce(try_variant_get(x.sf, '$.parameters.scale', 'int'), m.s))")
    # decimal.format=NUMERIC sends a JSON number: read as a number, never as base64.
    is_text = "schema_of_variant(y.v) = 'STRING'"
    base64 = (f"CASE y.d WHEN 'decimal' THEN CASE WHEN {is_text} THEN try_variant_get(y.v, '$', 'string') END "
              "WHEN 'variable_scale_decimal' THEN try_variant_get(y.v, '$.value', 'string') END")
    unscaled = signed_decimal(f"hex(try_to_binary({base64}, 'base64'))")
    scale = "CASE y.d WHEN 'variable_scale_decimal' THEN try_variant_get(y.v, '$.scale', 'int') ELSE y.sc END"
    number = f"CASE WHEN y.d = 'decimal' AND NOT {is_text} THEN try_variant_get(y.v, '$', 'decimal(38,18)') END"
    decoded = f"named_struct('v', y.v, 'd', y.d, 'u', {unscaled}, 's', {scale}, 'n', {number})"
    entry = ("named_struct('c', m.c, 'f', m.f, 'k', m.k, 'rk', m.rk, 'ua', m.ua, 'type', coalesce(z.d, 'text'), "
             "'present', z.v IS NOT NULL, 'is_null', coalesce(is_variant_null(z.v), FALSE), "
             f"'text', {_decoded('z')})")
    return _let("x", found, _let("y", typed, _let("z", decoded, entry)))


def _decoded(var: str) -> str:
    """`var`'s value (v) as text by its decoder (d; null: as sent, and MongoDB's
    {"$oid": ...}, {"$numberLong": ...} and {"$date": ...} as their text), with u, s, n for
    decimals. A `timestamp` takes a MongoDB date too."""
    as_long = f"try_variant_get({var}.v, '$', 'bigint')"
    nanos_as_micros = f"{as_long} DIV 1000"
    millis = f"coalesce({as_long}, {_mongodb_millis(var)})"
    return (f"CASE {var}.d "
            f"WHEN 'decimal' THEN coalesce({_number_text(f'{var}.n')}, {scaled_text(f'{var}.u', f'{var}.s')}) "
            f"WHEN 'variable_scale_decimal' THEN {scaled_text(f'{var}.u', f'{var}.s')} "
            f"WHEN 'date' THEN CAST(date_from_unix_date(try_variant_get({var}.v, '$', 'int')) AS STRING) "
            f"WHEN 'timestamp' THEN {_clock('MILLISECOND', millis, True, 'SSS')} "
            f"WHEN 'micro_timestamp' THEN {_clock('MICROSECOND', as_long, True, 'SSSSSS')} "
            f"WHEN 'nano_timestamp' THEN {_clock('MICROSECOND', nanos_as_micros, True, 'SSSSSS')} "
            f"WHEN 'time' THEN {_clock('MILLISECOND', as_long, False, 'SSS')} "
            f"WHEN 'micro_time' THEN {_clock('MICROSECOND', as_long, False, 'SSSSSS')} "
            f"WHEN 'nano_time' THEN {_clock('MICROSECOND', nanos_as_micros, False, 'SSSSSS')} "
            f"ELSE coalesce(try_variant_get({var}.v, '$[\"$oid\"]', 'string'), "
            f"try_variant_get({var}.v, '$[\"$numberLong\"]', 'string'), {_mongodb_date(var)}, "
            f"try_variant_get({var}.v, '$', 'string')) END")


def _mongodb_millis(var: str) -> str:
    """MongoDB's extended JSON date as milliseconds since the epoch: {"$date": 1764...}
    (legacy) or {"$date": {"$numberLong": "..."}} (canonical); null for anything else."""
    date = f"try_variant_get({var}.v, '$[\"$date\"]', 'variant')"
    return (f"coalesce(try_variant_get({date}, '$', 'bigint'), "
            f"try_cast(try_variant_get({date}, '$[\"$numberLong\"]', 'string') AS BIGINT))")


def _mongodb_date(var: str) -> str:
    """MongoDB's extended JSON date as ISO text: relaxed {"$date": "2026-...Z"} as sent, the
    others from their milliseconds."""
    date = f"try_variant_get({var}.v, '$[\"$date\"]', 'variant')"
    as_text = f"CASE WHEN schema_of_variant({date}) = 'STRING' THEN try_variant_get({date}, '$', 'string') END"
    return f"coalesce({as_text}, {_clock('MILLISECOND', _mongodb_millis(var), True, 'SSS')})"


def sql_text(value: str | None) -> str:
    """A config-checked name (letters, digits, '_', '$', '.') as a SQL string literal."""
    return "CAST(NULL AS STRING)" if value is None else f"'{value}'"


def cleared_row(user_id: str, table: CrmTableConfig) -> str:
    """A row whose every mapped field is null: what a delete in a table that does not
    delete the profile (an address) leaves."""
    fragments = [_field_json("user_id", f"to_json(CAST({user_id} AS VARIANT))")]
    fragments += [_field_json(field, "'null'") for field in table.columns.values()]
    return _object_json(fragments)


def _field_json(name: str, value_json: str) -> str:
    return f"concat('\"{name}\":', {value_json})"


def _object_json(fragments: list[str]) -> str:
    return f"concat('{{', concat_ws(',', {', '.join(fragments)}), '}}')"
