"""The writes of merge_profiles: one micro-batch of profile changes into silver.profiles,
its history, audit.log, the erasure tombstones and purges, and the duplicates list.

Every write of a batch carries the query's txnAppId (one per write step) and the batch id
as txnVersion, so a batch replayed after a crash skips what it had already committed;
and each write that loses a commit race to another writer is retried.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import unquote, urlsplit

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import API_AUDIT_FOLDER, Config, TableRef
from pipelines.errors import EnvironmentProblem
from pipelines.pii import PiiKeys
from pipelines.profiles.transforms import (
    after_deletes,
    api_audit_rows,
    audit_rows,
    batch_view_of_stored,
    change_rows,
    deleted_by,
    duplicate_group_changes,
    duplicate_groups,
    erased_users,
    erasures,
    event_erased,
    history_versions,
    latest_per_user,
    named_user_ids,
    position,
    profile_delete_condition,
    profile_insert_values,
    profile_update_condition,
    profile_update_set,
    protect_pii,
    stored_position,
    stragglers,
    tombstone_rows,
)
from pipelines.runtime.delta_tables import delta_table, ensure_table, read_table, save, table_exists
from pipelines.runtime.filesystems import filesystem as filesystem_of
from pipelines.runtime.streaming import BatchSteps
from pipelines.schemas import (
    AUDIT_LOG,
    DUPLICATE_PROFILES,
    HISTORY_TRACKABLE,
    PROFILE_TOMBSTONES,
    PROFILES,
    PROFILES_STATS_COLUMNS,
    profiles_history_schema,
)

log = logging.getLogger("tailor.profiles")

# Tables that hold rows about a person, and where a row of the target (t) sits against an
# erasure: its event time and log position (CRM changes only), for event_erased; None:
# every row of the user goes. A table not created yet is skipped.
PERSON_TABLES = (
    ("bronze.events", lambda: (F.col("t.occurred_at"), stored_position(F.col("t.event_type"), F.col("t.payload")))),
    ("silver.interactions", lambda: (F.col("t.occurred_at"), F.lit(None).cast("string"))),
    ("gold.user_features", None), ("gold.recommendations", None), ("gold.email_content", None),
    ("gold.user_traits", None), ("gold.holdout_assignments", None),
)


def _stats_columns(*columns: str) -> dict[str, str]:
    return {"delta.dataSkippingStatsColumns": ",".join(columns)}


def ensure_profile_tables(spark: SparkSession, config: Config) -> None:
    tracked = config.profiles.history_columns
    ensure_table(spark, config.table("silver.profiles"), PROFILES,
                 properties={"delta.enableChangeDataFeed": "true", **_stats_columns(*PROFILES_STATS_COLUMNS)})
    history_stats = ("user_id", "valid_from", "valid_to",
                     *[column for column in tracked if column in PROFILES_STATS_COLUMNS])
    ensure_table(spark, config.table("silver.profiles_history"), profiles_history_schema(tracked),
                 properties=_stats_columns(*history_stats))
    ensure_table(spark, config.table("silver.profile_tombstones"), PROFILE_TOMBSTONES)
    _migrate_tombstone_positions(spark, config.table("silver.profile_tombstones"))
    _refuse_integer_positions(spark, config.table("silver.profiles"))
    refuse_clear_names(config.table("silver.profiles"), read_table(spark, config.table("silver.profiles")).columns)
    ensure_table(spark, config.table("silver.duplicate_profiles"), DUPLICATE_PROFILES)
    _ensure_audit_log(spark, config)


def _ensure_audit_log(spark: SparkSession, config: Config) -> None:
    ensure_table(spark, config.table("audit.log"), AUDIT_LOG, properties={
        "delta.appendOnly": "true",
        **_stats_columns("audit_id", "subject_hash", "action", "field", "outcome", "source", "event_ref",
                         "occurred_at", "recorded_at")})


def _has_integer_positions(frame: DataFrame, column: str) -> bool:
    """Written before CRM log positions became text, when PostgreSQL's lsn was the only one."""
    return "lsn" in frame.schema[column].dataType.fieldNames()


def _migrate_tombstone_positions(spark: SparkSession, table: TableRef) -> None:
    """Erasure tombstones must outlive any upgrade: an old table's lsn becomes the padded
    text position PostgreSQL changes now carry, in one overwrite."""
    tombstones = read_table(spark, table)
    if not _has_integer_positions(tombstones, "deleted_sequence"):
        return
    old = F.col("deleted_sequence")
    migrated = tombstones.withColumn("deleted_sequence", F.struct(
        old["ts_ms"].alias("ts_ms"), F.lpad(old["lsn"].cast("string"), 20, "0").alias("position"),
        old["event_id"].alias("event_id")))
    save(migrated.write.format("delta").mode("overwrite").option("overwriteSchema", "true"), table)
    log.info("%s: sequences moved from a numeric lsn to a text position", table.layer_name)


