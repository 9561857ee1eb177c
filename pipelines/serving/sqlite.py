"""The SQLite serving store: one file under storage.root, for the local demo, tests and a
single-host deployment.

Layout (schema version 1, created when missing):

    records(kind, generation, key, body)  UNIQUE (kind, generation, key), a rowid table
    meta(name PRIMARY KEY, value)         'live' -> the live generation; 'state:<name>' -> state
                                          (WITHOUT ROWID)

`records` is a rowid table with a unique index, not a WITHOUT ROWID table keyed by the
three columns: its rows carry a ~1 KB body, and SQLite keeps a WITHOUT ROWID row whole in
its B-tree, interior pages included, spilling anything over ~1 KB of a 4 KB page to
overflow pages (SQLite's guidance: WITHOUT ROWID for rows under a twentieth of a page).
Measured with 60,000 rows of 1.3 KB in random key order: WITHOUT ROWID wrote 13,000
rows/s into a 281 MB file; the rowid table with the unique index, 90,000 rows/s into
84 MB. The index holds only the short key columns; a read is an index seek and a rowid
lookup.

Suppression rows sit in `records` under the generation '' (no generation). WAL mode, so
readers never wait for the writer and see each statement's snapshot; synchronous=NORMAL
(a power cut may lose the last transactions, never corrupt the file); busy_timeout from
serving.sqlite.busy_timeout_ms, after which a locked database is `StoreUnavailable`.

Every write is one transaction (BEGIN IMMEDIATE: the write lock is taken first, so the
live generation a write resolves cannot change under it), the state with the rows.
`read_many` is one query that joins the live pointer from `meta`. A swap updates the
pointer in one transaction, then deletes the other generations in transactions of a few
thousand rows, so the API's own writes (suppression) wait milliseconds, not the whole
clean-up.

One connection per store object, used by the thread that opened it (sqlite3's default
check_same_thread): the API opens one store per request or app context.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.errors import ConfigError
from pipelines.serving.base import (
    GENERATION_KINDS,
    INITIAL_GENERATION,
    UNVERSIONED_KINDS,
    Kind,
    ServingStore,
    StoreUnavailable,
    one_line,
)

if TYPE_CHECKING:
    from pipelines.config import Config

SCHEMA_VERSION = 1
_UNVERSIONED = ""  # the generation column of suppression and preferences rows
_LIVE = "live"
_CLEAN_CHUNK_ROWS = 5000
_BULK_ROWS = 1000  # a write of this many rows marks the connection as an exporter's

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    generation TEXT NOT NULL,
    key TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (kind, generation, key)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""
_UPSERT = ("INSERT INTO records (kind, generation, key, body) VALUES (?, ?, ?, ?) "
           "ON CONFLICT (kind, generation, key) DO UPDATE SET body = excluded.body")
_DELETE = "DELETE FROM records WHERE kind = ? AND generation = ? AND key = ?"
_SET_META = "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"
_GET_META = "SELECT value FROM meta WHERE name = ?"
_LIVE_OR_INITIAL = f"COALESCE((SELECT value FROM meta WHERE name = '{_LIVE}'), '{INITIAL_GENERATION}')"
# One statement, whatever the number of keys (a JSON array parameter): the statement
# cache keeps it prepared, and no variable limit applies.
_READ_LIVE = (f"SELECT key, body FROM records WHERE kind = ? AND generation = {_LIVE_OR_INITIAL} "
              "AND key IN (SELECT value FROM json_each(?))")
_READ_UNVERSIONED = ("SELECT key, body FROM records WHERE kind = ? AND generation = ? "
                     "AND key IN (SELECT value FROM json_each(?))")
# One key (every single content read: its suppression record, its row): a plain equality,
# about half the cost of setting up json_each for a one-element array.
_READ_LIVE_ONE = f"SELECT key, body FROM records WHERE kind = ? AND generation = {_LIVE_OR_INITIAL} AND key = ?"
_READ_UNVERSIONED_ONE = "SELECT key, body FROM records WHERE kind = ? AND generation = ? AND key = ?"
_NEXT_GENERATION = "SELECT generation FROM records WHERE kind = ? AND generation > ? ORDER BY generation LIMIT 1"
# Checks the pointer again in each chunk: a generation someone else made live meanwhile stays.
_CLEAN_CHUNK = (f"DELETE FROM records WHERE rowid IN (SELECT rowid FROM records WHERE kind = ? AND generation = ? "
                f"AND generation <> {_LIVE_OR_INITIAL} LIMIT ?)")


class SqliteStore(ServingStore):
    def __init__(self, config: Config) -> None:
        super().__init__(config)
        settings = config.serving.sqlite
        path = config.under_root(settings.path)
        if "://" in path:
            raise ConfigError(f"serving.sqlite.path: {path} is not a local file; SQLite needs one (set "
                              "serving.sqlite.path to an absolute local path, or use serving.type redis or dynamodb)")
        self.path = path
        self._bulk = False
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=settings.busy_timeout_ms / 1000, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise StoreUnavailable(f"SQLite serving store {path}: {one_line(error)}") from None
        try:
            with self._errors():
                self._db.execute(f"PRAGMA busy_timeout = {int(settings.busy_timeout_ms)}")
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
                if self._schema_version() != SCHEMA_VERSION:  # a new file: the only open that writes
                    with self._transaction() as db:
                        if self._schema_version() == 0:
                            for statement in _SCHEMA.split(";"):
                                if statement.strip():
                                    db.execute(statement)
                            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def _schema_version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise ConfigError(f"serving store {self.path} has schema version {version}, newer than this Tailor's "
                              f"({SCHEMA_VERSION}): upgrade Tailor")
        return version

    # -- helpers ----------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A locked, missing, unreadable or corrupt database is StoreUnavailable; misuse
        (a closed store, another thread) is left as sqlite3's own error."""
        try:
            yield
        except sqlite3.Error as error:
            if isinstance(error, sqlite3.OperationalError) or type(error) is sqlite3.DatabaseError:
                raise StoreUnavailable(f"SQLite serving store {self.path}: {one_line(error)}") from None
            raise

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise
        db.execute("COMMIT")

    @staticmethod
    def _generation(db: sqlite3.Connection, kind: Kind, generation: str | None) -> str:
        if kind in UNVERSIONED_KINDS:
            return _UNVERSIONED
        if generation is not None:
            return generation
        row = db.execute(_GET_META, (_LIVE,)).fetchone()
        return str(row[0]) if row else INITIAL_GENERATION

    # -- ServingStore ---------------------------------------------------------------------

    def _write(self, kind: Kind, bodies: dict[str, str], generation: str | None, state: dict[str, str]) -> None:
        if len(bodies) >= _BULK_ROWS and not self._bulk:
            # An exporter's connection: up to 64 MiB of pages, taken as used (SQLite's default
            # is 2 MiB), so the unique index of a few hundred thousand keys stays in memory
            # while a rebuild writes in random key order (bench/export.py: about 15% more
            # rows per second). Not on the API's connections, one per thread and lane.
            self._db.execute("PRAGMA cache_size = -65536")
            self._bulk = True
        with self._errors(), self._transaction() as db:
            target = self._generation(db, kind, generation)
            db.executemany(_UPSERT, [(kind, target, key, body) for key, body in bodies.items()])
            db.executemany(_SET_META, [(f"state:{name}", value) for name, value in state.items()])

    def _delete(self, kind: Kind, keys: list[str], generation: str | None, state: dict[str, str]) -> None:
        with self._errors(), self._transaction() as db:
            target = self._generation(db, kind, generation)
            db.executemany(_DELETE, [(kind, target, key) for key in keys])
            db.executemany(_SET_META, [(f"state:{name}", value) for name, value in state.items()])

    def _read_many(self, kind: Kind, keys: list[str]) -> dict[str, str | bytes]:
        with self._errors():
            if len(keys) == 1 and kind in UNVERSIONED_KINDS:
                rows = self._db.execute(_READ_UNVERSIONED_ONE, (kind, _UNVERSIONED, keys[0])).fetchall()
            elif len(keys) == 1:
                rows = self._db.execute(_READ_LIVE_ONE, (kind, keys[0])).fetchall()
            elif kind in UNVERSIONED_KINDS:
                rows = self._db.execute(_READ_UNVERSIONED, (kind, _UNVERSIONED, json.dumps(keys))).fetchall()
            else:
                rows = self._db.execute(_READ_LIVE, (kind, json.dumps(keys))).fetchall()
        return {str(key): body for key, body in rows}

    def _live_generation(self) -> str | None:
        with self._errors():
            row = self._db.execute(_GET_META, (_LIVE,)).fetchone()
        return str(row[0]) if row else None

    def _swap(self, generation: str) -> None:
        with self._errors():
            with self._transaction() as db:
                db.execute(_SET_META, (_LIVE, generation))
            # The swap is committed: what follows is clean-up, which a crash only postpones.
            for kind in GENERATION_KINDS:
                for old in self._generations(kind):
                    if old != generation:
                        self._remove(kind, old)

    def _generations(self, kind: str) -> list[str]:
        """The generations holding rows of `kind`: one index seek each (a loose index scan)."""
        found: list[str] = []
        after = _UNVERSIONED
        while (row := self._db.execute(_NEXT_GENERATION, (kind, after)).fetchone()) is not None:
            after = str(row[0])
            found.append(after)
        return found

    def _remove(self, kind: str, generation: str) -> None:
        while True:
            with self._transaction() as db:
                removed = db.execute(_CLEAN_CHUNK, (kind, generation, _CLEAN_CHUNK_ROWS)).rowcount
            if removed < _CLEAN_CHUNK_ROWS:
                return

    def _keys(self, kind: Kind) -> Iterator[str]:
        with self._errors():
            rows = self._db.execute("SELECT key FROM records WHERE kind = ? AND generation = ?",
                                    (kind, _UNVERSIONED)).fetchall()
        return iter([str(key) for (key,) in rows])

    def _count(self, kind: Kind) -> int:
        generation = "?" if kind in UNVERSIONED_KINDS else _LIVE_OR_INITIAL
        parameters = (kind, _UNVERSIONED) if kind in UNVERSIONED_KINDS else (kind,)
        with self._errors():
            row = self._db.execute(f"SELECT COUNT(*) FROM records WHERE kind = ? AND generation = {generation}",
                                   parameters).fetchone()
        return int(row[0])

    def _get_state(self, name: str) -> str | None:
        with self._errors():
            row = self._db.execute(_GET_META, (f"state:{name}",)).fetchone()
        return str(row[0]) if row else None

    def _write_state(self, state: dict[str, str]) -> None:
        with self._errors(), self._transaction() as db:
            db.executemany(_SET_META, [(f"state:{name}", value) for name, value in state.items()])

    def close(self) -> None:
        self._db.close()
