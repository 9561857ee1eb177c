"""Profiles from change events, as pure DataFrame -> DataFrame steps (the writes are in
`pipelines.profiles.writes`).

The model. A profile is a set of registers (`schemas.REGISTERS`): email, phone, each name
field, each preference, each consent purpose. A change event sets some registers, each
stamped with the change's sequence (event time, then the CRM log position, then
event_id). A register only ever takes a value from a change newer than the one that set
it last, so partial updates (a preference change, a profile_upsert naming two fields, a
CRM update that changed one column) and out-of-order arrival all end in the same state.
A delete (CRM op d, or an erasure request) drops every change at or before it, stored or
arriving later; changes after it start a new profile.

The steps:
  bronze rows --change_rows--> one row per change, registers as struct(seq, values)
              --protect_pii--> email, phone and names encrypted, identities hashed (no clear text after this)
              --after_deletes--> changes a delete (stored or in the batch) supersedes are dropped
              --latest_per_user--> one row per user: the newest value of each register
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import pandas as pd
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from pipelines.contracts.events import CONSENT_PURPOSES, payload_schema
from pipelines.ingest.validation import CRM_EVENT_TYPE
from pipelines.pii import PiiKeys, email_hash, encrypt, keyed_hash, subject_hash, subject_hash_under
from pipelines.schemas import (
    CONSENT_REGISTERS,
    HISTORY_TRACKABLE,
    PERSON_REGISTERS,
    PREFERENCE_REGISTERS,
    PROFILE_VALUE_TYPES,
    REGISTERS,
)

PROFILE_EVENT_TYPES = (CRM_EVENT_TYPE, "profile_upsert", "preference_update", "consent_update",
                       "unsubscribe", "email_complaint", "erasure_request")
# Events that withdraw email consent without naming a purpose.
EMAIL_OPT_OUTS = ("unsubscribe", "email_complaint")
# Person fields stored encrypted (`<field>_encrypted`, `<field>_key_id`); the rest in clear.
ENCRYPTED_PERSON_FIELDS = ("email", "phone", "first_name", "last_name")
_PLAIN_PERSON_FIELDS = ("country", "locale")
_NAME_FIELDS = ("first_name", "last_name")
# The preferences a preference_update may carry (the contract names them), each read as
# the type silver.profiles stores it in.
_PREFERENCE_TYPES = {name: PROFILE_VALUE_TYPES[name].simpleString()
                     for name in payload_schema("preference_update", 1)["properties"]}


def sequence_column() -> Column:
    is_crm = F.col("event_type") == CRM_EVENT_TYPE
    # Bronze rows ingested before `position` existed carry PostgreSQL's lsn only; padded the
    # same way, they sort with the new ones.
    legacy = F.lpad(F.try_variant_get(F.col("_v"), "$.source.lsn", "bigint").cast("string"), 20, "0")
    log_position = F.when(is_crm, F.coalesce(F.try_variant_get(F.col("_v"), "$.position", "string"), legacy))
    return F.struct(F.unix_millis("occurred_at").alias("ts_ms"), log_position.alias("position"),
                    F.col("event_id").alias("event_id"))


def _present(v: Column, path: str) -> Column:
    """The key exists (its value may be JSON null)."""
    return F.try_variant_get(v, path, "variant").isNotNull()


def _is_json_null(v: Column, path: str) -> Column:
    return F.coalesce(F.is_variant_null(F.try_variant_get(v, path, "variant")), F.lit(False))


def _person_field_set(name: str, ignore_null_updates: bool) -> Column:
    """Whether a change sets person field `name`.

    CRM c/r/u: the key is in `after`, and, when Debezium sent the old row too, the value
    differs from `before` (an update sets only what it changed). profile_upsert: the key
    is in the payload. With ignore_null_updates, a null never sets a field."""
    v = F.col("_v")
    crm_upsert = (F.col("event_type") == CRM_EVENT_TYPE) & F.col("_op").isin("c", "r", "u")
    has_before = _present(v, "$.before") & ~_is_json_null(v, "$.before") & _present(v, f"$.before.{name}")
    unchanged = has_before & (F.to_json(F.try_variant_get(v, f"$.before.{name}", "variant"))
                              == F.to_json(F.try_variant_get(v, f"$.after.{name}", "variant")))
    crm_sets = crm_upsert & _present(v, f"$.after.{name}") & ~unchanged
    upsert_sets = (F.col("event_type") == "profile_upsert") & _present(v, f"$.{name}")
    sets = crm_sets | upsert_sets
    if ignore_null_updates:
        null_value = F.when(crm_upsert, _is_json_null(v, f"$.after.{name}")).otherwise(_is_json_null(v, f"$.{name}"))
        sets = sets & ~null_value
    return F.coalesce(sets, F.lit(False))


def _person_field_value(name: str) -> Column:
    v = F.col("_v")
    return F.when(F.col("event_type") == CRM_EVENT_TYPE, F.try_variant_get(v, f"$.after.{name}", "string")) \
        .otherwise(F.try_variant_get(v, f"$.{name}", "string"))


def _register(is_set: Column, **values: Column) -> Column:
    """struct(seq, values...) when the change sets the register, else null. seq comes
    first, so max() over registers picks the newest change."""
    return F.when(is_set, F.struct(F.col("seq").alias("seq"), *[value.alias(name) for name, value in values.items()]))


def change_rows(ignore_null_updates: bool) -> Callable[[DataFrame], DataFrame]:
    """bronze.events rows of PROFILE_EVENT_TYPES -> one row per change: its sequence,
    whether it deletes, and each register it sets. Email, phone and names are still clear
    text here (`_email`, `_first_name`...); `protect_pii` must follow."""
    stages = _change_stages(ignore_null_updates)

    def transform(events: DataFrame) -> DataFrame:
        df = events.where(F.col("event_type").isin(*PROFILE_EVENT_TYPES))
        for stage in stages:
            df = df.withColumns(stage)
        return df.drop("_v", "_op", "_purpose", "_status")

    return transform


@functools.cache
def _change_stages(ignore_null_updates: bool) -> tuple[dict[str, Column], ...]:
    """change_rows' columns, in stages that each read only what earlier ones added: one
    withColumns per stage (each withColumn analyses the whole plan again), and built once
    per process, as they depend on no data (a micro-batch used to build them again)."""
    v = F.col("_v")
    parsed = {"_v": F.parse_json("payload")}
    operation = {"_op": F.when(F.col("event_type") == CRM_EVENT_TYPE, F.try_variant_get(v, "$.op", "string"))}
    sequenced: dict[str, Column] = {
        "seq": sequence_column(),
        "is_delete": (F.col("event_type") == "erasure_request") | F.coalesce(F.col("_op") == "d", F.lit(False)),
        # A row deleted from a table that does not delete the person (an address):
        # it clears fields of a profile and never creates one.
        "only_clears": (F.col("event_type") == CRM_EVENT_TYPE)
        & F.coalesce(F.try_variant_get(v, "$.clears_fields", "boolean"), F.lit(False)),
    }
    for name in ENCRYPTED_PERSON_FIELDS:
        sequenced[f"_{name}_set"] = _person_field_set(name, ignore_null_updates)
    registers: dict[str, Column] = {
        f"_{name}": F.when(F.col(f"_{name}_set"), _person_field_value(name)) for name in ENCRYPTED_PERSON_FIELDS}
    for name in _PLAIN_PERSON_FIELDS:
        registers[name] = _register(_person_field_set(name, ignore_null_updates), **{name: _person_field_value(name)})
    is_preference = F.col("event_type") == "preference_update"
    for name, kind in _PREFERENCE_TYPES.items():
        registers[name] = _register(is_preference & _present(v, f"$.{name}"),
                                    **{name: F.try_variant_get(v, f"$.{name}", kind)})
    is_consent = F.col("event_type") == "consent_update"
    is_opt_out = F.col("event_type").isin(*EMAIL_OPT_OUTS)
    registers["_purpose"] = F.when(is_consent, F.try_variant_get(v, "$.purpose", "string")) \
        .when(is_opt_out, F.lit("email_marketing"))
    registers["_status"] = F.when(is_consent, F.try_variant_get(v, "$.status", "string")) \
        .when(is_opt_out, F.lit("revoked"))
    names_actor = is_consent | (F.col("event_type") == "erasure_request")
    registers["actor"] = F.when(names_actor, F.try_variant_get(v, "$.actor", "string")) \
        .when(is_opt_out, F.col("event_type"))
    consents: dict[str, Column] = {}
    for purpose_name in CONSENT_PURPOSES:
        matches = F.coalesce(F.col("_purpose") == purpose_name, F.lit(False))
        consents[f"consent_{purpose_name}"] = _register(
            matches, status=F.col("_status"), source=F.col("source"), actor=F.col("actor"),
            updated_at=F.col("occurred_at"))
        consents[f"_granted_{purpose_name}"] = F.when(matches & (F.col("_status") == "granted"), F.col("occurred_at"))
        consents[f"_revoked_{purpose_name}"] = F.when(matches & (F.col("_status") == "revoked"), F.col("occurred_at"))
    return parsed, operation, sequenced, registers, consents


PII_COLUMNS = StructType([
    StructField("subject_hash", StringType()),
    StructField("event_ref", StringType()),   # keyed hash of event_id: a CRM event_id holds the user_id
    StructField("email_hash", StringType()),
    *[StructField(f"{name}_{part}", kind) for name in ENCRYPTED_PERSON_FIELDS
      for part, kind in (("encrypted", BinaryType()), ("key_id", StringType()))],
])


def protect_pii(keys: PiiKeys) -> Callable[[DataFrame], DataFrame]:
    """Encrypt email, phone and names, hash the email and the user_id; drop the clear text.
    A blank name is stored as no name: nothing downstream could tell it from one without
    decrypting it.

    An Arrow UDF running `cryptography` rather than Spark's aes_encrypt: a key passed to
    a Spark expression is a literal in the query plan, which explain(), the Spark UI and
    event logs show. Profile changes are a thin stream next to behaviour events."""

    def sealed(field: str, value) -> tuple[bytes | None, str | None]:
        if not isinstance(value, str) or (field in _NAME_FIELDS and not value.strip()):
            return None, None
        return encrypt(keys, value)

    @F.pandas_udf(PII_COLUMNS)
    def protect(user_id: pd.Series, event_id: pd.Series, email: pd.Series, phone: pd.Series,
                first_name: pd.Series, last_name: pd.Series) -> pd.DataFrame:
        rows = []
        for user, event, *values in zip(user_id, event_id, email, phone, first_name, last_name, strict=True):
            address = values[0]
            row = [subject_hash(keys, user), keyed_hash(keys.hmac_key, "event:" + event),
                   email_hash(keys, address) if isinstance(address, str) else None]
            for field, value in zip(ENCRYPTED_PERSON_FIELDS, values, strict=True):
                row.extend(sealed(field, value))
            rows.append(row)
        return pd.DataFrame(rows, columns=PII_COLUMNS.fieldNames())

    def transform(changes: DataFrame) -> DataFrame:
        protected = F.col("_protected")
        registers = {name: _register(F.col(f"_{name}_set"), **{column: protected[column]
                                                                for column in PERSON_REGISTERS[name]})
                     for name in ENCRYPTED_PERSON_FIELDS}
        return (changes.withColumn("_protected", protect("user_id", "event_id",
                                                         *[f"_{name}" for name in ENCRYPTED_PERSON_FIELDS]))
                .withColumns({"subject_hash": protected["subject_hash"], "event_ref": protected["event_ref"],
                              **registers})
                .drop("_protected", *[f"_{name}" for name in ENCRYPTED_PERSON_FIELDS],
                      *[f"_{name}_set" for name in ENCRYPTED_PERSON_FIELDS]))

    return transform


def _sets_any(registers) -> Column:
    return F.greatest(*[F.col(name).isNotNull() for name in registers]) if len(registers) > 1 \
        else F.col(next(iter(registers))).isNotNull()


def position(sequence: Column) -> Column:
    """A sequence without its event_id. A tombstone keeps only this (a CRM event_id names
    the user), so a delete is compared by it everywhere, not only against tombstones."""
    return F.when(sequence.isNotNull(),
                  F.struct(sequence["ts_ms"].alias("ts_ms"), sequence["position"].alias("position")))


def deleted_by(sequence: Column, delete: Column) -> Column:
    """Whether the delete at `delete` supersedes the change at `sequence`: the one order
    is (time, position, change before delete, event_id), so a delete wins a tie with a
    change at the same time and position, whichever event_id is larger and whether the
    two arrive in one micro-batch or in two. Null when either is null."""
    return position(sequence) <= position(delete)


def stored_position(event_type: Column, payload: Column) -> Column:
    """A bronze.events row's CRM log position, read from its payload text, as
    sequence_column gives it; null for a first-party event, and for a change that only
    clears fields (a row deleted from an address table): it can never start a new life of
    the id, so in its delete's millisecond it goes with the delete, though a cascade writes
    it at a later log position."""
    legacy = F.lpad(F.get_json_object(payload, "$.source.lsn"), 20, "0")
    only_clears = F.coalesce(F.get_json_object(payload, "$.clears_fields") == "true", F.lit(False))
    return F.when((event_type == CRM_EVENT_TYPE) & ~only_clears,
                  F.coalesce(F.get_json_object(payload, "$.position"), legacy))


def event_erased(occurred_at: Column, log_position: Column, delete: Column) -> Column:
    """Whether a stored event (its time and, for a CRM change, its log position) is at or
    before `delete`: deleted_by for a row that keeps no sequence. Times compare by the
    millisecond, as sequences do, so an event stamped in the delete's millisecond but
    after it by a few microseconds still goes."""
    return F.struct(F.unix_millis(occurred_at).alias("ts_ms"), log_position.alias("position")) <= position(delete)


def after_deletes(tombstones: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """Drop changes a delete supersedes: those at or before the user's stored tombstone,
    and those at or before the newest delete in this batch (the delete itself stays).
    Adds `batch_delete`: that delete's sequence when it is newer than the stored one."""

    def transform(changes: DataFrame) -> DataFrame:
        stored = tombstones.select("subject_hash", position(F.col("deleted_sequence")).alias("_stored_delete"))
        by_user = Window.partitionBy("user_id")
        return (changes.join(stored, "subject_hash", "left")
                .where(F.col("_stored_delete").isNull() | (position(F.col("seq")) > F.col("_stored_delete")))
                .withColumn("batch_delete", F.max(F.when(F.col("is_delete"), F.col("seq"))).over(by_user))
                .where(F.col("batch_delete").isNull() | ~deleted_by(F.col("seq"), F.col("batch_delete"))
                       | (F.col("is_delete") & (F.col("seq") == F.col("batch_delete"))))
                .drop("_stored_delete"))

    return transform