def _refuse_integer_positions(spark: SparkSession, table: TableRef) -> None:
    """silver.profiles keeps a sequence per register: rather than rewrite every one in
    place, say in one line how to rebuild it."""
    if _has_integer_positions(read_table(spark, table), "_sequence"):
        raise EnvironmentProblem(
            f"{table.layer_name} was written by an older Tailor (sequences with a numeric 'lsn'); rebuild it from "
            "bronze: move silver.profiles, silver.profiles_history and the merge_profiles checkpoint aside "
            "(keep silver.profile_tombstones), then run tailor merge-profiles and then tailor score --full")


def refuse_clear_names(table: TableRef, columns: list[str]) -> None:
    """Names are encrypted like email and phone; a table from before (`columns` its own)
    keeps them in clear, and in every older version of its files, so it is rebuilt rather
    than patched."""
    if "first_name" in columns:
        raise EnvironmentProblem(
            f"{table.layer_name} was written by an older Tailor (names in clear); rebuild it from bronze: move "
            "silver.profiles, silver.profiles_history and the merge_profiles checkpoint aside (keep "
            "silver.profile_tombstones), run tailor merge-profiles and then tailor score --full, and delete "
            "what you moved aside")


def purge_quarantined_erased(spark: SparkSession, config: Config, hmac_key: bytes, tombstones: DataFrame,
                             since: datetime | None = None) -> int:
    """Delete quarantined records (ingested at or after `since`; all when None) that name
    an erased person, found by the keyed hash of each user id their bytes name. Returns
    how many went. Any such record goes, whenever it occurred: like the erasure's own
    purge, which finds them by their text."""
    quarantine = config.table("bronze.quarantine")
    if not table_exists(spark, quarantine):
        return 0
    candidates = read_table(spark, quarantine)
    if since is not None:
        candidates = candidates.where(F.col("ingested_at") >= F.lit(since))
    single_keys = tuple(table.key[0] for table in config.crm.tables.values() if len(table.key) == 1)
    named = candidates.select("quarantine_id", F.explode(named_user_ids(single_keys)).alias("user_id"))
    doomed = (named.join(erased_users(tombstones, hmac_key)(named), "user_id")
              .select("quarantine_id").distinct().localCheckpoint())
    found = doomed.count()
    if found:
        (delta_table(spark, quarantine).alias("t").merge(doomed.alias("s"), "t.quarantine_id = s.quarantine_id")
         .whenMatchedDelete().execute())
        log.info("purged %d quarantined record(s) naming erased people", found)
    return found


def sweep_quarantine_of_erased(spark: SparkSession, config: Config, hmac_key: bytes) -> int:
    """Before a VACUUM (`tailor vacuum`, `tailor maintain`): every quarantined record that
    names an erased person, wherever it came in. The batches purge those of their own
    ingest runs; this catches the rest, so the VACUUM after it makes their removal final."""
    tombstones = config.table("silver.profile_tombstones")
    if not table_exists(spark, tombstones):
        return 0
    return purge_quarantined_erased(spark, config, hmac_key, read_table(spark, tombstones))


@dataclass(frozen=True)
class ApiAuditLoad:
    loaded: int                   # rows audit.log did not hold yet
    unreadable: dict[str, int]    # file -> lines left unread (kept, read again next time)
    removed: int                  # files of days gone by, every line of them in audit.log
    not_the_apis: tuple[str, ...] = ()  # files under the folder not named as the API names them: kept, unread


# The names the API gives its files (api/consent.py), relative to the folder: a file a day
# locally, an object a request in a folder a day on S3. The day is the first group.
_API_AUDIT_NAME = re.compile(r"audit-(\d{4}-\d{2}-\d{2})\.jsonl|(\d{4}-\d{2}-\d{2})/[0-9a-f]{32}\.jsonl")


def _listed_form(uri: str) -> str:
    """A file's path as pyarrow lists it, from Spark's URI of it."""
    parsed = urlsplit(uri)
    return unquote(parsed.netloc + parsed.path) if parsed.scheme else uri


