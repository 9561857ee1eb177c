"""merge_profiles' batch writer on hand-written change histories: the final tables are
written down by hand and must not depend on arrival order or on how changes are split
into micro-batches."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
from chispa import assert_df_equality
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from pipelines.config import CrmColumnType, CrmTableConfig, load_config
from pipelines.errors import EnvironmentProblem
from pipelines.ingest.writes import ensure_bronze_tables
from pipelines.pii import load_keys
from pipelines.profiles.transforms import duplicate_group_changes, named_user_ids
from pipelines.profiles.writes import ProfilesBatchWriter, ensure_profile_tables
from pipelines.runtime.delta_tables import ensure_table, read_table, save
from pipelines.schemas import BRONZE_EVENTS, PROFILES
from tests.profile_events import crm, event, millis, person, pii_keys_in_env, to_bronze
from tests.settings import SPARK_TEST_SETTINGS

ENCRYPTION_KEY, HMAC_KEY = os.urandom(32), os.urandom(32)

ADA = person("u-1", email="ada@example.com", first_name="Ada", last_name="Lovelace", country="GB", locale="en-GB")
ADA_FR = {**ADA, "country": "FR"}
ADA_PHONE = {**ADA_FR, "phone": "+44 20 7946 0001", "locale": "fr-FR"}
BOB = person("u-2", email="bob@example.com", first_name="Bob", last_name="Stone", country="GB")
CLEO = person("u-3", email="cleo@example.com", first_name="Cleo", last_name="Jones", phone="+44 20 7946 0003",
              country="GB", locale="en-GB")
OLD_EVE = person("u-5", email="old5@example.com", first_name="Evelyn", last_name="Old", country="GB")
NEW_EVE = person("u-5", email="new5@example.com", first_name="Eve", country="IE")

# name -> change, as it arrives. Times are event times; lsn is the CRM log position.
CHANGES = {
    "ada_create": crm("c", 100, "2026-11-01T10:00:00Z", after=ADA),
    "ada_moves": crm("u", 200, "2026-11-02T10:00:00Z", before=ADA, after=ADA_FR),
    "ada_renamed_on_web": event("profile_upsert", "u-1", "2026-11-02T12:00:00Z", {"first_name": "Augusta"},
                                "e-ada-web", source="web"),
    # The CRM did not see the web rename: its old and new rows both say Ada, so the
    # update sets only what it changed (phone, locale).
    "ada_phone": crm("u", 300, "2026-11-03T10:00:00Z", before=ADA_FR, after=ADA_PHONE, wrapped=True),
    "bob_create": crm("c", 110, "2026-11-01T11:00:00Z", after=BOB),
    "bob_late_update": crm("u", 150, "2026-11-01T12:00:00Z", before=BOB, after={**BOB, "country": "US"}),
    "bob_delete": crm("d", 400, "2026-11-04T11:00:00Z", before=BOB),
    "cleo_snapshot": crm("r", 50, "2026-10-31T08:00:00Z", after=CLEO),
    "cleo_drops_phone": crm("u", 250, "2026-11-02T09:00:00Z", before=CLEO, after={**CLEO, "phone": None}),
    "dan_grants": event("consent_update", "u-4", "2026-11-01T09:00:00Z",
                        {"purpose": "email_marketing", "status": "granted", "actor": "subscriber"}, "e-dan-1"),
    "dan_topics": event("preference_update", "u-4", "2026-11-01T09:05:00Z",
                        {"topics": ["garden", "kitchen"], "language": "en"}, "e-dan-2"),
    "dan_revokes": event("consent_update", "u-4", "2026-11-03T09:00:00Z",
                         {"purpose": "email_marketing", "status": "revoked", "actor": "subscriber"}, "e-dan-3"),
    "dan_grants_again": event("consent_update", "u-4", "2026-11-04T09:00:00Z",
                              {"purpose": "email_marketing", "status": "granted", "actor": "subscriber"}, "e-dan-4"),
    "dan_unsubscribes": event("unsubscribe", "u-4", "2026-11-05T20:00:00Z", {"scope": "all"}, "e-dan-5",
                              source="esp"),
    "dan_cap": event("preference_update", "u-4", "2026-11-02T09:00:00Z", {"frequency_cap_per_week": 3}, "e-dan-6"),
    "eve_create": crm("c", 120, "2026-11-01T08:00:00Z", after=OLD_EVE),
    "eve_delete": crm("d", 320, "2026-11-03T08:00:00Z", before=OLD_EVE),
    "eve_returns": crm("c", 330, "2026-11-03T12:00:00Z", after=NEW_EVE),
}
NAMES = list(CHANGES)

# Arrival orders, each split into micro-batches; duplicates are redeliveries.
ORDERS = {
    "as_written_one_batch": [NAMES],
    "reversed_three_batches": [NAMES[::-1][:6], NAMES[::-1][6:12], NAMES[::-1][12:]],
    "interleaved_with_duplicates": [
        ["bob_delete", "eve_returns", "dan_unsubscribes", "ada_phone", "cleo_drops_phone", "dan_revokes"],
        ["ada_renamed_on_web", "bob_late_update", "eve_delete", "dan_cap", "ada_phone", "dan_grants_again"],
        ["cleo_snapshot", "ada_create", "bob_create", "eve_create", "dan_grants", "dan_topics", "ada_moves",
         "bob_late_update", "eve_delete"],
    ],
}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def pii_env():
    with pii_keys_in_env("test1", ENCRYPTION_KEY, HMAC_KEY):
        yield


@pytest.fixture(scope="module")
def bronze_by_name(spark, pii_env):
    """Each change as its bronze.events row, through the ingest validation (once)."""
    rows = to_bronze(spark, list(CHANGES.values())).collect()
    by_id = {row.event_id: row for row in rows}
    ids = {}
    for name, change in CHANGES.items():
        if "event_type" in change:
            ids[name] = change["event_id"]
        else:
            body = change.get("payload", change)
            row = body["after"] or body["before"]
            ids[name] = f"crm:crm.customers:{body['source']['lsn']}:{body['op']}:{row['user_id']}"
    return {name: by_id[event_id] for name, event_id in ids.items()}


@pytest.fixture(scope="module")
def empty_tables(spark, tmp_path_factory) -> Path:
    """A storage root holding the bronze and profile tables, empty, created once: each test
    writes to its own copy (creating eight tables costs seconds; copying them, nothing).
    Made with the default config: a test overriding a setting that shapes a table (such as
    profiles.history_columns) must create its own tables."""
    root = tmp_path_factory.mktemp("empty-tables")
    config = load_config("local", [f"storage.root={root}", *SPARK_TEST_SETTINGS])
    ensure_bronze_tables(spark, config)
    ensure_profile_tables(spark, config)
    return root


class Run:
    def __init__(self, spark, root: Path, empty_tables: Path, *overrides: str):
        self.spark = spark
        shutil.copytree(empty_tables, root, dirs_exist_ok=True)
        self.config = load_config("local", [f"storage.root={root}", *SPARK_TEST_SETTINGS, *overrides])
        self.conflicts = 0
        self.writer = ProfilesBatchWriter(self.config, load_keys(self.config), f"tailor.test.{uuid.uuid4()}",
                                          on_conflict=self._count_conflict)

    def _count_conflict(self, _attempt: int) -> None:
        self.conflicts += 1

    def feed(self, bronze_by_name, batches) -> Run:
        for batch_id, names in enumerate(batches):
            frame = self.spark.createDataFrame([bronze_by_name[name] for name in names], BRONZE_EVENTS)
            self.writer(frame, batch_id)
        return self

    def table(self, name: str):
        return read_table(self.spark, self.config.table(name))


def _decrypt(blob, key_id):
    if blob is None:
        return None
    assert key_id == "test1"
    blob = bytes(blob)
    return AESGCM(ENCRYPTION_KEY).decrypt(blob[:12], blob[12:], None).decode()


def _email_hash(address):
    return hmac.new(HMAC_KEY, address.encode(), hashlib.sha256).hexdigest()


def person_view(spark, profiles):
    rows = [(r.user_id, _decrypt(r.email_encrypted, r.email_key_id), r.email_hash,
             _decrypt(r.phone_encrypted, r.phone_key_id), _decrypt(r.first_name_encrypted, r.first_name_key_id),
             _decrypt(r.last_name_encrypted, r.last_name_key_id), r.country, r.locale)
            for r in profiles.collect()]
    return spark.createDataFrame(rows, PERSON_VIEW).orderBy("user_id")


PERSON_VIEW = ("user_id string, email string, email_hash string, phone string, first_name string, "
               "last_name string, country string, locale string")


HISTORY_VIEW = ("user_id string, valid_from timestamp, valid_to timestamp, is_current boolean, first_name string, "
                "last_name string, country string, locale string, has_email_hash boolean")


def expected_persons(spark, cleo_phone=None):
    return spark.createDataFrame([
        ("u-1", "ada@example.com", _email_hash("ada@example.com"), "+44 20 7946 0001", "Augusta", "Lovelace",
         "FR", "fr-FR"),
        ("u-3", "cleo@example.com", _email_hash("cleo@example.com"), cleo_phone, "Cleo", "Jones", "GB", "en-GB"),
        ("u-4", None, None, None, None, None, None, None),
        ("u-5", "new5@example.com", _email_hash("new5@example.com"), None, "Eve", None, "IE", None),
    ], PERSON_VIEW)


def expected_history(spark, schema):
    return spark.createDataFrame([
        ("u-1", ts("2026-11-01T10:00:00"), ts("2026-11-02T10:00:00"), False, "Ada", "Lovelace", "GB", "en-GB", True),
        ("u-1", ts("2026-11-02T10:00:00"), ts("2026-11-02T12:00:00"), False, "Ada", "Lovelace", "FR", "en-GB", True),
        ("u-1", ts("2026-11-02T12:00:00"), ts("2026-11-03T10:00:00"), False, "Augusta", "Lovelace", "FR", "en-GB",
         True),
        ("u-1", ts("2026-11-03T10:00:00"), None, True, "Augusta", "Lovelace", "FR", "fr-FR", True),
        # Cleo's update changed only her phone, which history does not track.
        ("u-3", ts("2026-10-31T08:00:00"), None, True, "Cleo", "Jones", "GB", "en-GB", True),
        # Eve's life before her delete is purged; the new profile starts at its creation.
        ("u-5", ts("2026-11-03T12:00:00"), None, True, "Eve", None, "IE", None, True),
    ], schema)


@pytest.mark.parametrize("order", list(ORDERS))
def test_final_tables_do_not_depend_on_arrival_order(spark, bronze_by_name, empty_tables, tmp_path, order):
    run = Run(spark, tmp_path, empty_tables).feed(bronze_by_name, ORDERS[order])
    profiles = run.table("silver.profiles")
    assert_df_equality(person_view(spark, profiles), expected_persons(spark), ignore_row_order=True)

    preferences = profiles.select("user_id", "topics", "frequency_cap_per_week", "language",
                                  "preferred_send_hour", "consent_email_marketing", "consent_profiling")
    expected = spark.createDataFrame([
        ("u-1", None, None, None, None, None, None),
        ("u-3", None, None, None, None, None, None),
        ("u-4", ["garden", "kitchen"], 3, "en", None,
         ("revoked", ts("2026-11-04T09:00:00"), ts("2026-11-05T20:00:00"), "esp", "unsubscribe",
          ts("2026-11-05T20:00:00")), None),
        ("u-5", None, None, None, None, None, None),
    ], preferences.schema)
    assert_df_equality(preferences, expected, ignore_row_order=True, ignore_nullable=True)

    # The tombstone keeps Bob's delete by a keyed hash only; no table row names him.
    tombstones = run.table("silver.profile_tombstones").collect()
    assert sorted(t.subject_hash for t in tombstones) == sorted(
        hmac.new(HMAC_KEY, f"user:{u}".encode(), hashlib.sha256).hexdigest() for u in ("u-2", "u-5"))
    assert all(t.deleted_sequence.event_id is None for t in tombstones)

    # SCD type 2 of the tracked columns: one version per change that set one of them.
    # Names stay encrypted there too.
    stored = run.table("silver.profiles_history")
    assert "first_name" not in stored.columns and "last_name" not in stored.columns
    history = spark.createDataFrame([
        (r.user_id, r.valid_from, r.valid_to, r.is_current, _decrypt(r.first_name_encrypted, r.first_name_key_id),
         _decrypt(r.last_name_encrypted, r.last_name_key_id), r.country, r.locale, r.email_hash is not None)
        for r in stored.collect()], HISTORY_VIEW)
    assert_df_equality(history, expected_history(spark, HISTORY_VIEW), ignore_row_order=True)


def test_ignore_null_updates_keeps_the_stored_value(spark, bronze_by_name, empty_tables, tmp_path):
    run = Run(spark, tmp_path, empty_tables, "profiles.ignore_null_updates=true").feed(bronze_by_name, [NAMES])
    assert_df_equality(person_view(spark, run.table("silver.profiles")),
                       expected_persons(spark, cleo_phone="+44 20 7946 0003"), ignore_row_order=True)


def test_audit_log_records_consent_and_preference_changes_and_erasures(spark, bronze_by_name, empty_tables, tmp_path):
    batches = [["dan_grants", "dan_revokes", "dan_unsubscribes", "bob_create"],
               ["dan_grants_again", "dan_topics", "bob_delete"]]
    run = Run(spark, tmp_path, empty_tables).feed(bronze_by_name, batches)
    audit = run.table("audit.log")
    dan = hmac.new(HMAC_KEY, b"user:u-4", hashlib.sha256).hexdigest()
    bob = hmac.new(HMAC_KEY, b"user:u-2", hashlib.sha256).hexdigest()
    granted = '{"status":"granted","source":"preference_centre","actor":"subscriber"}'
    revoked = '{"status":"revoked","source":"preference_centre","actor":"subscriber"}'
    unsubscribed = '{"status":"revoked","source":"esp","actor":"unsubscribe"}'
    actual = audit.select("subject_hash", "action", "field", "before", "after", "outcome", "actor", "source",
                          "occurred_at")
    expected = spark.createDataFrame([
        (dan, "consent", "consent.email_marketing", None, granted, "applied", "subscriber", "preference_centre",
         ts("2026-11-01T09:00:00")),
        (dan, "consent", "consent.email_marketing", granted, revoked, "applied", "subscriber", "preference_centre",
         ts("2026-11-03T09:00:00")),
        (dan, "consent", "consent.email_marketing", revoked, unsubscribed, "applied", "unsubscribe", "esp",
         ts("2026-11-05T20:00:00")),
        # Arrives after the unsubscribe it predates: recorded, but the newer decision stands.
        (dan, "consent", "consent.email_marketing", None, granted, "superseded", "subscriber", "preference_centre",
         ts("2026-11-04T09:00:00")),
        (dan, "preference", "preference.topics", None, '{"topics":["garden","kitchen"]}', "applied", None,
         "preference_centre", ts("2026-11-01T09:05:00")),
        (dan, "preference", "preference.language", None, '{"language":"en"}', "applied", None, "preference_centre",
         ts("2026-11-01T09:05:00")),
        (bob, "erasure", None, None, None, "applied", "crm", "crm", ts("2026-11-04T11:00:00")),
    ], actual.schema)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    text = " ".join(str(row) for row in audit.collect())
    assert "u-2" not in text and "u-4" not in text and "bob" not in text.lower()


def test_replayed_batch_changes_nothing(spark, bronze_by_name, empty_tables, tmp_path):
    run = Run(spark, tmp_path, empty_tables)
    batch = ["ada_create", "ada_moves", "dan_grants", "bob_create", "bob_delete"]
    run.feed(bronze_by_name, [batch])
    tables = ("silver.profiles", "silver.profiles_history", "audit.log", "silver.profile_tombstones",
              "silver.duplicate_profiles")
    versions = {name: run.spark.sql(f"DESCRIBE HISTORY delta.`{run.config.table(name).path}`").count()
                for name in tables}
    before = {name: run.table(name).collect() for name in tables}
    run.feed(bronze_by_name, [batch])  # the same batch id again: a replay after a crash
    assert versions == {name: run.spark.sql(f"DESCRIBE HISTORY delta.`{run.config.table(name).path}`").count()
                        for name in tables}
    assert before == {name: run.table(name).collect() for name in tables}


def test_a_change_delivered_again_later_leaves_the_history_as_it_is(spark, bronze_by_name, empty_tables, tmp_path):
    """Past the ingest dedup window a change can reach merge-profiles twice. Its names are
    encrypted again with a new nonce; the stored ciphertext must stay (each redelivery
    would otherwise replace one of Ada's two names with a chance of one half)."""
    run = Run(spark, tmp_path, empty_tables).feed(bronze_by_name, [["ada_create"]])
    before = sorted(run.table("silver.profiles_history").collect())
    assert len(before) == 1 and before[0].first_name_encrypted is not None
    for batch_id in (1, 2, 3):
        run.writer(spark.createDataFrame([bronze_by_name["ada_create"]], BRONZE_EVENTS), batch_id)
    assert sorted(run.table("silver.profiles_history").collect()) == before


def test_erasure_cut_short_by_a_crash_completes_when_the_batch_is_replayed(spark, bronze_by_name, empty_tables,
                                                                           tmp_path):
    run = Run(spark, tmp_path, empty_tables).feed(bronze_by_name, [["bob_create", "ada_create"]])

    class CrashAfterPurges(ProfilesBatchWriter):
        def _merge_profiles(self, spark, latest):
            raise RuntimeError("killed")

    crashing = CrashAfterPurges(run.config, load_keys(run.config), run.writer.steps.app_id)
    batch = spark.createDataFrame([bronze_by_name["bob_delete"]], BRONZE_EVENTS)
    with pytest.raises(RuntimeError, match="killed"):
        crashing(batch, 1)
    run.writer(batch, 1)  # the query restarts and replays batch 1
    assert [r.user_id for r in run.table("silver.profiles").collect()] == ["u-1"]
    assert run.table("silver.profile_tombstones").count() == 1


def test_profiles_sharing_an_email_are_listed(spark, bronze_by_name, empty_tables, tmp_path):
    # A second CRM customer with Ada's address, written differently.
    ada = bronze_by_name["ada_create"]
    twin_change = crm("c", 500, "2026-11-05T10:00:00Z", after=person("u-9", email=" ADA@example.com"))
    twin = ada.asDict() | {"event_id": "crm:crm.customers:500:c:u-9", "user_id": "u-9",
                           "payload": json.dumps(twin_change), "occurred_at": ts("2026-11-05T10:00:00")}
    rows = [ada, bronze_by_name["bob_create"], Row(**twin)]
    run = Run(spark, tmp_path, empty_tables)
    run.writer(spark.createDataFrame(rows, BRONZE_EVENTS), 0)
    duplicates = run.table("silver.duplicate_profiles")
    expected = spark.createDataFrame([(_email_hash("ada@example.com"), ["u-1", "u-9"], 2)], duplicates.schema)
    assert_df_equality(duplicates, expected, ignore_nullable=True)

    def crm_row(position, at, user_id, email, op="c", **fields):
        change = crm(op, position, at, after=person(user_id, email=email, **fields))
        return Row(**(ada.asDict() | {"event_id": f"crm:crm.customers:{position}:{op}:{user_id}", "user_id": user_id,
                                      "payload": json.dumps(change), "occurred_at": ts(at.rstrip("Z"))}))

    # A third joins the group; a batch that changes no group leaves the table as it was:
    # a newcomer with an address of their own, and a member who only moves country.
    run.writer(spark.createDataFrame([crm_row(501, "2026-11-06T10:00:00Z", "u-7", "ada@example.com")],
                                     BRONZE_EVENTS), 1)
    run.writer(spark.createDataFrame([crm_row(502, "2026-11-06T11:00:00Z", "u-8", "solo@example.com"),
                                      crm_row(505, "2026-11-06T11:00:00Z", "u-9", " ADA@example.com", "u",
                                              country="DE")], BRONZE_EVENTS), 2)
    assert run.table("silver.profiles").where("user_id = 'u-9'").first().country == "DE"
    expected = spark.createDataFrame([(_email_hash("ada@example.com"), ["u-1", "u-7", "u-9"], 3)], duplicates.schema)
    assert_df_equality(run.table("silver.duplicate_profiles"), expected, ignore_nullable=True)
    # Two move away: one profile is left on the address, which is no longer a group.
    run.writer(spark.createDataFrame([crm_row(503, "2026-11-07T10:00:00Z", "u-7", "seven@example.com", "u"),
                                      crm_row(504, "2026-11-07T10:00:00Z", "u-9", "nine@example.com", "u")],
                                     BRONZE_EVENTS), 3)
    assert run.table("silver.duplicate_profiles").count() == 0
    versions = [row.operation for row in spark.sql(
        f"DESCRIBE HISTORY delta.`{run.config.table('silver.duplicate_profiles').path}`").collect()]
    # Created, then a MERGE for each batch that changed a group: none for batch 2.
    assert versions.count("MERGE") == 3


def test_duplicate_group_changes_keep_only_what_changes_the_listed_groups(spark):
    schema = "email_hash string, user_ids array<string>, profile_count bigint"
    groups = spark.createDataFrame([("same", ["a", "b"], 2), ("grown", ["a", "b", "c"], 3), ("gone", None, None),
                                    ("new", ["d", "e"], 2), ("never", None, None)], schema)
    listed = spark.createDataFrame([("same", ["a", "b"], 2), ("grown", ["a", "b"], 2), ("gone", ["f", "g"], 2),
                                    ("untouched", ["h", "i"], 2)], schema)
    expected = spark.createDataFrame([("grown", ["a", "b", "c"], 3), ("gone", None, None),
                                      ("new", ["d", "e"], 2)], schema)
    assert_df_equality(duplicate_group_changes(groups, listed), expected, ignore_row_order=True,
                       ignore_nullable=True)


def test_a_merge_that_loses_a_commit_race_is_retried(spark, bronze_by_name, empty_tables, tmp_path):
    """Writer A starts its MERGE into silver.profiles, then blocks inside it until writer B
    has committed a change to the same file; A's commit then conflicts and is retried."""
    run = Run(spark, tmp_path, empty_tables).feed(bronze_by_name, [["ada_create", "cleo_snapshot"]])
    started, go = tmp_path / "a-started", tmp_path / "a-go"

    @F.udf("string")
    def wait_for_go(user_id):
        started.touch()
        while not go.exists():
            time.sleep(0.05)
        return user_id

    class SlowWriter(ProfilesBatchWriter):
        def _merge_profiles(self, spark, latest):
            super()._merge_profiles(spark, latest.withColumn("user_id", wait_for_go("user_id")))

    writer = SlowWriter(run.config, load_keys(run.config), run.writer.steps.app_id, on_conflict=run._count_conflict)
    failure = []

    # Its own session, as a streaming query has: the txnAppId it sets is not B's.
    session_a = spark.newSession()

    def writer_a():
        try:
            writer(session_a.createDataFrame([bronze_by_name["ada_moves"]], BRONZE_EVENTS), 1)
        except Exception as error:  # reported by the assertion below
            failure.append(error)

    thread = threading.Thread(target=writer_a)
    thread.start()
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists()
    # Writer B: another job updating a profile in the same file.
    spark.sql(f"UPDATE delta.`{run.config.table('silver.profiles').path}` SET locale = 'en-IE' "
              "WHERE user_id = 'u-3'")
    go.touch()
    thread.join(timeout=300)
    assert not failure, failure
    assert run.conflicts >= 1
    rows = {r.user_id: (r.country, r.locale) for r in run.table("silver.profiles").collect()}
    assert rows == {"u-1": ("FR", "en-GB"), "u-3": ("GB", "en-IE")}


# A CRM as it is: customers keyed by `id`, with its own column names, and an address table
# keyed by the customer whose delete clears the country and leaves the person. MySQL
# binlog positions; two updates of Grace commit in the same millisecond.
CRM_AS_IT_IS = {
    "customers": CrmTableConfig(key=("id",), columns={"email_address": "email", "given_name": "first_name",
                                                      "family_name": "last_name"}, deletes_profile=True),
    "customer_addresses": CrmTableConfig(key=("customer_id",), columns={"country_code": "country"},
                                         deletes_profile=False),
}
GRACE = {"id": 7, "email_address": "grace@example.com", "given_name": "Grace", "family_name": "Hopper",
         "internal_notes": "not mapped"}
GRACE_ADDRESS = {"id": 55, "customer_id": 7, "country_code": "US", "street": "not mapped"}


def _binlog(table: str, op: str, pos: int, at: str, before=None, after=None) -> dict:
    return {"before": before, "after": after, "op": op, "ts_ms": millis(at) + 700, "transaction": None,
            "source": {"version": "2.7.0.Final", "connector": "mysql", "name": "shop", "ts_ms": millis(at),
                       "snapshot": "false", "db": "shop", "table": table, "server_id": 1, "file": "mysql-bin.000012",
                       "pos": pos, "row": 0, "thread": 9, "query": None}}


CRM_AS_IT_IS_CHANGES = [
    _binlog("customers", "c", 1000, "2026-11-01T10:00:00Z", after=GRACE),
    _binlog("customer_addresses", "c", 1400, "2026-11-01T10:05:00Z", after=GRACE_ADDRESS),
    _binlog("customers", "u", 2000, "2026-11-02T10:00:00Z", before=GRACE,
            after={**GRACE, "given_name": "Gracie", "family_name": "Murray"}),
    _binlog("customers", "u", 2300, "2026-11-02T10:00:00Z", before={**GRACE, "given_name": "Gracie",
                                                                    "family_name": "Murray"},
            after={**GRACE, "given_name": "Grace M.", "family_name": "Murray"}),
    _binlog("customer_addresses", "d", 3000, "2026-11-03T10:00:00Z", before=GRACE_ADDRESS),
]


def test_crm_tables_as_they_are_feed_one_profile(spark, pii_env, empty_tables, tmp_path):
    """Reversed and split: the later of the two same-millisecond updates arrives first."""
    batches = [[4, 3], [2], [1, 0]]
    rows = to_bronze(spark, CRM_AS_IT_IS_CHANGES, CRM_AS_IT_IS).collect()
    assert len({row.event_id for row in rows}) == 5, "two changes in one millisecond are not one"
    by_position = {json.loads(row.payload)["source"]["pos"]: row for row in rows}
    positions = [1000, 1400, 2000, 2300, 3000]
    run = Run(spark, tmp_path, empty_tables)
    for batch_id, batch in enumerate(batches):
        run.writer(spark.createDataFrame([by_position[positions[n]] for n in batch], BRONZE_EVENTS), batch_id)
    expected = spark.createDataFrame([
        ("7", "grace@example.com", _email_hash("grace@example.com"), None, "Grace M.", "Murray", None, None),
    ], PERSON_VIEW)
    assert_df_equality(person_view(spark, run.table("silver.profiles")), expected)
    assert run.table("silver.profile_tombstones").count() == 0


# A PostgreSQL CRM snapshotted while the shop keeps writing. The snapshot's consistent
# point is LSN 5000 at 10:00; it reads Grace's row at 10:30 as it stood at 10:00 (last
# changed at 09:00), Hal's at 10:40 (last changed at 08:00), Ivy's at 10:50 (deleted at
# 10:20). And a MySQL one, whose binlog stamps whole seconds: its snapshot begins at
# 10:00:00.600, after Jo's row last changed at .400; a rename at .800 is stamped 10:00:00.
# Kim was deleted at 09:59:59.300 and created again at .700, while the connector was down:
# only the delete was streamed, and the snapshot reads the new row.
SNAPSHOT_TABLES = {
    "customers": CrmTableConfig(key=("id",), columns={"email_address": "email", "given_name": "first_name"},
                                deletes_profile=True, updated_at="updated_at",
                                types={"updated_at": CrmColumnType(type="micro_timestamp")}),
    "members": CrmTableConfig(key=("id",), columns={"email_address": "email", "given_name": "first_name"},
                              deletes_profile=True, updated_at="updated_at",
                              types={"updated_at": CrmColumnType(type="timestamp")}),
}


def _customer(user: int, email: str, name: str, updated_at: str) -> dict:
    return {"id": user, "email_address": email, "given_name": name, "updated_at": updated_at}


def _wal(op: str, lsn: int, at: str, row: dict) -> dict:
    row = {**row, "updated_at": millis(row["updated_at"]) * 1000}
    return {"before": row if op == "d" else None, "after": None if op == "d" else row, "op": op,
            "ts_ms": millis(at) + 20, "transaction": None,
            "source": {"version": "2.7.0.Final", "connector": "postgresql", "name": "crm", "ts_ms": millis(at),
                       "snapshot": "true" if op == "r" else "false", "db": "crm", "schema": "public",
                       "table": "customers", "txId": lsn // 10, "lsn": lsn}}


def _member(op: str, pos: int, at: str, row: dict) -> dict:
    row = {**row, "updated_at": millis(row["updated_at"])}
    change = _binlog("members", op, pos, at, before=row if op == "d" else None, after=None if op == "d" else row)
    change["source"]["snapshot"] = "true" if op == "r" else "false"
    return change


def _snapshot_cast(first: int) -> dict[str, dict]:
    """The people above, with ids from `first` on (emails to match)."""
    def person(offset: int, name: str, updated_at: str) -> dict:
        user = first + offset
        return _customer(user, f"{name.lower()}{user}@example.com", name, updated_at)

    return {
        "grace read": _wal("r", 5000, "2026-11-01T10:30:00Z", person(0, "Grace", "2026-11-01T09:00:00Z")),
        # Committed at 10:10, after the consistent point and before Grace's row was read.
        "grace renamed": _wal("u", 5100, "2026-11-01T10:10:00Z", person(0, "Gracie", "2026-11-01T10:10:00Z")),
        "hal read": _wal("r", 5000, "2026-11-01T10:40:00Z", person(1, "Hal", "2026-11-01T08:00:00Z")),
        # A change from before Hal's row last changed, delivered again after the snapshot.
        "hal stale": _wal("u", 4000, "2026-11-01T07:00:00Z", person(1, "Harold", "2026-11-01T07:00:00Z")),
        "ivy read": _wal("r", 5000, "2026-11-01T10:50:00Z", person(2, "Ivy", "2026-11-01T09:30:00Z")),
        "ivy deleted": _wal("d", 5200, "2026-11-01T10:20:00Z", person(2, "Ivy", "2026-11-01T09:30:00Z")),
        "jo read": _member("r", 700, "2026-11-01T10:05:00Z", person(3, "Jo", "2026-11-01T10:00:00.400Z")),
        "jo renamed": _member("u", 800, "2026-11-01T10:00:00Z", person(3, "Joanna", "2026-11-01T10:00:00.800Z")),
        "kim read": _member("r", 700, "2026-11-01T10:06:00Z", person(4, "Kim", "2026-11-01T09:59:59.700Z")),
        "kim deleted": _member("d", 600, "2026-11-01T09:59:59Z", person(4, "Kimberly", "2026-11-01T09:59:59.300Z")),
    }


def test_a_snapshot_read_never_undoes_a_change_committed_after_the_snapshot_began(spark, pii_env, empty_tables,
                                                                                    tmp_path):
    """Two casts in two batches: the first's snapshot reads arrive first, as Debezium sends
    them, and the other's streamed changes do, each against what the other batch stored."""
    reads_first, streamed_first = _snapshot_cast(7), _snapshot_cast(17)
    changes = [*reads_first.values(), *streamed_first.values()]
    rows = to_bronze(spark, changes, SNAPSHOT_TABLES).collect()
    by_place = {(row.user_id, json.loads(row.payload)["op"], json.loads(row.payload)["position"]): row for row in rows}
    assert len(by_place) == len(changes)

    def bronze_rows(cast: dict[str, dict], reads: bool) -> list:
        chosen = [change for name, change in cast.items() if name.endswith("read") == reads]
        positions = [f"{c['source']['lsn']:020d}" if "lsn" in c["source"]
                     else f"{c['source']['file']}/{c['source']['pos']:020d}/0000000000" for c in chosen]
        return [by_place[(str((c["after"] or c["before"])["id"]), c["op"], place)]
                for c, place in zip(chosen, positions, strict=True)]

    run = Run(spark, tmp_path, empty_tables)
    for batch_id, reads in enumerate((True, False)):
        batch = spark.createDataFrame(bronze_rows(reads_first, reads) + bronze_rows(streamed_first, not reads),
                                      BRONZE_EVENTS)
        save(batch.write.format("delta").mode("append"), run.config.table("bronze.events"))  # as ingest does
        run.writer(batch, batch_id)
    expected = spark.createDataFrame([
        (str(user), email, _email_hash(email), None, name, None, None, None)
        for first in (7, 17)
        for user, email, name in ((first, f"gracie{first}@example.com", "Gracie"),
                                  (first + 1, f"hal{first + 1}@example.com", "Hal"),
                                  (first + 3, f"joanna{first + 3}@example.com", "Joanna"),
                                  (first + 4, f"kim{first + 4}@example.com", "Kim"))
    ], PERSON_VIEW)
    assert_df_equality(person_view(spark, run.table("silver.profiles")), expected, ignore_row_order=True)
    erased = run.table("bronze.events").where(F.col("user_id").isin("9", "19")).count()
    assert erased == 0, "Ivy's stale read is purged with her"


def test_the_user_ids_a_broken_record_names_are_found(spark):
    records = ['{"user_id": "u-1", "payload": {"first_name": "Ann',           # cut short
               '{"before": {"id": 42, "email": "a"}, "after": {"id" : 42}}',   # a CRM key column
               '{"user_id":"u-2"} {"user_id": "u-3", "id": "x"}',              # trailing data
               '{"user_id": null, "id": 4.5, "payload": {}}',                  # no id
               "not JSON at all"]
    frame = spark.createDataFrame([(record.encode(),) for record in records], "raw binary")
    found = [sorted(row[0]) for row in frame.select(named_user_ids(("id",))).collect()]
    assert found == [["u-1"], ["42"], ["u-2", "u-3", "x"], [], []]


def test_an_address_deleted_with_its_customer_leaves_no_one_behind(spark, pii_env, empty_tables, tmp_path):
    """ON DELETE CASCADE: the customer's delete, then the address's, at a later log position
    in the same millisecond; in one batch for Ivy, in the next batch for Hal. In Ivy's batch,
    Ann (who stays) only moves out, and Joy, new, signs up on the web with an address
    removed at once: both keep their profile, without a country."""
    hal, hal_address = {**GRACE, "id": 8}, {**GRACE_ADDRESS, "id": 56, "customer_id": 8}
    ivy, ivy_address = {**GRACE, "id": 9}, {**GRACE_ADDRESS, "id": 57, "customer_id": 9}
    ann, ann_address = {**GRACE, "id": 10, "email_address": "ann@example.com", "given_name": "Ann"}, \
        {**GRACE_ADDRESS, "id": 58, "customer_id": 10}
    joy_address = {**GRACE_ADDRESS, "id": 59, "customer_id": 11}
    changes = [
        _binlog("customers", "c", 100, "2026-11-01T10:00:00Z", after=hal),
        _binlog("customer_addresses", "c", 110, "2026-11-01T10:00:00Z", after=hal_address),
        _binlog("customers", "c", 120, "2026-11-01T10:00:00Z", after=ivy),
        _binlog("customer_addresses", "c", 130, "2026-11-01T10:00:00Z", after=ivy_address),
        _binlog("customers", "c", 140, "2026-11-01T10:00:00Z", after=ann),
        _binlog("customer_addresses", "c", 150, "2026-11-01T10:00:00Z", after=ann_address),
        _binlog("customers", "d", 200, "2026-11-02T10:00:00Z", before=hal),
        _binlog("customers", "d", 210, "2026-11-02T10:00:00Z", before=ivy),
        _binlog("customer_addresses", "d", 220, "2026-11-02T10:00:00Z", before=ivy_address),
        _binlog("customer_addresses", "d", 230, "2026-11-02T10:00:00Z", before=hal_address),
        _binlog("customer_addresses", "d", 240, "2026-11-02T10:00:00Z", before=ann_address),
        event("profile_upsert", "11", "2026-11-02T09:00:00Z", {"first_name": "Joy"}, "e-joy", source="web"),
        _binlog("customer_addresses", "d", 250, "2026-11-02T10:00:00Z", before=joy_address),
    ]
    rows = to_bronze(spark, changes, CRM_AS_IT_IS).collect()
    by_position = {json.loads(row.payload).get("source", {}).get("pos", row.event_id): row for row in rows}
    run = Run(spark, tmp_path, empty_tables)
    for batch_id, positions in enumerate([[100, 110, 120, 130, 140, 150], [200, 210, 220, 240, "e-joy", 250],
                                          [230]]):
        batch = spark.createDataFrame([by_position[p] for p in positions], BRONZE_EVENTS)
        save(batch.write.format("delta").mode("append"), run.config.table("bronze.events"))  # as ingest does
        run.writer(batch, batch_id)
    expected = spark.createDataFrame([
        ("10", "ann@example.com", _email_hash("ann@example.com"), None, "Ann", "Hopper", None, None),
        ("11", None, None, None, "Joy", None, None, None),
    ], PERSON_VIEW)
    assert_df_equality(person_view(spark, run.table("silver.profiles")), expected, ignore_row_order=True)
    assert run.table("silver.profile_tombstones").count() == 2
    # Nothing of Hal and Ivy stays in bronze: the address deletes the cascade wrote after
    # theirs, in the same millisecond, go too (Hal's arrives after his tombstone: a straggler).
    assert sorted(r.user_id for r in run.table("bronze.events").select("user_id").distinct().collect()) == ["10", "11"]


def test_a_blank_name_is_stored_as_no_name(spark, pii_env, empty_tables, tmp_path):
    changes = [event("profile_upsert", "u-9", "2026-11-02T09:00:00Z", {"first_name": "Nia", "last_name": "Ode"},
                     "e-nia-1", source="web"),
               event("profile_upsert", "u-9", "2026-11-02T10:00:00Z", {"first_name": "  "}, "e-nia-2", source="web")]
    run = Run(spark, tmp_path, empty_tables)
    run.writer(spark.createDataFrame(to_bronze(spark, changes).collect(), BRONZE_EVENTS), 0)
    profiles = run.table("silver.profiles")
    assert profiles.where("first_name_encrypted IS NULL AND first_name_key_id IS NULL").count() == 1
    expected = spark.createDataFrame([("u-9", None, None, None, None, "Ode", None, None)], PERSON_VIEW)
    assert_df_equality(person_view(spark, profiles), expected)


def test_profiles_written_with_names_in_clear_are_refused_with_how_to_rebuild(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    older = StructType([*PROFILES.fields, StructField("first_name", StringType())])
    ensure_table(spark, config.table("silver.profiles"), older)
    with pytest.raises(EnvironmentProblem, match=r"^silver\.profiles was written by an older Tailor \(names in "
                                                 r"clear\); rebuild it from bronze: move"):
        ensure_profile_tables(spark, config)