def latest_per_user(changes: DataFrame) -> DataFrame:
    """One row per user: the newest change of each register, the latest grant and
    revocation per consent purpose, the delete this batch applies, and the newest
    sequence among the registers set."""
    sets_register = _sets_any(REGISTERS)
    aggregates = [F.first("subject_hash").alias("subject_hash"),
                  F.max("batch_delete").alias("delete_seq"),
                  F.max(F.when(sets_register, F.col("seq"))).alias("max_seq"),
                  F.min(F.when(sets_register, F.col("occurred_at"))).alias("first_seen"),
                  # null when the batch only deletes the user
                  F.max(F.when(~F.col("is_delete"), ~F.col("only_clears"))).alias("can_create")]
    aggregates += [F.max(name).alias(name) for name in REGISTERS]
    for purpose in CONSENT_PURPOSES:
        aggregates += [F.max(f"_granted_{purpose}").alias(f"_granted_{purpose}"),
                       F.max(f"_revoked_{purpose}").alias(f"_revoked_{purpose}")]
    return changes.groupBy("user_id").agg(*aggregates)


def erasures(latest: DataFrame) -> DataFrame:
    """Users this batch deletes: user_id, subject_hash, the delete's sequence and time."""
    return (latest.where(F.col("delete_seq").isNotNull())
            .select("user_id", "subject_hash", F.col("delete_seq").alias("deleted_sequence"),
                    F.timestamp_millis(F.col("delete_seq.ts_ms")).alias("deleted_at")))