def load_api_audit(spark: SparkSession, config: Config, today: date | None = None) -> ApiAuditLoad:
    """The API's audit lines (api/consent.py: a file a day locally, an object a request under
    an s3:// storage.root) into audit.log, each once: a MERGE that inserts the audit_ids the
    table lacks, so a run cut short and run again adds nothing twice. Then the files of days
    before yesterday (UTC) are removed, since the API no longer writes to them, unless a line
    of theirs could not be read: those stay, and are counted, for someone to look at, as do
    files not named as the API names them, which are not read. Today's file may end in a line
    the API is still writing; it is read whole on a later run."""
    from pyarrow import fs as pafs

    folder = config.under_root(API_AUDIT_FOLDER)
    filesystem, root = filesystem_of(folder)
    if filesystem.get_file_info(root).type != pafs.FileType.Directory:
        return ApiAuditLoad(0, {}, 0)
    sizes: dict[str, int] = {}
    days: dict[str, str] = {}
    others: list[str] = []
    for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True)):
        if info.type != pafs.FileType.File:
            continue
        # Only the API's own names are read: another file (one dropped in by hand) could be a
        # name Spark reads as hidden or as a pattern, and fail or skip the whole load.
        named = _API_AUDIT_NAME.fullmatch(info.path[len(root.rstrip("/")) + 1:])
        if named is None:
            others.append(info.path)
        else:
            sizes[info.path], days[info.path] = info.size, named.group(1) or named.group(2)
    if not sizes:
        return ApiAuditLoad(0, {}, 0, tuple(others))
    # Spark's paths for the files pyarrow listed: the folder's own form, then the rest of the path.
    paths = {f"{folder.rstrip('/')}/{path[len(root.rstrip('/')) + 1:]}": path for path in sizes}
    # A file cut short by a read error must fail the load, never count as read whole.
    lines = (spark.read.option("ignoreCorruptFiles", "false").option("ignoreMissingFiles", "false")
             .text(list(paths)).withColumn("file", F.col("_metadata.file_path")).localCheckpoint())
    rows = api_audit_rows(lines.where(F.trim("value") != ""))
    # Spark names a file by a URI (file:/..., s3://bucket/...); pyarrow by a path. Only a file
    # Spark is known to have read is ever removed (or an empty one).
    unreadable = {_listed_form(str(row.file)): int(row["count"])
                  for row in rows.where(~F.col("readable")).groupBy("file").count().collect()}
    read_whole = {_listed_form(str(row.file)) for row in lines.select("file").distinct().collect()} - set(unreadable)
    fresh = rows.where("readable").drop("readable", "file").dropDuplicates(["audit_id"])
    _ensure_audit_log(spark, config)
    # The MERGE's own counts: the table's latest history entry may be another writer's.
    counts = (delta_table(spark, config.table("audit.log")).alias("t")
              .merge(fresh.alias("s"), "t.audit_id = s.audit_id AND t.source = 'api'")
              .whenNotMatchedInsertAll().execute().first())
    loaded = int(counts["num_inserted_rows"]) if counts is not None else 0
    cutoff = ((today or datetime.now(UTC).date()) - timedelta(days=1)).isoformat()
    removed = 0
    for path in paths.values():
        if days[path] < cutoff and (path in read_whole or sizes[path] == 0):
            filesystem.delete_file(path)
            removed += 1
    return ApiAuditLoad(loaded, unreadable, removed, tuple(others))


