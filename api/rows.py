"""What a content read answers: the fallback tiers, consent at read time, the caches.

For each user id, in this order:

1. a suppression record whose reason is in GONE_REASONS (unsubscribed, erased, a spam
   complaint, a hard bounce, no email consent as publish found it): 410, so the email
   tool skips the send;
2. any other suppression record (personalization consent revoked): no personal content,
   the segment default with `no_consent`;
3. the personal row, as published (it may carry its own fallback: holdout, cold_start);
4. no row: the global default with `unknown_user` (404 when the caller asks `strict`).

Suppression is read from the store on every request, never cached, so a change made on
another worker or host counts at once. Content rows are cached in process for
api.cache_ttl_s (a suppression written here drops the person's entry at once).
Fallback rows (defaults) are read at start-up, kept in process, and read again every
api.defaults_refresh_s; when the store is down every id gets the cached default with
`store_unavailable`, and if even that was never read, the last-resort row shipped in
conf/templates/fallback_content.json; but a person this host's API made gone is 410 all
the same (api/recently_gone.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachetools import TTLCache
from flask import Flask, current_app

from api.metrics import metrics
from api.recently_gone import RecentlyGone, gone_here, location
from api.store import StoreHolder, holder
from pipelines.config import Config, read_yaml_mapping
from pipelines.serving import CONTENT, DEFAULT, SUPPRESSION, TRAITS, StoreUnavailable

log = logging.getLogger("tailor.api.rows")
# no_email_consent: publish found no email_marketing consent; the email tool must not send either.
GONE_REASONS = frozenset({"unsubscribed", "erased", "complaint", "hard_bounce", "no_email_consent"})
UNKNOWN_USER, NO_CONSENT, STORE_UNAVAILABLE = "unknown_user", "no_consent", "store_unavailable"
_ABSENT: dict[str, Any] = {}  # cached "no row for this id", distinct from a miss
# A row is encoded once when it enters the cache, and answers are put together from the
# encoded text: encoding a 100-row batch again on every request cost more than reading it.
encode_row = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True)
class Answer:
    user_id: str
    status: int                     # 200, 404 (strict and unknown) or 410
    row: dict[str, Any] | None      # the served row for 200
    reason: str | None = None       # the fallback reason (200) or why the person is gone (410)
    encoded: str | None = None      # the row as JSON text, when known already

    @property
    def text(self) -> str:
        return self.encoded if self.encoded is not None else encode_row(self.row)

    @property
    def etag(self) -> str | None:
        if self.row is None:
            return None
        version = str(self.row.get("content_version") or "none")
        fallback = self.row.get("fallback")
        return version if fallback is None else f"{version};{fallback}"


class ContentCache:
    """user id -> (content row or _ABSENT, its JSON text), for cache_ttl_s; thread-safe."""

    def __init__(self, ttl_s: float, max_entries: int) -> None:
        self._cache: TTLCache[str, tuple[dict[str, Any], str]] | None = (
            TTLCache(max_entries, ttl_s) if ttl_s > 0 else None)
        self._lock = threading.Lock()

    def get(self, user_id: str) -> tuple[dict[str, Any], str] | None:
        if self._cache is None:
            return None
        with self._lock:
            return self._cache.get(user_id)

    def put(self, user_id: str, row: dict[str, Any], text: str) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache[user_id] = (row, text)

    def invalidate(self, user_id: str) -> None:
        if self._cache is not None:
            with self._lock:
                self._cache.pop(user_id, None)


def default_keys(config: Config) -> list[str]:
    """The default rows worth reading at start-up: the global one and each segment's, in
    publish.default_locale (other locales are read when first asked for)."""
    locale = config.publish.default_locale
    rules = read_yaml_mapping(Path(config.conf_file(config.features.segments_file)), "segment rules file")
    segments = [*dict(rules.get("segments") or {}), str(rules.get("default_segment") or "general")]
    return [f"global:{locale}", *dict.fromkeys(f"segment:{segment}:{locale}" for segment in segments)]


def last_resort_row(config: Config) -> dict[str, Any]:
    path = Path(__file__).resolve().parent.parent / "conf" / "templates" / "fallback_content.json"
    if not path.is_file():
        path = Path(config.conf_dir) / "templates" / "fallback_content.json"
    row: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    row["locale"] = row.get("locale") or config.publish.default_locale
    return row


class Defaults:
    """Fallback rows by key, kept in process; read again after refresh_s, kept when the store fails."""

    def __init__(self, config: Config) -> None:
        self.locale = config.publish.default_locale
        self.refresh_s = config.api.defaults_refresh_s
        self.last_resort = last_resort_row(config)
        self._rows: dict[str, dict[str, Any] | None] = {}
        self._read_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def load(self, store_holder: StoreHolder, keys: Sequence[str]) -> None:
        """Read `keys` now (start-up, or a refresh); a store failure keeps what is known."""
        try:
            found = store_holder.guarded(lambda store: store.read_many(DEFAULT, list(keys)))
        except StoreUnavailable:
            return
        now = time.monotonic()
        with self._lock:
            for key in keys:
                if key in found or key not in self._rows:
                    self._rows[key] = found.get(key)
                self._read_at[key] = now

    def _candidates(self, segment: str | None, locale: str | None) -> list[str]:
        keys = [f"segment:{segment}:{locale}"] if segment and locale else []
        if segment and locale != self.locale:
            keys.append(f"segment:{segment}:{self.locale}")
        if locale:
            keys.append(f"global:{locale}")
        keys.append(f"global:{self.locale}")
        return list(dict.fromkeys(keys))

    def row(self, store_holder: StoreHolder | None, segment: str | None, locale: str | None) -> dict[str, Any]:
        """The most specific default known; with a holder, stale or unseen keys are read first."""
        keys = self._candidates(segment, locale)
        if store_holder is not None:
            now = time.monotonic()
            with self._lock:
                stale = [key for key in keys if now - self._read_at.get(key, -1e18) >= self.refresh_s]
            if stale:
                self.load(store_holder, stale)
        with self._lock:
            for key in keys:
                found = self._rows.get(key)
                if found is not None:
                    return found
        return self.last_resort


def _fallback(user_id: str, default: dict[str, Any], reason: str) -> dict[str, Any]:
    return {**default, "user_id": user_id, "fallback": reason}


def resolve(user_ids: Sequence[str], strict: bool = False, app: Flask | None = None) -> list[Answer]:
    """One Answer per distinct id, in the order asked. Never raises: a store outage, or
    anything unexpected from a store client, is fallback content (a content read is never 5xx)."""
    app = app or current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        answers = _answers(user_ids, strict, app)
    except Exception as error:  # noqa: BLE001 - the email tool gets content whatever happened
        log.error("content read failed, serving fallback: %s", type(error).__name__)
        answers = _outage(app, list(dict.fromkeys(user_ids)), None)
    counters = metrics(app)
    for answer in answers:
        counters.labelled(counters.rows, str(answer.status)).inc()
    return answers


def _outage(app: Flask, ids: list[str], suppressed: dict[str, dict[str, Any]] | None) -> list[Answer]:
    """Every id gets the cached default with store_unavailable, but a person known to be gone
    still gets 410: from the suppression read when it answered before the store failed,
    else from those this host's API made gone (api/recently_gone.py)."""
    counters = metrics(app)
    counters.store_errors.inc()
    default: dict[str, Any] = app.extensions["tailor"]["defaults"].row(None, None, None)
    if suppressed is None:
        suppressed = {user_id: {"reason": reason} for user_id, reason in gone_here(app, ids).items()}
    answers = []
    for user_id in ids:
        reason = str(suppressed.get(user_id, {}).get("reason") or "")
        if reason in GONE_REASONS:
            answers.append(Answer(user_id, 410, None, reason))
        else:
            counters.fallbacks.labels(STORE_UNAVAILABLE).inc()
            answers.append(Answer(user_id, 200, _fallback(user_id, default, STORE_UNAVAILABLE), STORE_UNAVAILABLE))
    return answers