def erased_users(tombstones: DataFrame, hmac_key: bytes) -> Callable[[DataFrame], DataFrame]:
    """user_ids -> (user_id, erased_through, erased_position) for those with an erasure
    tombstone: the end of the delete's millisecond (an event at or before it is erased,
    as sequences compare by the millisecond) and its position, for event_erased. The
    tombstones hold keyed hashes, so each distinct user_id is hashed (an Arrow UDF: Spark
    has no HMAC, and a key in a Spark expression would show in the query plan)."""

    @F.pandas_udf(StringType())
    def hashed(user_ids: pd.Series) -> pd.Series:
        return user_ids.map(lambda user_id: subject_hash_under(hmac_key, user_id))

    def transform(users: DataFrame) -> DataFrame:
        end_of_millisecond = F.timestamp_micros(F.col("deleted_sequence.ts_ms") * 1000 + 999)
        erasures = tombstones.select("subject_hash", end_of_millisecond.alias("erased_through"),
                                     position(F.col("deleted_sequence")).alias("erased_position"))
        # Catalogue events name no one: a null id must never reach the hash.
        return (users.select("user_id").where(F.col("user_id").isNotNull()).distinct()
                .withColumn("subject_hash", hashed("user_id"))
                .join(erasures, "subject_hash")
                .select("user_id", "erased_through", "erased_position"))

    return transform


