"""The export from the published Delta tables to the serving store.

Incremental: for each table, the rows its Change Data Feed changed since the version
the store last took (kept in the store itself, `exported:<table>`, with the table's id),
the newest change per key: a row written is upserted, a row deleted is deleted. The
resume point is written with the table's last batch, never before its rows, and every
write is an idempotent upsert or delete, so an export killed at any point and run again
ends with the store equal to the tables.

Full (the first export, `--full-export`, a table re-created or behind the store's
version, or a change feed that no longer reaches back to it, e.g. after VACUUM): every
row is written under a new generation that readers do not see, then one swap makes it
live, so no reader ever sees half a rebuild. One export at a time per store: the
scheduler runs one publish at a time (two rebuilds at once would delete each other's
generation at their swaps).

Suppression records sit outside generations, because the API writes its own at once
(an unsubscribe, an erasure) before the pipeline has seen the change. gold.email_content's
`suppressed` rows (no email consent) get a record `{"reason": "no_email_consent",
"source": "publish"}` unless one is there already. When a row is published again, the
export removes its own record, and an API unsubscribe written before the person's current
email consent was given (its `since` is older than the row's `email_consent_at`); an
API erasure, complaint or hard bounce is never lifted. When a person leaves
gold.email_content (erased), the export's record and the API's erasure marker go; an
unsubscribe, complaint or hard bounce stays, so the address is still not sent to. Within a batch
suppressions are written before content is removed, and removed after content is
written: a reader never sees personal content for someone suppressed.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.publish.transforms import SUPPRESSED
from pipelines.publish.writes import PUBLISHED_TABLES
from pipelines.runtime.delta_tables import delta_table, read_changes, read_table_at, table_version
from pipelines.serving import CONTENT, MAX_READ_KEYS, SUPPRESSION, ServingStore

log = logging.getLogger("tailor.export")

KIND_OF_TABLE = {"gold.email_content": "content", "gold.content_defaults": "default", "gold.user_traits": "traits"}
EXPORT_SOURCE = "publish"
UNSUBSCRIBED = "unsubscribed"   # the only API record a newer email consent lifts
_TIME = "yyyy-MM-dd'T'HH:mm:ss'Z'"
_JSON = {"ignoreNullFields": "false"}
_NOT_SERVED = {"content_hash", "status", "email_consent_at"}
# What Spark says when a change feed's files are gone (VACUUM ran after the store's version).
_FEED_GONE = ("FileNotFoundException", "DELTA_CHANGE_DATA_FILE_NOT_FOUND", "FILE_NOT_FOUND",
              "DELTA_CHANGE_TABLE_FEED_DISABLED", "DELTA_MISSING_CHANGE_DATA")

Change = tuple[str, str | None, str | None, str | None, str | None, bool]


def state_name(table: str) -> str:
    return f"exported:{table}"


def served_body(table: str) -> Column:
    """A row as the JSON the API serves (DESIGN.md's content row; a traits row's fields),
    nulls kept, times in UTC ISO-8601."""
    schema, key = PUBLISHED_TABLES[table]
    hidden = _NOT_SERVED | ({"key"} if key == "key" else set())
    fields: list[Column] = [] if key == "user_id" else [F.lit(None).cast("string").alias("user_id")]
    for item in schema:
        if item.name in hidden:
            continue
        column = F.col(item.name)
        if item.dataType.typeName() == "timestamp":
            column = F.date_format(column, _TIME)
        fields.append(column.alias(item.name))
    return F.to_json(F.struct(*fields), _JSON)


def _forget(record: dict[str, Any]) -> bool:
    """Whether a person's record goes when they leave gold.email_content: the export's
    own, and the API's erasure marker (the erasure is done). An unsubscribe, a complaint
    or a hard bounce stays: the address may come back, and must still not be sent to."""
    return record.get("source") == EXPORT_SOURCE or record.get("reason") == "erased"


def _older(since: Any, than: str | None) -> bool:
    """True when the record's `since` is before `than` (both ISO-8601); unknown: False."""
    if not isinstance(since, str) or than is None:
        return False
    try:
        return datetime.fromisoformat(since.replace("Z", "+00:00")) < datetime.fromisoformat(
            than.replace("Z", "+00:00"))
    except ValueError:
        return False


@dataclass
class _Batch:
    """What one write round holds: rows to upsert (JSON text) and keys to delete by
    kind, and the suppression decisions that need the records already stored."""

    upserts: dict[str, dict[str, str]] = field(default_factory=dict)
    deletes: dict[str, list[str]] = field(default_factory=dict)
    suppress: dict[str, str | None] = field(default_factory=dict)     # key -> since
    unsuppress: dict[str, str | None] = field(default_factory=dict)   # key -> email consent time
    forget: list[str] = field(default_factory=list)                   # gone: every record goes
    size: int = 0

    def add(self, target: dict[str, Any] | list[str], key: str, value: Any = None) -> None:
        if isinstance(target, list):
            target.append(key)
        else:
            target[key] = value
        self.size += 1