def _answers(user_ids: Sequence[str], strict: bool, app: Flask) -> list[Answer]:
    parts = app.extensions["tailor"]
    store_holder: StoreHolder = holder(app)
    cache: ContentCache = parts["cache"]
    defaults: Defaults = parts["defaults"]
    counters = metrics(app)
    ids = list(dict.fromkeys(user_ids))

    try:
        suppressed = store_holder.guarded(lambda store: store.read_many(SUPPRESSION, ids))
    except StoreUnavailable:
        return _outage(app, ids, None)
    rows: dict[str, dict[str, Any]] = {}
    texts: dict[str, str] = {}
    missing = []
    for user_id in ids:
        cached = cache.get(user_id)
        if cached is None:
            missing.append(user_id)
        else:
            rows[user_id], texts[user_id] = cached
    counters.labelled(counters.cache, "hit").inc(len(rows))
    if missing:
        counters.labelled(counters.cache, "miss").inc(len(missing))
        try:
            found = store_holder.guarded(lambda store: store.read_many(CONTENT, missing))
        except StoreUnavailable:
            return _outage(app, ids, suppressed)
        for user_id in missing:
            rows[user_id] = found.get(user_id, _ABSENT)
            texts[user_id] = "" if rows[user_id] is _ABSENT else encode_row(rows[user_id])
            cache.put(user_id, rows[user_id], texts[user_id])
    # A suppressed person without a row of their own (publish removed it) keeps their segment in traits.
    need_traits = [user_id for user_id in ids if user_id in suppressed and rows[user_id] is _ABSENT
                   and suppressed[user_id].get("reason") not in GONE_REASONS]
    traits: dict[str, dict[str, Any]] = {}
    if need_traits:
        try:
            traits = store_holder.guarded(lambda store: store.read_many(TRAITS, need_traits))
        except StoreUnavailable:
            counters.store_errors.inc()
    answers = []
    for user_id in ids:
        row = rows[user_id]
        record = suppressed.get(user_id)
        if record is not None:
            reason = str(record.get("reason") or "suppressed")
            if reason in GONE_REASONS:
                counters.gone.labels(reason).inc()
                answers.append(Answer(user_id, 410, None, reason))
                continue
            segment = row.get("segment") or traits.get(user_id, {}).get("primary_segment")
            default = defaults.row(store_holder, segment, row.get("locale"))
            counters.fallbacks.labels(NO_CONSENT).inc()
            answers.append(Answer(user_id, 200, _fallback(user_id, default, NO_CONSENT), NO_CONSENT))
        elif row is not _ABSENT:
            if row.get("fallback"):
                counters.labelled(counters.fallbacks, str(row["fallback"])).inc()
            answers.append(Answer(user_id, 200, row, row.get("fallback"), texts[user_id]))
        elif strict:
            answers.append(Answer(user_id, 404, None, UNKNOWN_USER))
        else:
            counters.fallbacks.labels(UNKNOWN_USER).inc()
            default = defaults.row(store_holder, None, None)
            answers.append(Answer(user_id, 200, _fallback(user_id, default, UNKNOWN_USER), UNKNOWN_USER))
    return answers


def init_app(app: Flask, config: Config) -> None:
    parts = app.extensions.setdefault("tailor", {})
    parts["cache"] = ContentCache(config.api.cache_ttl_s, config.api.cache_max_entries)
    parts["recently_gone"] = RecentlyGone(location(config))
    defaults = parts["defaults"] = Defaults(config)
    # Fallback rows in process from the start: an outage later still serves real defaults.
    store_holder = holder(app)
    with app.app_context():
        defaults.load(store_holder, default_keys(config))
    # Not kept: a connection opened before gunicorn forks must not be shared by its workers.
    store_holder.drop_thread_store()
