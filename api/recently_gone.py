"""The people this host's API made gone (unsubscribed, erased, a complaint, a hard bounce),
kept on the host so that a content read that cannot reach the store still answers 410.

An unsubscribe waits on the consent lane (api.store_write_timeout_ms) and is saved while
content reads, at their 50 ms, fall back: a store too busy for reads still takes it. Those
reads answer from the cached defaults (`store_unavailable`) without asking the store, so
without this record the person would get a generic email instead of being skipped until
the store answered reads again.

The record is a small SQLite file (WAL), shared by every worker process of the host, since
the unsubscribe and the next read of the person seldom reach the same worker: under
`<storage.root>/api/` when that is a local folder, else in the system's temp folder, named
for the environment and the serving store so that two deployments on one host never share
it. It names a person by the pipeline's keyed hash (`subject_hash`), never by the user id.
It is only read when the store could not be; while reads work, the store's suppression
record decides, and an entry older than KEEP_S (a day) is dropped. Other hosts learn of the change
from the store once its reads answer again.

A failure of this file never fails a request: the change is in the store already, and
a read that cannot consult the file serves fallback content as it would without it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from flask import Flask

from pipelines.config import Config
from pipelines.pii import subject_hash_under

log = logging.getLogger("tailor.api.recently_gone")
# About as long as an outage of the store's reads lasts, with room: a note a re-subscribe
# on another host (or through the pipeline) did not clear keeps the person skipped, during
# an outage, this long at most.
KEEP_S = 24 * 3600
_WAIT_S = 0.05  # a read in an outage must stay quick; a writer holds the file for microseconds


def location(config: Config) -> Path:
    store = hashlib.sha256(f"{config.env}\n{config.serving.model_dump_json()}".encode()).hexdigest()[:16]
    local = config.under_root("api").removeprefix("file://")
    # Under a remote root, a folder of this user's own in the temp folder (see _private_folder).
    folder = Path(local) if "://" not in local else Path(tempfile.gettempdir()) / f"tailor-api-{os.getuid()}"
    return folder / f"recently_gone-{store}.sqlite"


def _private_folder(folder: Path) -> None:
    """A folder in the shared temp folder is this user's alone: made 0700, and refused when
    another user made it first or others may write to it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.parent == Path(tempfile.gettempdir()):
        found = folder.lstat()
        if stat.S_ISLNK(found.st_mode) or found.st_uid != os.getuid() or found.st_mode & 0o077:
            raise PermissionError(f"{folder} is not this user's private folder")


class RecentlyGone:
    """subject_hash -> why the person is gone, with a connection per thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    def _connection(self, create: bool) -> sqlite3.Connection | None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            return connection
        if not create and not self.path.exists():
            return None
        _private_folder(self.path.parent)
        connection = sqlite3.connect(self.path, timeout=_WAIT_S, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE IF NOT EXISTS gone (subject_hash TEXT PRIMARY KEY, reason TEXT NOT NULL, "
                           "at REAL NOT NULL)")
        # The clean-up on every note finds old entries by this, not by reading the table.
        connection.execute("CREATE INDEX IF NOT EXISTS gone_at ON gone (at)")
        self._local.connection = connection
        return connection

    def remember(self, subject_hash: str, reason: str) -> None:
        now = time.time()
        try:
            connection = self._connection(create=True)
            assert connection is not None
            with connection:
                connection.execute("INSERT OR REPLACE INTO gone VALUES (?, ?, ?)", (subject_hash, reason, now))
                connection.execute("DELETE FROM gone WHERE at < ?", (now - KEEP_S,))
        except (sqlite3.Error, OSError) as error:
            log.warning("could not note a person made gone on this host: %s", error)

    def forget(self, subject_hash: str) -> None:
        try:
            connection = self._connection(create=False)
            if connection is not None:
                with connection:
                    connection.execute("DELETE FROM gone WHERE subject_hash = ?", (subject_hash,))
        except (sqlite3.Error, OSError) as error:
            log.warning("could not drop a person from those made gone on this host: %s", error)

    def reasons(self, subject_hashes: Iterable[str]) -> dict[str, str]:
        """subject_hash -> reason, for those of `subject_hashes` this host made gone."""
        wanted = list(dict.fromkeys(subject_hashes))
        found: dict[str, str] = {}
        try:
            connection = self._connection(create=False)
            if connection is None:
                return found
            oldest = time.time() - KEEP_S
            for start in range(0, len(wanted), 500):  # below SQLite's limit on bound parameters
                chunk = wanted[start:start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(connection.execute(
                    f"SELECT subject_hash, reason FROM gone WHERE at >= ? AND subject_hash IN ({marks})",
                    (oldest, *chunk)).fetchall())
        except (sqlite3.Error, OSError) as error:
            log.warning("could not read those made gone on this host: %s", error)
        return found

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _parts(app: Flask) -> tuple[RecentlyGone, bytes]:
    parts = app.extensions["tailor"]
    return parts["recently_gone"], parts["pii_hmac_key"]


def note_gone(app: Flask, user_id: str, reason: str) -> None:
    record, key = _parts(app)
    record.remember(subject_hash_under(key, user_id), reason)


def note_back(app: Flask, user_id: str) -> None:
    record, key = _parts(app)
    record.forget(subject_hash_under(key, user_id))


def gone_here(app: Flask, user_ids: Iterable[str]) -> dict[str, str]:
    """user id -> reason, for those of `user_ids` this host's API made gone."""
    record, key = _parts(app)
    by_hash = {subject_hash_under(key, user_id): user_id for user_id in dict.fromkeys(user_ids)}
    return {by_hash[found]: reason for found, reason in record.reasons(by_hash).items()}