class Exporter:
    """Writes rows of the published tables into one store, in batches."""

    def __init__(self, store: ServingStore, batch_rows: int, generation: str | None = None) -> None:
        self.store, self.batch_rows, self.generation = store, batch_rows, generation
        self.written = {"upserted": 0, "deleted": 0, "suppressed": 0, "unsuppressed": 0}

    def apply(self, table: str, changes: Iterable[Change], state: dict[str, str]) -> None:
        """`changes`: (key, body, status, generated_at, email_consent_at, deleted); the
        last batch carries `state`."""
        kind = KIND_OF_TABLE[table]
        batch = _Batch()
        for key, body, status, generated_at, consent_at, deleted in changes:
            if deleted:
                batch.add(batch.deletes.setdefault(kind, []), key)
                if kind == CONTENT:
                    batch.add(batch.forget, key)
            elif status == SUPPRESSED:
                batch.add(batch.deletes.setdefault(kind, []), key)
                batch.add(batch.suppress, key, generated_at)
            elif body is not None:
                batch.add(batch.upserts.setdefault(kind, {}), key, body)
                if kind == CONTENT:
                    batch.add(batch.unsuppress, key, consent_at)
            if batch.size >= self.batch_rows:
                self._flush(batch, {})
                batch = _Batch()
        self._flush(batch, state)

    def _stored_suppressions(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), MAX_READ_KEYS):
            found |= self.store.read_many(SUPPRESSION, keys[start:start + MAX_READ_KEYS])
        return found

    def _flush(self, batch: _Batch, state: dict[str, str]) -> None:
        store = self.store
        stored = self._stored_suppressions([*batch.suppress, *batch.unsuppress])
        # A record someone else wrote (the API: unsubscribed, erased) is never replaced.
        new_records = {key: {"reason": "no_email_consent", "source": EXPORT_SOURCE, "since": since}
                       for key, since in batch.suppress.items()
                       if stored.get(key, {}).get("source", EXPORT_SOURCE) == EXPORT_SOURCE}
        lifted = [key for key, consent_at in batch.unsuppress.items() if key in stored
                  and (stored[key].get("source") == EXPORT_SOURCE
                       or (stored[key].get("reason") == UNSUBSCRIBED and _older(stored[key].get("since"), consent_at)))]
        forgotten = self._stored_suppressions(batch.forget)
        gone = [*lifted, *[key for key, record in forgotten.items() if _forget(record)]]
        writes: list[Callable[[dict[str, str] | None], None]] = []
        if new_records:
            writes.append(lambda st: store.write_batch(SUPPRESSION, new_records, state=st))
        for kind, keys in batch.deletes.items():
            writes.append(lambda st, kind=kind, keys=keys: store.delete(kind, keys, generation=self.generation,
                                                                        state=st))
        for kind, bodies in batch.upserts.items():
            writes.append(lambda st, kind=kind, bodies=bodies:
                          store.write_json(kind, bodies, generation=self.generation, state=st))
        if gone:
            writes.append(lambda st: store.delete(SUPPRESSION, gone, state=st))
        # The resume point travels with the last write of the table's last batch.
        for position, write in enumerate(writes):
            write(state if position == len(writes) - 1 and state else None)
        if not writes and state:
            for name, value in state.items():
                store.set_state(name, value)
        self.written["deleted"] += sum(len(keys) for keys in batch.deletes.values())
        self.written["upserted"] += sum(len(bodies) for bodies in batch.upserts.values())
        self.written["suppressed"] += len(new_records)
        self.written["unsuppressed"] += len(lifted)


def _bodies(table: str, rows: DataFrame, deleted: Column) -> DataFrame:
    """(key, body, status, generated_at, email_consent_at, deleted): status and consent
    time are gold.email_content's."""
    _, key = PUBLISHED_TABLES[table]
    content = table == "gold.email_content"
    return rows.select(F.col(key).alias("key"), served_body(table).alias("body"),
                       (F.col("status") if content else F.lit(None).cast("string")).alias("status"),
                       F.date_format("generated_at", _TIME).alias("generated_at"),
                       (F.date_format("email_consent_at", _TIME) if content else F.lit(None).cast("string"))
                       .alias("email_consent_at"),
                       deleted.alias("deleted"))


def _rows(frame: DataFrame) -> Iterator[Change]:
    for row in frame.toLocalIterator(prefetchPartitions=True):
        yield row.key, row.body, row.status, row.generated_at, row.email_consent_at, bool(row.deleted)


def _newest_changes(spark: SparkSession, config: Config, table: str, first: int, last: int) -> DataFrame:
    """The newest change of each key in versions first..last, as `_bodies` rows."""
    _, key = PUBLISHED_TABLES[table]
    changes = (read_changes(spark, config.table(table), first, last)
               .where(F.col("_change_type") != "update_preimage"))
    newest = Window.partitionBy(key).orderBy(F.desc("_commit_version"))
    latest = changes.withColumn("_n", F.row_number().over(newest)).where(F.col("_n") == 1)
    return _bodies(table, latest, F.col("_change_type") == "delete")


