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
    (+ `ssn`, decimal strings); MongoDB `ord` within its `ts_ms` second. Without any of
    them, the source time. `kind` is "sort" (numbers padded, to sort as text) or "id"."""
    sort = kind == "sort"
    lsn, file, pos, row = (_source("lsn", "bigint"), _source("file", "string"), _source("pos", "bigint"),
                           _source("row", "bigint"))
    commit_lsn, change_lsn, serial = (_source("commit_lsn", "string"), _source("change_lsn", "string"),
                                      _source("event_serial_no", "bigint"))
    scn, commit_scn, ssn = _source("scn", "string"), _source("commit_scn", "string"), _source("ssn", "bigint")
    order, ts = _source("ord", "bigint"), _source("ts_ms", "bigint")

    def joined(*parts: tuple[str, int]) -> str:
        """(expression, width): a width pads a number to sort as text; 0 keeps text as it is."""
        if sort:
            shown = [_pad(expression, width) if width else f"coalesce({expression}, '')" for expression, width in parts]
            return f"concat_ws('/', {', '.join(shown)})"
        return f"concat_ws(':', {', '.join(f'CAST({expression} AS STRING)' for expression, _ in parts)})"

    return (f"CASE WHEN {lsn} IS NOT NULL THEN {joined((lsn, 20))} "
            f"WHEN {file} IS NOT NULL AND {pos} IS NOT NULL THEN "
            f"{joined((file, 0), (pos, 20), (f'coalesce({row}, 0)', 10))} "
            f"WHEN {change_lsn} IS NOT NULL OR {commit_lsn} IS NOT NULL THEN "
            f"{joined((commit_lsn, 0), (change_lsn, 0), (f'coalesce({serial}, 0)', 20))} "
            f"WHEN {scn} IS NOT NULL THEN "
            f"{joined((f'coalesce({commit_scn}, {scn})', 40), (scn, 40), (f'coalesce({ssn}, 0)', 10))} "
            f"WHEN {order} IS NOT NULL THEN {joined((ts, 20), (order, 10))} "
            f"ELSE {_pad(ts, 20) if sort else f'CAST({ts} AS STRING)'} END")


def position_sort() -> str:
    return _position("sort")


def position_id() -> str:
    return _position("id")


def signed_decimal(hexed: str) -> str:
    """A big-endian two's-complement integer, as hex text, as DECIMAL(38,0); null past
    MAX_DECIMAL_BYTES or when empty."""
    size = f"(length({hexed}) DIV 2)"
    high = f"CASE WHEN length({hexed}) > 16 THEN substr({hexed}, 1, length({hexed}) - 16) ELSE '0' END"
    unsigned = (f"(CAST(conv({high}, 16, 10) AS DECIMAL(38,0)) * {_TWO_TO_64} "
                f"+ CAST(conv(right({hexed}, 16), 16, 10) AS DECIMAL(38,0)))")
    # 2^(8 x size), for a negative number: one conv up to seven bytes, times 2^64 beyond.
    modulus = (f"CASE WHEN {size} < 8 THEN CAST(conv(concat('1', repeat('0', 2 * {size})), 16, 10) AS DECIMAL(38,0)) "
               f"ELSE CAST(conv(concat('1', repeat('0', 2 * {size} - 16)), 16, 10) AS DECIMAL(38,0)) * {_TWO_TO_64} "
               "END")
    return (f"CASE WHEN {size} BETWEEN 1 AND {MAX_DECIMAL_BYTES} THEN "
            f"{unsigned} - CASE WHEN substr({hexed}, 1, 1) >= '8' THEN {modulus} ELSE 0 END END")


def scaled_text(unscaled: str, scale: str) -> str:
    """An integer (DECIMAL(38,0)) and a scale as exact decimal text: (1, 2) -> '0.01'."""
    digits = f"CAST(abs({unscaled}) AS STRING)"
    # lpad cuts a longer string to the length: pad only up to one digit before the point.
    padded = f"lpad({digits}, greatest(length({digits}), {scale} + 1), '0')"
    return (f"CASE WHEN {unscaled} IS NOT NULL AND {scale} IS NOT NULL THEN "
            f"concat(CASE WHEN {unscaled} < 0 THEN '-' ELSE '' END, "
            f"CASE WHEN {scale} > 0 THEN concat(substr({padded}, 1, length({padded}) - {scale}), '.', "
            f"right({padded}, {scale})) ELSE concat({digits}, repeat('0', -{scale})) END) END")


def _logical_case(name: str) -> str:
    return "CASE " + " ".join(f"WHEN {name} = '{logical}' THEN '{decoder}'" for logical, decoder in
                              LOGICAL_TYPES.items()) + " END"


def _clock(unit: str, amount: str, with_date: bool, fraction: str) -> str:
    moment = f"timestampadd({unit}, {amount}, {_EPOCH})"
    time_of_day = f"date_format({moment}, 'HH:mm:ss.{fraction}')"
    return f"concat(date_format({moment}, 'yyyy-MM-dd'), 'T', {time_of_day})" if with_date else time_of_day


class CrmRows:
    """Columns over both sides (`before`, `after`) of a change of each configured table,
    added in stages so each decoded value is computed once.

    `_v` is the change (unwrapped), `_outer` the message (with Kafka Connect's schema when
    it carries one). MongoDB's connector sends a row as a JSON string: it is parsed."""

    SIDES = ("before", "after")

    def __init__(self, tables: dict[str, CrmTableConfig]):
        self.tables = tables

    @staticmethod
    def row(side: str) -> str:
        return f"_crm_{side}"

    def _name(self, table_index: int, side: str, column: str) -> str:
        table = list(self.tables.values())[table_index]
        columns = list(dict.fromkeys((*table.key, *table.columns)))
        return f"_crm{table_index}_{side}_{columns.index(column)}"

    def stages(self) -> list[dict[str, str]]:
        rows, values, encodings, texts = {}, {}, {}, {}
        for side in self.SIDES:
            sent = f"try_variant_get(_v, '$.{side}', 'variant')"
            rows[self.row(side)] = (f"CASE WHEN schema_of_variant({sent}) = 'STRING' "
                                    f"THEN try_parse_json(try_variant_get({sent}, '$', 'string')) ELSE {sent} END")
            rows[f"_crm_{side}_schema"] = (
                "try_variant_get(try_element_at(filter(try_variant_get(_outer, '$.schema.fields', 'array<variant>'), "
                f"f -> try_variant_get(f, '$.field', 'string') = '{side}'), 1), '$.fields', 'array<variant>')")
        for index, table in enumerate(self.tables.values()):
            for side in self.SIDES:
                for column in dict.fromkeys((*table.key, *table.columns)):
                    name = self._name(index, side, column)
                    value = f"try_variant_get({self.row(side)}, '$.{column}', 'variant')"
                    field = (f"try_element_at(filter(_crm_{side}_schema, "
                             f"g -> try_variant_get(g, '$.field', 'string') = '{column}'), 1)")
                    configured: CrmColumnType | None = table.types.get(column)
                    configured_type = sql_text(configured.type if configured else None)
                    configured_scale = configured.scale if configured and configured.scale is not None else "NULL"
                    logical = _logical_case(f"try_variant_get({field}, '$.name', 'string')")
                    values[name] = value
                    values[f"{name}_decoder"] = f"coalesce({logical}, {configured_type})"
                    values[f"{name}_scale"] = (f"coalesce(try_variant_get({field}, '$.parameters.scale', 'int'), "
                                               f"CAST({configured_scale} AS INT))")
                    encodings[f"{name}_unscaled"] = signed_decimal(
                        f"hex(try_to_binary(CASE {name}_decoder "
                        f"WHEN 'decimal' THEN try_variant_get({name}, '$', 'string') "
                        f"WHEN 'variable_scale_decimal' THEN try_variant_get({name}, '$.value', 'string') END, "
                        "'base64'))")
                    encodings[f"{name}_scale"] = (f"CASE {name}_decoder WHEN 'variable_scale_decimal' "
                                                  f"THEN try_variant_get({name}, '$.scale', 'int') "
                                                  f"ELSE {name}_scale END")
                    texts[f"{name}_text"] = self._decoded(name)
        return [rows, values, encodings, texts]

    @staticmethod
    def _decoded(name: str) -> str:
        """The value as text, by its decoder (null: as sent; MongoDB's {"$oid": ...} and
        {"$numberLong": ...} as their text)."""
        as_long = f"try_variant_get({name}, '$', 'bigint')"
        nanos_as_micros = f"{as_long} DIV 1000"
        return (f"CASE {name}_decoder "
                f"WHEN 'decimal' THEN {scaled_text(f'{name}_unscaled', f'{name}_scale')} "
                f"WHEN 'variable_scale_decimal' THEN {scaled_text(f'{name}_unscaled', f'{name}_scale')} "
                f"WHEN 'date' THEN CAST(date_from_unix_date(try_variant_get({name}, '$', 'int')) AS STRING) "
                f"WHEN 'timestamp' THEN {_clock('MILLISECOND', as_long, True, 'SSS')} "
                f"WHEN 'micro_timestamp' THEN {_clock('MICROSECOND', as_long, True, 'SSSSSS')} "
                f"WHEN 'nano_timestamp' THEN {_clock('MICROSECOND', nanos_as_micros, True, 'SSSSSS')} "
                f"WHEN 'time' THEN {_clock('MILLISECOND', as_long, False, 'SSS')} "
                f"WHEN 'micro_time' THEN {_clock('MICROSECOND', as_long, False, 'SSSSSS')} "
                f"WHEN 'nano_time' THEN {_clock('MICROSECOND', nanos_as_micros, False, 'SSSSSS')} "
                f"ELSE coalesce(try_variant_get({name}, '$[\"$oid\"]', 'string'), "
                f"try_variant_get({name}, '$[\"$numberLong\"]', 'string'), try_variant_get({name}, '$', 'string')) END")

    def text(self, table_index: int, side: str, column: str) -> str:
        return f"{self._name(table_index, side, column)}_text"

    def present(self, table_index: int, side: str, column: str) -> str:
        return f"({self._name(table_index, side, column)} IS NOT NULL)"

    def is_null(self, table_index: int, side: str, column: str) -> str:
        return f"coalesce(is_variant_null({self._name(table_index, side, column)}), FALSE)"

    def exists(self, side: str) -> str:
        return f"({self.row(side)} IS NOT NULL AND NOT coalesce(is_variant_null({self.row(side)}), FALSE))"

    def undecodable(self, table_index: int, side: str, column: str) -> str:
        """A value is sent, not null, and its decoding gives nothing."""
        return (f"({self.present(table_index, side, column)} AND NOT {self.is_null(table_index, side, column)} "
                f"AND {self.text(table_index, side, column)} IS NULL)")

    def user_id(self, table_index: int, side: str) -> str:
        keys = list(self.tables.values())[table_index].key
        texts = [self.text(table_index, side, key) for key in keys]
        every = " AND ".join(f"{text} IS NOT NULL" for text in texts)
        return f"CASE WHEN {self.exists(side)} AND {every} THEN concat_ws(':', {', '.join(texts)}) END"

    def canonical(self, table_index: int, side: str, user_id: str) -> str:
        """The row as JSON text: `user_id` and each mapped column sent, under its profile
        field's name (null for a JSON null); null when the change has no such row."""
        table = list(self.tables.values())[table_index]
        fragments = [_field_json("user_id", f"to_json(CAST({user_id} AS VARIANT))")]
        for column, field in table.columns.items():
            value = (f"CASE WHEN {self.is_null(table_index, side, column)} THEN 'null' "
                     f"ELSE to_json(CAST({self.text(table_index, side, column)} AS VARIANT)) END")
            sent = self.present(table_index, side, column)
            fragments.append(f"CASE WHEN {sent} THEN {_field_json(field, value)} END")
        return f"CASE WHEN {self.exists(side)} THEN {_object_json(fragments)} END"


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