class ProfilesBatchWriter:
    """foreachBatch function of merge_profiles."""

    def __init__(self, config: Config, keys: PiiKeys, app_id: str,
                 on_conflict: Callable[[int], None] | None = None):
        self.config = config
        self.keys = keys
        self.steps = BatchSteps(app_id, config.profiles.conflict_retries, on_conflict)

    def table(self, name: str) -> TableRef:
        return self.config.table(name)

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        settings = self.config.profiles
        tombstones = read_table(spark, self.table("silver.profile_tombstones"))
        if not tombstones.isEmpty():
            self._purge_stragglers(spark, batch, tombstones, batch_id)
        # Each input of the writes is checkpointed before the first write: a lazy plan
        # would re-read tables the batch itself changes (the tombstones it adds would
        # hide its own erasures; the profiles it merges would hide the old email hashes),
        # and encryption draws a fresh nonce on every evaluation.
        changes = (batch.transform(change_rows(settings.ignore_null_updates))
                   .transform(protect_pii(self.keys))
                   .transform(after_deletes(tombstones))
                   .localCheckpoint())
        if changes.isEmpty():
            return
        latest = latest_per_user(changes).localCheckpoint()
        stored = (read_table(spark, self.table("silver.profiles")).transform(batch_view_of_stored)
                  .join(latest.select("user_id"), "user_id", "left_semi").localCheckpoint())
        # Clearing the fields of someone with no profile, or of someone this batch deletes (an
        # address deleted along with its customer), creates nobody: those changes are dropped.
        has_profile = stored.select("user_id", F.lit(True).alias("_has_profile"))
        nobody = (latest.join(has_profile, "user_id", "left")
                  .where(~F.col("can_create") & (F.col("_has_profile").isNull() | F.col("delete_seq").isNotNull()))
                  .select("user_id", F.lit(True).alias("_nobody")).localCheckpoint())
        if not nobody.isEmpty():
            doomed = F.col("only_clears") & F.coalesce(F.col("_nobody"), F.lit(False))
            changes = (changes.join(nobody, "user_id", "left").where(~doomed)
                       .drop("_nobody").localCheckpoint())
            if changes.isEmpty():
                return
            latest = latest_per_user(changes).localCheckpoint()
        self.steps.run(spark, "audit", batch_id,
                    lambda: save(audit_rows(changes, stored).write.format("delta").mode("append"),
                                 self.table("audit.log")))
        gone = erasures(latest)
        erased = gone.count()
        if erased:
            self._purge(spark, gone, batch_id)
        self.steps.run(spark, "profiles", batch_id, lambda: self._merge_profiles(spark, latest))
        self.steps.run(spark, "history", batch_id, lambda: self._merge_history(spark, changes))
        stored_hashes = stored.where(F.col("email_hash").isNotNull()).select("email_hash").distinct()
        self.steps.run(spark, "duplicates", batch_id, lambda: self._refresh_duplicates(spark, latest, stored_hashes))
        if erased:
            # Last: once a delete's tombstone exists, a replay of this batch no longer sees
            # the delete, so everything the delete does must be committed before it.
            self.steps.run(spark, "tombstones", batch_id, lambda: self._record_tombstones(spark, gone))
            log.info("batch %d erased %d person(s) from every table (ids not logged)", batch_id, erased)

    # -- the writes ---------------------------------------------------------------------

    def _merge_profiles(self, spark: SparkSession, latest: DataFrame) -> None:
        (delta_table(spark, self.table("silver.profiles")).alias("t")
         .merge(latest.alias("s"), "t.user_id = s.user_id")
         .whenMatchedDelete(condition=profile_delete_condition())
         .whenMatchedUpdate(condition=profile_update_condition(), set=profile_update_set())
         .whenNotMatchedInsert(condition=F.col("s.max_seq").isNotNull(), values=profile_insert_values())
         .execute())

    def _merge_history(self, spark: SparkSession, changes: DataFrame) -> None:
        tracked = self.config.profiles.history_columns
        history = self.table("silver.profiles_history")
        touched = changes.select("user_id").distinct()
        stored = read_table(spark, history).join(touched, "user_id", "left_semi")
        versions = history_versions(tracked)(changes, stored)
        columns = ("valid_to", "is_current", *[column for name in tracked for column in HISTORY_TRACKABLE[name][1]])
        same = [F.col(f"t.{column}").eqNullSafe(F.col(f"s.{column}")) for column in columns]
        unchanged = same[0]
        for condition in same[1:]:
            unchanged = unchanged & condition
        (delta_table(spark, history).alias("t")
         .merge(versions.alias("s"), "t.user_id = s.user_id AND t._sequence = s._sequence")
         .whenMatchedUpdateAll(condition=~unchanged)
         .whenNotMatchedInsertAll()
         .execute())

    def _refresh_duplicates(self, spark: SparkSession, latest: DataFrame, stored_hashes: DataFrame) -> None:
        new_hashes = (latest.where(F.col("email.email_hash").isNotNull())
                      .select(F.col("email.email_hash").alias("email_hash")))
        # Listed groups that hold a changed user, too: after a replay, `stored_hashes` may
        # already show the new address.
        stored_groups = read_table(spark, self.table("silver.duplicate_profiles"))
        listed = (stored_groups.select("email_hash", F.explode("user_ids").alias("user_id"))
                  .join(latest.select("user_id"), "user_id", "left_semi").select("email_hash"))
        # Computed once for the two joins below (a plan is evaluated again by each).
        touched = new_hashes.union(stored_hashes).union(listed).distinct().localCheckpoint()
        profiles = read_table(spark, self.table("silver.profiles")).join(touched, "email_hash", "left_semi")
        groups = touched.join(duplicate_groups(profiles), "email_hash", "left")
        # Most batches change no group, and a MERGE that changes nothing still scans and commits.
        changed = duplicate_group_changes(groups, stored_groups).localCheckpoint()
        if changed.isEmpty():
            return
        (delta_table(spark, self.table("silver.duplicate_profiles")).alias("t")
         .merge(changed.alias("s"), "t.email_hash = s.email_hash")
         .whenMatchedDelete(condition=F.col("s.profile_count").isNull())
         .whenMatchedUpdateAll(condition=~F.col("t.user_ids").eqNullSafe(F.col("s.user_ids")))
         .whenNotMatchedInsertAll(condition=F.col("s.profile_count").isNotNull())
         .execute())

    def _record_tombstones(self, spark: SparkSession, gone: DataFrame) -> None:
        """Remember each delete by a keyed hash of the user_id, never the id."""
        (delta_table(spark, self.table("silver.profile_tombstones")).alias("t")
         .merge(tombstone_rows(gone).alias("s"), "t.subject_hash = s.subject_hash")
         .whenMatchedUpdateAll(condition=position(F.col("s.deleted_sequence")) > position(F.col("t.deleted_sequence")))
         .whenNotMatchedInsertAll()
         .execute())

    def _purge_stragglers(self, spark: SparkSession, batch: DataFrame, tombstones: DataFrame, batch_id: int) -> None:
        """Events of erased people that occurred before their erasure but reached bronze
        after it (a phone syncing offline events) go from bronze.events in this batch, the
        one that drops them; when it holds one, quarantined records of its ingest runs that
        name an erased person go too (tailor vacuum sweeps the rest)."""
        # One pass over the batch in the common case (no erased person in it): the users,
        # hashed and matched to the tombstones.
        erased = erased_users(tombstones, self.keys.hmac_key)(batch).localCheckpoint()
        if erased.isEmpty():
            return
        late = stragglers(erased)(batch).localCheckpoint()
        dates = ", ".join(f"DATE'{row.event_date}'" for row in late.select("event_date").distinct().collect())
        if dates:
            self.steps.run(spark, "erase.stragglers", batch_id, lambda: (
                delta_table(spark, self.table("bronze.events")).alias("t")
                .merge(late.alias("s"), f"t.event_date IN ({dates}) AND t.event_date = s.event_date "
                                        "AND t.event_id = s.event_id AND t.user_id = s.user_id")
                .whenMatchedDelete().execute()))
            log.info("batch %d purged %d straggling event(s) of erased people", batch_id, late.count())
        # A broken record from the same syncing device was quarantined by the same ingest runs.
        first_ingest = batch.agg(F.min("ingested_at")).first()[0]
        self.steps.run(spark, "erase.quarantine_stragglers", batch_id, lambda: purge_quarantined_erased(
            spark, self.config, self.keys.hmac_key, tombstones, since=first_ingest))

    def _purge(self, spark: SparkSession, gone: DataFrame, batch_id: int) -> None:
        """Remove erased people's rows from every table that holds rows about a person.

        Each purge is a MERGE ... DELETE joined on the erased ids, not a DELETE with the ids
        in its predicate: Delta writes a DELETE's predicate into the table log, which
        VACUUM never removes."""
        self.steps.run(spark, "erase.history", batch_id, lambda: (
            delta_table(spark, self.table("silver.profiles_history")).alias("t")
            .merge(gone.alias("s"), (F.col("t.user_id") == F.col("s.user_id"))
                   & deleted_by(F.col("t._sequence"), F.col("s.deleted_sequence")))
            .whenMatchedDelete()
            .execute()))
        for name, placement in PERSON_TABLES:
            table = self.table(name)
            if not table_exists(spark, table):
                continue
            condition = F.col("t.user_id") == F.col("s.user_id")
            if placement:
                condition = condition & event_erased(*placement(), F.col("s.deleted_sequence"))
            self.steps.run(spark, f"erase.{name}", batch_id, lambda table=table, condition=condition: (
                delta_table(spark, table).alias("t").merge(gone.alias("s"), condition).whenMatchedDelete().execute()))
        # A quarantined record cannot be trusted to parse: any that names the user goes.
        mentions = ("instr(cast(t.raw AS STRING), concat('\"', s.user_id, '\"')) > 0 OR "
                    "instr(cast(t.fixed_raw AS STRING), concat('\"', s.user_id, '\"')) > 0")
        quarantine = self.table("bronze.quarantine")
        if table_exists(spark, quarantine):
            self.steps.run(spark, "erase.quarantine", batch_id, lambda: (
                delta_table(spark, quarantine).alias("t")
                .merge(gone.select("user_id").alias("s"), mentions).whenMatchedDelete().execute()))