def stragglers(erased: DataFrame) -> Callable[[DataFrame], DataFrame]:
    """bronze.events rows of erased people that occurred at or before their erasure and
    reached bronze after it was applied (a phone syncing events it kept offline): the keys
    a purge needs, (event_date, event_id, user_id). `erased` is erased_users' output."""

    def transform(events: DataFrame) -> DataFrame:
        return (events.join(F.broadcast(erased), "user_id")
                .where(event_erased(F.col("occurred_at"), stored_position(F.col("event_type"), F.col("payload")),
                                    F.col("erased_position")))
                .select("event_date", "event_id", "user_id").distinct())

    return transform


def _json_values_of(name: str) -> list[Column]:
    """Every `"name": "text"` and `"name": 123` in a record's text, read with regular
    expressions: a quarantined record need not parse."""
    text = F.col("raw").cast("string")
    literal = f"\\Q{name}\\E"  # a column name may hold $, ( or +: quoted, it matches itself
    quoted = F.regexp_extract_all(text, F.lit(f'"{literal}"\\s*:\\s*"([^"\\\\]{{1,256}})"'), F.lit(1))
    number = F.regexp_extract_all(text, F.lit(f'"{literal}"\\s*:\\s*(-?[0-9]{{1,38}})(?![0-9.eE])'), F.lit(1))
    return [quoted, number]


