"""The export from the published Delta tables to the serving store.

Incremental: for each table, the rows its Change Data Feed changed since the version
the store last took (kept in the store itself, `exported:<table>`), the newest change
per key: a row written is upserted, a row deleted is deleted. The resume point is
written with the table's last batch, never before its rows, and every write is an
idempotent upsert or delete, so an export killed at any point and run again ends with
the store equal to the tables.

Full (the first export, `--full`, or a change feed that no longer reaches back to the
store's version): every row is written under a new generation that readers do not see,
then one swap makes it live, so no reader ever sees half a rebuild.

gold.email_content's `suppressed` rows (no email consent) are not served: their content
is removed and a suppression record (`source: publish`) written. Suppression records
are outside generations: the API writes its own at once when someone unsubscribes, and
the export removes only those it wrote itself.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pipelines.config import Config
from pipelines.publish.transforms import SUPPRESSED
from pipelines.publish.writes import PUBLISHED_TABLES, table_version
from pipelines.runtime.delta_tables import read_changes, read_table
from pipelines.serving import CONTENT, MAX_READ_KEYS, SUPPRESSION, ServingStore

log = logging.getLogger("tailor.export")

KIND_OF_TABLE = {"gold.email_content": "content", "gold.content_defaults": "default", "gold.user_traits": "traits"}
EXPORT_SOURCE = "publish"
_TIME = "yyyy-MM-dd'T'HH:mm:ss'Z'"
_JSON = {"ignoreNullFields": "false"}


def state_name(table: str) -> str:
    return f"exported:{table}"


def served_body(table: str) -> Column:
    """A row as the JSON the API serves (DESIGN.md's content row; a traits row's fields),
    nulls kept, times in UTC ISO-8601."""
    schema, key = PUBLISHED_TABLES[table]
    hidden = {"content_hash", "status"} | ({"key"} if key == "key" else set())
    fields: list[Column] = [] if key == "user_id" else [F.lit(None).cast("string").alias("user_id")]
    for item in schema:
        if item.name in hidden:
            continue
        column = F.col(item.name)
        if item.dataType.typeName() == "timestamp":
            column = F.date_format(column, _TIME)
        fields.append(column.alias(item.name))
    return F.to_json(F.struct(*fields), _JSON)


@dataclass
class _Batch:
    """What one write round holds, by kind: rows to upsert (JSON text), suppression
    records to write, keys to delete, and people whose own suppression may go."""

    upserts: dict[str, dict[str, str]] = field(default_factory=dict)
    suppressions: dict[str, dict[str, Any]] = field(default_factory=dict)
    deletes: dict[str, list[str]] = field(default_factory=dict)
    unsuppress: list[str] = field(default_factory=list)
    size: int = 0

    def upsert(self, kind: str, key: str, body: str) -> None:
        self.upserts.setdefault(kind, {})[key] = body
        self.size += 1

    def suppress(self, key: str, record: dict[str, Any]) -> None:
        self.suppressions[key] = record
        self.size += 1

    def delete(self, kind: str, key: str) -> None:
        self.deletes.setdefault(kind, []).append(key)
        self.size += 1


class Exporter:
    """Writes rows of the published tables into one store, in batches."""

    def __init__(self, store: ServingStore, batch_rows: int, generation: str | None = None) -> None:
        self.store, self.batch_rows, self.generation = store, batch_rows, generation
        self.written = {"upserted": 0, "deleted": 0, "suppressed": 0}

    def apply(self, table: str, changes: Iterable[tuple[str, str | None, str | None, str | None, bool]],
              state: dict[str, str]) -> None:
        """`changes`: (key, body, status, generated_at, deleted); the last batch carries `state`."""
        kind = KIND_OF_TABLE[table]
        batch = _Batch()
        for key, body, status, generated_at, deleted in changes:
            if deleted:
                batch.delete(kind, key)
                if kind == CONTENT:
                    batch.delete(SUPPRESSION, key)
            elif status == SUPPRESSED:
                batch.delete(kind, key)
                batch.suppress(key, {"reason": "no_email_consent", "source": EXPORT_SOURCE, "since": generated_at})
            elif body is not None:
                batch.upsert(kind, key, body)
                if kind == CONTENT:
                    batch.unsuppress.append(key)
            if batch.size >= self.batch_rows:
                self._flush(batch, {})
                batch = _Batch()
        self._flush(batch, state)

    def _flush(self, batch: _Batch, state: dict[str, str]) -> None:
        store = self.store
        if batch.unsuppress:
            # Only the export's own records: one the API wrote when someone unsubscribed
            # stays until the pipeline has seen the change (the row then arrives suppressed).
            found: dict[str, dict[str, Any]] = {}
            for start in range(0, len(batch.unsuppress), MAX_READ_KEYS):
                found |= store.read_many(SUPPRESSION, batch.unsuppress[start:start + MAX_READ_KEYS])
            ours = [key for key, record in found.items() if record.get("source") == EXPORT_SOURCE]
            if ours:
                batch.deletes.setdefault(SUPPRESSION, []).extend(ours)
        writes: list[Callable[[dict[str, str] | None], None]] = []
        for kind, keys in batch.deletes.items():
            generation = None if kind == SUPPRESSION else self.generation
            writes.append(lambda st, kind=kind, keys=keys, generation=generation:
                          store.delete(kind, keys, generation=generation, state=st))
        for kind, bodies in batch.upserts.items():
            writes.append(lambda st, kind=kind, bodies=bodies:
                          store.write_json(kind, bodies, generation=self.generation, state=st))
        if batch.suppressions:
            writes.append(lambda st: store.write_batch(SUPPRESSION, batch.suppressions, state=st))
        # The resume point travels with the last write of the table's last batch.
        for position, write in enumerate(writes):
            write(state if position == len(writes) - 1 and state else None)
        self.written["deleted"] += sum(len(keys) for keys in batch.deletes.values())
        self.written["upserted"] += sum(len(bodies) for bodies in batch.upserts.values())
        self.written["suppressed"] += len(batch.suppressions)
        if not writes and state:
            for name, value in state.items():
                store.set_state(name, value)


def _bodies(table: str, rows: DataFrame) -> DataFrame:
    """(key, body, status, generated_at): status is gold.email_content's (published |
    suppressed)."""
    _, key = PUBLISHED_TABLES[table]
    status = F.col("status") if table == "gold.email_content" else F.lit(None).cast("string")
    return rows.select(F.col(key).alias("key"), served_body(table).alias("body"), status.alias("status"),
                       F.date_format("generated_at", _TIME).alias("generated_at"))


def _rows(frame: DataFrame) -> Iterator[tuple[str, str | None, str | None, str | None, bool]]:
    for row in frame.toLocalIterator(prefetchPartitions=True):
        yield row.key, row.body, row.status, row.generated_at, bool(row.deleted)


def _newest_changes(spark: SparkSession, config: Config, table: str, first: int, last: int) -> DataFrame:
    """(key, body, deleted): the newest change of each key in versions first..last."""
    _, key = PUBLISHED_TABLES[table]
    changes = (read_changes(spark, config.table(table), first, last)
               .where(F.col("_change_type") != "update_preimage"))
    newest = Window.partitionBy(key).orderBy(F.desc("_commit_version"))
    latest = changes.withColumn("_n", F.row_number().over(newest)).where(F.col("_n") == 1)
    bodies = _bodies(table, latest.drop("_n"))
    deleted = latest.select(F.col(key).alias("key"), (F.col("_change_type") == "delete").alias("deleted"))
    return bodies.join(deleted, "key")


def export(spark: SparkSession, config: Config, store: ServingStore, full: bool = False) -> dict[str, Any]:
    """Bring `store` up to the published tables' current versions; returns what it did."""
    versions = {table: table_version(spark, config.table(table)) for table in KIND_OF_TABLE}
    missing = [table for table, version in versions.items() if version is None]
    if missing:
        raise ValueError(f"{missing[0]} does not exist yet: publish first")
    taken = {table: store.get_state(state_name(table)) for table in KIND_OF_TABLE}
    mode = "full" if full or any(value is None for value in taken.values()) else "incremental"
    plans: dict[str, DataFrame] = {}
    if mode == "incremental":
        for table, version in versions.items():
            first = int(taken[table] or -1) + 1
            if first > (version or 0):
                continue
            try:
                changes = _newest_changes(spark, config, table, first, version or 0)
                changes.limit(1).collect()
            except AnalysisException as error:
                log.warning("%s has no change feed from version %d (%s): rebuilding the store", table, first,
                            str(error).splitlines()[0][:200])
                mode = "full"
                break
            plans[table] = changes
    if mode == "full":
        generation = f"g{versions['gold.email_content']}-{uuid.uuid4().hex[:8]}"
        exporter = Exporter(store, config.publish.export_batch_rows, generation)
        for table in KIND_OF_TABLE:
            snapshot = read_table(spark, config.table(table))
            rows = _bodies(table, snapshot).withColumn("deleted", F.lit(False))
            exporter.apply(table, _rows(rows), {})
        store.swap(generation)
        for table, version in versions.items():
            store.set_state(state_name(table), str(version))
    else:
        exporter = Exporter(store, config.publish.export_batch_rows)
        for table, changes in plans.items():
            exporter.apply(table, _rows(changes), {state_name(table): str(versions[table])})
    return {"mode": mode, "versions": versions, **exporter.written}