def _table_id(spark: SparkSession, config: Config, table: str) -> str:
    return str(delta_table(spark, config.table(table)).detail().select("id").first()[0])


def _resume_point(text: str | None) -> tuple[str, int] | None:
    try:
        point = json.loads(text) if text else None
        return (str(point["table_id"]), int(point["version"])) if isinstance(point, dict) else None
    except (ValueError, KeyError, TypeError):
        return None


def _feed_gone(error: Exception) -> bool:
    text = str(error)
    return isinstance(error, AnalysisException) or any(marker in text for marker in _FEED_GONE)


def _forget_the_gone(spark: SparkSession, config: Config, store: ServingStore, version: int) -> int:
    """After a rebuild: the records `_forget` lets go of, of people gold.email_content no
    longer holds (erased while the change feed that said so was unread), at the `version`
    the rebuild wrote: someone erased after it keeps the API's marker until the export
    that removes their content."""
    recorded = list(store.keys(SUPPRESSION))
    if not recorded:
        return 0
    keys = spark.createDataFrame([(key,) for key in recorded], "user_id string")
    content = read_table_at(spark, config.table("gold.email_content"), version)
    absent = [row.user_id for row in keys.join(content, "user_id", "left_anti").collect()]
    gone = []
    for start in range(0, len(absent), MAX_READ_KEYS):
        records = store.read_many(SUPPRESSION, absent[start:start + MAX_READ_KEYS])
        gone += [key for key, record in records.items() if _forget(record)]
    for start in range(0, len(gone), MAX_READ_KEYS):
        store.delete(SUPPRESSION, gone[start:start + MAX_READ_KEYS])
    return len(gone)


def export(spark: SparkSession, config: Config, store: ServingStore, full: bool = False,
           pinned: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Bring `store` up to the published tables' current versions, or the `pinned` ones (the
    version the quality gate checked: a commit landing after the check waits for the next
    export); returns what it did."""
    pinned = pinned or {}
    unknown = sorted(set(pinned) - set(KIND_OF_TABLE))
    if unknown:
        raise ValueError(f"{unknown[0]} is not an exported table; one of {', '.join(KIND_OF_TABLE)}")
    versions = {table: pinned[table] if table in pinned else table_version(spark, config.table(table))
                for table in KIND_OF_TABLE}
    missing = [table for table, version in versions.items() if version is None]
    if missing:
        raise ValueError(f"{missing[0]} does not exist yet: publish first")
    ids = {table: _table_id(spark, config, table) for table in KIND_OF_TABLE}
    for table in pinned:
        taken = _resume_point(store.get_state(state_name(table)))
        if taken and taken[0] == ids[table] and pinned[table] < taken[1] <= (  # type: ignore[operator]
                table_version(spark, config.table(table)) or 0):
            # A later publish exported past the version this one checked, meanwhile: the
            # store stays there (its gate checked that version), never goes back.
            log.info("the store holds %s at version %d, past the %s pinned", table, taken[1], pinned[table])
            versions[table] = taken[1]
    points = {table: json.dumps({"table_id": ids[table], "version": versions[table]}) for table in KIND_OF_TABLE}
    reason = "--full-export" if full else None
    plans: dict[str, DataFrame] = {}
    for table, version in versions.items():
        if reason:
            break
        taken = _resume_point(store.get_state(state_name(table)))
        if taken is None:
            reason = f"the store has no resume point for {table}"
        elif taken[0] != ids[table] or taken[1] > (version or 0):
            reason = f"{table} is not the table the store was exported from (re-created, or an older copy)"
        elif taken[1] < (version or 0):
            plans[table] = _newest_changes(spark, config, table, taken[1] + 1, version or 0)
    mode = "incremental"
    exporter = Exporter(store, config.publish.export_batch_rows)
    if reason is None:
        try:
            for table, changes in plans.items():
                exporter.apply(table, _rows(changes), {state_name(table): points[table]})
        except Exception as error:  # noqa: BLE001 (only a change feed that is gone is handled; the rest re-raised)
            if not _feed_gone(error):
                raise
            reason = f"a change feed no longer reaches back to the store's version ({str(error).splitlines()[0][:160]})"
    if reason is not None:
        log.warning("rebuilding the serving store: %s", reason)
        mode = "full"
        generation = f"g{versions['gold.email_content']}-{uuid.uuid4().hex[:8]}"
        exporter = Exporter(store, config.publish.export_batch_rows, generation)
        for table in KIND_OF_TABLE:
            snapshot = read_table_at(spark, config.table(table), versions[table])
            exporter.apply(table, _rows(_bodies(table, snapshot, F.lit(False))), {})
        store.swap(generation)
        _forget_the_gone(spark, config, store, versions["gold.email_content"] or 0)
        for table in KIND_OF_TABLE:
            store.set_state(state_name(table), points[table])
    return {"mode": mode, "versions": versions, **exporter.written}