def named_user_ids(key_columns: tuple[str, ...]) -> Column:
    """The user ids a raw record names: its `user_id` fields and, for CRM changes, the
    values of single-column keys (`crm.tables`); an array, maybe empty."""
    names = dict.fromkeys(("user_id", *key_columns))
    return F.array_distinct(F.flatten(F.array(*[values for name in names for values in _json_values_of(name)])))


def tombstone_rows(gone: DataFrame) -> DataFrame:
    return gone.select("subject_hash", F.struct(
        F.col("deleted_sequence.ts_ms").alias("ts_ms"), F.col("deleted_sequence.position").alias("position"),
        F.lit(None).cast("string").alias("event_id")).alias("deleted_sequence"), F.col("deleted_at").alias("erased_at"))


# ---- the MERGE into silver.profiles, as expressions over t (target) and s (source) ----
#
# Built once per process: they depend on no data, and building them is a few thousand
# calls from Python into the JVM (about 2 s), which every micro-batch used to pay again.

def _newer(register: str) -> Column:
    stored = F.col(f"t._field_sequences.{register}")
    return F.col(f"s.{register}").isNotNull() & (stored.isNull() | (F.col(f"s.{register}.seq") > stored))


def _cleared(register: str) -> Column:
    """A delete in this batch is newer than the change that set the stored register."""
    return F.coalesce(deleted_by(F.col(f"t._field_sequences.{register}"), F.col("s.delete_seq")), F.lit(False))


def _wiped() -> Column:
    """The batch's delete is newer than every stored register: nothing stored survives."""
    return F.coalesce(F.col("s.delete_seq").isNotNull()
                      & (F.col("t._sequence").isNull() | deleted_by(F.col("t._sequence"), F.col("s.delete_seq"))),
                      F.lit(False))


def _erased_time(stored: Column) -> Column:
    """A stored grant or revocation time at or before the batch's delete: it goes with the
    delete even when a later change keeps the register. Grants and revocations carry no log
    position, so their millisecond alone places them (at or before a delete in it)."""
    return F.coalesce(event_erased(stored, F.lit(None).cast("string"), F.col("s.delete_seq")), F.lit(False))


def _consent_value(register: str, purpose: str, target: bool) -> Column:
    new = F.col(f"s.{register}")
    granted, revoked = F.col(f"s._granted_{purpose}"), F.col(f"s._revoked_{purpose}")
    if not target:
        return F.when(new.isNotNull(), F.struct(new["status"].alias("status"), granted.alias("granted_at"),
                                                revoked.alias("revoked_at"), new["source"].alias("source"),
                                                new["actor"].alias("actor"), new["updated_at"].alias("updated_at")))
    old = F.col(f"t.{register}")
    newer, cleared = _newer(register), _cleared(register)

    def pick(field: str) -> Column:
        return F.when(newer, new[field]).when(cleared, F.lit(None)).otherwise(old[field])

    def latest(field: str, incoming: Column) -> Column:
        erased = cleared | _erased_time(old[field])
        return F.when(erased, incoming).otherwise(F.greatest(old[field], incoming))

    status = pick("status")
    return F.when(status.isNotNull(), F.struct(
        status.alias("status"), latest("granted_at", granted).alias("granted_at"),
        latest("revoked_at", revoked).alias("revoked_at"), pick("source").alias("source"),
        pick("actor").alias("actor"), pick("updated_at").alias("updated_at")))


def _new_field_sequence(register: str) -> Column:
    return (F.when(_newer(register), F.col(f"s.{register}.seq"))
            .when(_cleared(register), F.lit(None))
            .otherwise(F.col(f"t._field_sequences.{register}")))


def profile_update_set() -> dict[str, Column]:
    """Column -> new value for a matched row."""
    return dict(_profile_update_set())


@functools.cache
def _profile_update_set() -> dict[str, Column]:
    values: dict[str, Column] = {}
    for register, columns in {**PERSON_REGISTERS, **PREFERENCE_REGISTERS}.items():
        for column in columns:
            values[column] = (F.when(_newer(register), F.col(f"s.{register}.{column}"))
                              .when(_cleared(register), F.lit(None).cast(PROFILE_VALUE_TYPES[column]))
                              .otherwise(F.col(f"t.{column}")))
    for purpose in CONSENT_PURPOSES:
        register = f"consent_{purpose}"
        values[register] = _consent_value(register, purpose, target=True)
    sequences = [_new_field_sequence(register).alias(register) for register in REGISTERS]
    newest = F.greatest(*[_new_field_sequence(register) for register in REGISTERS])
    values["_field_sequences"] = F.struct(*sequences)
    values["_sequence"] = newest
    values["first_seen_at"] = F.when(_wiped(), F.col("s.first_seen")) \
        .otherwise(F.least(F.col("t.first_seen_at"), F.col("s.first_seen")))
    values["updated_at"] = F.timestamp_millis(newest["ts_ms"])
    return values


def profile_insert_values() -> dict[str, Column]:
    return dict(_profile_insert_values())


@functools.cache
def _profile_insert_values() -> dict[str, Column]:
    values: dict[str, Column] = {"user_id": F.col("s.user_id")}
    for register, columns in {**PERSON_REGISTERS, **PREFERENCE_REGISTERS}.items():
        for column in columns:
            values[column] = F.col(f"s.{register}.{column}")
    for purpose in CONSENT_PURPOSES:
        values[f"consent_{purpose}"] = _consent_value(f"consent_{purpose}", purpose, target=False)
    values["_field_sequences"] = F.struct(*[F.col(f"s.{register}.seq").alias(register) for register in REGISTERS])
    values["_sequence"] = F.col("s.max_seq")
    values["first_seen_at"] = F.col("s.first_seen")
    values["updated_at"] = F.timestamp_millis(F.col("s.max_seq.ts_ms"))
    return values


@functools.cache
def profile_update_condition() -> Column:
    """Update only when something changes, so a redelivered change writes nothing."""
    conditions = [_newer(register) for register in REGISTERS] + [_cleared(register) for register in REGISTERS]
    for purpose in CONSENT_PURPOSES:
        for kind, field in (("granted", "granted_at"), ("revoked", "revoked_at")):
            incoming, stored = F.col(f"s._{kind}_{purpose}"), F.col(f"t.consent_{purpose}.{field}")
            conditions.append(incoming.isNotNull() & (stored.isNull() | (incoming > stored)))
            conditions.append(_erased_time(stored))
    return F.coalesce(F.greatest(*conditions), F.lit(False))


@functools.cache
def profile_delete_condition() -> Column:
    return _wiped() & F.col("s.max_seq").isNull()


# ---- SCD type 2 --------------------------------------------------------------------------

def history_versions(tracked: tuple[str, ...]) -> Callable[[DataFrame, DataFrame], DataFrame]:
    """(changes after deletes, stored history of the users they touch) -> the full
    history of those users.

    Every change that sets a tracked column opens a version at its sequence. The value of
    each column in a version is the newest setter at or before it, taken over the stored
    versions (which carry each column's setter) and the new changes together, so a late
    change lands between the versions it belongs between and later versions inherit it
    until the next setter."""

    touching, from_changes, from_versions, so_far, in_states, output = _history_expressions(tuple(tracked))

    def transform(changes: DataFrame, stored: DataFrame) -> DataFrame:
        points = changes.where(touching).select("user_id", F.col("seq").alias("point"), *from_changes)
        deletes = changes.groupBy("user_id").agg(F.max("batch_delete").alias("_delete"))
        points = points.unionByName(stored.join(deletes, "user_id", "left").select(
            "user_id", F.col("_sequence").alias("point"), *from_versions))
        states = points.select("user_id", "point", *so_far).groupBy("user_id", "point").agg(*in_states)
        return states.select(*output)

    return transform


@functools.cache
def _history_expressions(tracked: tuple[str, ...]) -> tuple[Column, list[Column], list[Column], list[Column],
                                                            list[Column], list[Column]]:
    """history_versions' expressions, built once per process: they depend on no data."""
    # `stored` breaks a tie between a stored version and its change delivered again: the
    # stored value wins, as the change's new ciphertext of the same name would otherwise
    # rewrite the version about half the time.
    def from_change(name: str) -> Column:
        register, columns = HISTORY_TRACKABLE[name]
        return F.when(F.col(register).isNotNull(), F.struct(
            F.col(f"{register}.seq").alias("seq"), F.lit(False).alias("stored"),
            F.struct(*[F.col(f"{register}.{column}").alias(column) for column in columns]).alias("value")))

    def from_version(name: str) -> Column:
        setter = F.col(f"_field_sequences.{name}")
        # A version after this batch's delete may carry a value it inherited from before it.
        survives = setter.isNotNull() & ~F.coalesce(deleted_by(setter, F.col("_delete")), F.lit(False))
        return F.when(survives, F.struct(setter.alias("seq"), F.lit(True).alias("stored"), F.struct(
            *[F.col(column) for column in HISTORY_TRACKABLE[name][1]]).alias("value")))

    touching = _sets_any([HISTORY_TRACKABLE[name][0] for name in tracked])
    so_far_window = Window.partitionBy("user_id").orderBy("point").rowsBetween(Window.unboundedPreceding, 0)
    in_order = Window.partitionBy("user_id").orderBy("point")
    valid_from = F.timestamp_millis(F.col("point.ts_ms"))
    valid_to = F.lead(valid_from).over(in_order)
    output = [F.col("user_id"), valid_from.alias("valid_from"), valid_to.alias("valid_to"),
              valid_to.isNull().alias("is_current"),
              *[F.col(f"{name}.value.{column}").alias(column) for name in tracked
                for column in HISTORY_TRACKABLE[name][1]],
              F.col("point").alias("_sequence"),
              F.struct(*[F.col(f"{name}.seq").alias(name) for name in tracked]).alias("_field_sequences")]
    return (touching, [from_change(c).alias(c) for c in tracked], [from_version(c).alias(c) for c in tracked],
            [F.max(c).over(so_far_window).alias(c) for c in tracked], [F.max(c).alias(c) for c in tracked], output)


# ---- audit.log ---------------------------------------------------------------------------

_AUDITED = {
    **{f"consent_{p}": ("consent", f"consent.{p}") for p in CONSENT_PURPOSES},
    **{name: ("preference", f"preference.{name}") for name in PREFERENCE_REGISTERS},
}


def _audited_value(register: str, prefix: str) -> Column:
    """A register's value as audit JSON; `prefix` is "" for a change row, "t." for stored."""
    if register in CONSENT_REGISTERS:
        value = F.col(f"{prefix}{register}")
        return F.when(value.isNotNull(), F.to_json(F.struct(value["status"].alias("status"),
                                                            value["source"].alias("source"),
                                                            value["actor"].alias("actor"))))
    if prefix:
        return F.when(F.col(f"{prefix}_field_sequences.{register}").isNotNull(),
                      F.to_json(F.struct(F.col(f"{prefix}{register}").alias(register))))
    return F.to_json(F.struct(F.col(f"{register}.{register}").alias(register)))


def batch_view_of_stored(profiles: DataFrame) -> DataFrame:
    """What a merge_profiles batch reads of the stored profiles before it writes: the id,
    the email hash (duplicate groups) and the audited registers with their sequences
    (audit_rows). Not the encrypted names and address, most of a row's bytes: this is a
    scan of the whole table in every batch, so its width is paid per stored profile."""
    audited = list(_AUDITED)
    return profiles.select(
        "user_id", "email_hash", *audited,
        F.struct(*[F.col(f"_field_sequences.{register}").alias(register) for register in audited])
        .alias("_field_sequences"))


def audit_rows(changes: DataFrame, stored_profiles: DataFrame) -> DataFrame:
    """One audit.log row per consent or preference value a change sets, and per erasure.

    `before` is the value just before the change in event time (the stored value, or an
    earlier change in the same batch); a change older than the stored one is recorded as
    `superseded`, since a newer decision already stands."""
    entries, stored_entries, output = _audit_expressions()
    events = (changes.select("user_id", "subject_hash", "event_ref", "event_type", "occurred_at", "source", "actor",
                             "seq", F.explode(entries).alias("entry"))
              .select("*", "entry.*").drop("entry"))
    stored = (stored_profiles.alias("t").select(F.col("t.user_id").alias("user_id"),
                                                F.explode(stored_entries).alias("stored"))
              .select("user_id", "stored.*"))
    return events.join(stored, ["user_id", "register"], "left").select(*output)


@functools.cache
def _audit_expressions() -> tuple[Column, Column, tuple[Column | str, ...]]:
    """audit_rows' expressions (a change's entries, a stored profile's, the output
    columns), built once per process like the MERGE's: they depend on no data."""
    entries = F.array(*[
        F.when(F.col(register).isNotNull(), F.struct(
            F.lit(action).alias("action"), F.lit(field).alias("field"), F.lit(register).alias("register"),
            _audited_value(register, "").alias("after")))
        for register, (action, field) in _AUDITED.items()
    ], F.when(F.col("is_delete"), F.struct(F.lit("erasure").alias("action"), F.lit(None).cast("string").alias("field"),
                                           F.lit(None).cast("string").alias("register"),
                                           F.lit(None).cast("string").alias("after"))))
    stored_entries = F.array(*[F.struct(F.lit(register).alias("register"),
                                        F.col(f"t._field_sequences.{register}").alias("stored_seq"),
                                        _audited_value(register, "t.").alias("stored_value"))
                               for register in _AUDITED])
    timeline = Window.partitionBy("user_id", "register").orderBy("seq")
    superseded = F.coalesce(F.col("stored_seq") >= F.col("seq"), F.lit(False))
    earlier_in_batch = F.lag("after").over(timeline)
    before = F.when(superseded, F.lit(None)).otherwise(
        F.when(F.lag("seq").over(timeline).isNotNull()
               & ~F.coalesce(F.lag("stored_seq").over(timeline) >= F.lag("seq").over(timeline), F.lit(False)),
               earlier_in_batch).otherwise(F.col("stored_value")))
    output = (
        F.concat_ws(":", "event_ref", F.coalesce("field", F.lit("erasure"))).alias("audit_id"),
        "subject_hash", "action", "field", before.alias("before"), "after",
        F.when(superseded, "superseded").otherwise("applied").alias("outcome"),
        F.coalesce("actor", F.when(F.col("event_type") == CRM_EVENT_TYPE, F.lit("crm"))).alias("actor"),
        "source", "event_ref", "occurred_at", F.current_timestamp().alias("recorded_at"))
    return F.filter(entries, lambda entry: entry.isNotNull()), stored_entries, output


# The API's own audit lines (api/consent.py), as `tailor maintain` loads them.
_API_AUDIT_LINE = ("audit_id STRING, at STRING, action STRING, subject_hash STRING, actor STRING, "
                   "before STRING, after STRING, request_ref STRING")
API_AUDIT_ACTIONS = {"preferences_changed": "preference", "erasure_requested": "erasure",
                     "suppressed_by_esp": "consent"}


def api_audit_rows(lines: DataFrame) -> DataFrame:
    """The API's audit lines (JSON text in `value`; other columns kept) as audit.log rows, with `readable`: false
    for a line that does not parse or lacks the person, the action or the time (a line the API
    is still writing, or a damaged one), whose other columns are then not to be used.

    A row says what the API was asked and did (outcome `requested`, source `api`): `field`
    is `api.<the API's action>`, `event_ref` the keyed hash of the request's id (a caller
    chooses its X-Request-Id, which may name someone; `unknown` for lines written without
    it). Lines written before they carried an audit_id get one from their own text, the same
    on every reading."""
    line = F.from_json("value", _API_AUDIT_LINE)
    action = F.coalesce(*[F.when(line["action"] == name, F.lit(kind)) for name, kind in API_AUDIT_ACTIONS.items()],
                        F.lit("consent"))
    occurred_at = F.try_to_timestamp(line["at"])
    return lines.select(
        *[name for name in lines.columns if name != "value"],
        F.concat(F.lit("api:"), F.coalesce(line["audit_id"], F.sha2("value", 256))).alias("audit_id"),
        line["subject_hash"].alias("subject_hash"),
        action.alias("action"),
        F.concat(F.lit("api."), line["action"]).alias("field"),
        line["before"].alias("before"),
        line["after"].alias("after"),
        F.lit("requested").alias("outcome"),
        line["actor"].alias("actor"),
        F.lit("api").alias("source"),
        F.coalesce(line["request_ref"], F.lit("unknown")).alias("event_ref"),
        occurred_at.alias("occurred_at"),
        F.current_timestamp().alias("recorded_at"),
        F.coalesce(line["subject_hash"].isNotNull() & line["action"].isNotNull() & occurred_at.isNotNull(),
                   F.lit(False)).alias("readable"),
    )


# ---- duplicate profiles -------------------------------------------------------------------

def duplicate_groups(profiles: DataFrame) -> DataFrame:
    """Each email_hash several user_ids share: the duplicates data quality checks look at."""
    return (profiles.where(F.col("email_hash").isNotNull())
            .groupBy("email_hash")
            .agg(F.sort_array(F.collect_list("user_id")).alias("user_ids"), F.count("*").alias("profile_count"))
            .where(F.col("profile_count") > 1))


def duplicate_group_changes(groups: DataFrame, listed: DataFrame) -> DataFrame:
    """The rows of `groups` (a touched email_hash with its group, or a null group when it
    no longer has one) that change `listed` (silver.duplicate_profiles): a new group, a
    changed one, or one that is gone. Most batches change none, and their MERGE is skipped."""
    stored = listed.select("email_hash", F.col("user_ids").alias("_listed_user_ids"), F.lit(True).alias("_listed"))
    is_listed = F.coalesce(F.col("_listed"), F.lit(False))
    has_group = F.col("profile_count").isNotNull()
    return (groups.join(stored, "email_hash", "left")
            .where((is_listed & ~F.col("user_ids").eqNullSafe(F.col("_listed_user_ids"))) | (~is_listed & has_group))
            .drop("_listed_user_ids", "_listed"))
