"""The serving store as the API uses it, in the shape of flaskr's `db.py`: `get_store()`
opens it lazily, `init_app` registers the clean-up and a CLI command.

One store object per worker thread (a store is not for several threads at once, and
SQLite's connection may not cross them), opened on first use and kept across requests:
opening one per request would cost a TCP connect to Redis or DynamoDB every time. A
request that saw the store fail drops its thread's store at teardown, so the next one
reconnects.

Two lanes, each with its own store per thread:

- reads (content, traits, readiness, the fallback rows) go through `guarded()`: a short
  timeout (api.store_timeout_ms, given to the store's own client: Redis' socket timeout,
  botocore's connect and read timeouts, SQLite's busy timeout) and one circuit breaker
  per process, so that while the store is down requests fall back at once instead of
  each waiting for its timeout;
- consent (unsubscribe, preference changes, erasure, suppression from webhooks: their
  reads and their writes) goes through `consent()`: api.store_write_timeout_ms (default
  2 s) and a breaker of its own (same api.circuit_breaker settings). A store busy with an
  export may be too slow for a content read, which then falls back, but an unsubscribe
  must still be saved: the read lane's open circuit never refuses it. Only consent calls
  that failed even with their longer timeout open the consent circuit; while the store is
  down, a change is then refused at once (503, Retry-After) instead of holding a worker
  thread for the whole timeout, which a burst of them would take from content reads. The
  change is refused either way; the caller retries.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import Flask, current_app, g
from flask.cli import with_appcontext

from api.metrics import metrics
from pipelines.config import Config
from pipelines.serving import KINDS, ServingStore, StoreUnavailable, store_class

T = TypeVar("T")
log = logging.getLogger("tailor.api.store")


class CircuitOpen(StoreUnavailable):
    """The breaker is open: the store is not even tried."""


class CircuitBreaker:
    """closed -> (failure_threshold consecutive failures) -> open -> (reset_timeout_s) ->
    half-open: one trial call; success closes, failure opens again.

    `on_change(True)` when it opens, `on_change(False)` when a success closes it (not on
    open -> half-open, which only time does): called under the lock, so that a gauge set
    from it ends in the breaker's last state when two threads change it at once."""

    def __init__(self, failure_threshold: int, reset_timeout_s: float,
                 clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.failure_threshold, self.reset_timeout_s, self._clock = failure_threshold, reset_timeout_s, clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "half_open" if self._clock() - self._opened_at >= self.reset_timeout_s else "open"

    def before_call(self) -> None:
        with self._lock:
            if self._opened_at is None:
                return
            if self._clock() - self._opened_at < self.reset_timeout_s or self._trial_running:
                raise CircuitOpen("serving store circuit is open after repeated failures")
            self._trial_running = True

    def succeeded(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._failures, self._opened_at, self._trial_running = 0, None, False
            if was_open and self._on_change is not None:
                self._on_change(False)

    def failed(self) -> bool:
        """Counts a failure; True when it opened the circuit (it was closed)."""
        with self._lock:
            self._failures += 1
            self._trial_running = False
            was_closed = self._opened_at is None
            if not was_closed or self._failures >= self.failure_threshold:
                self._opened_at = self._clock()
            opened = was_closed and self._opened_at is not None
            if opened and self._on_change is not None:
                self._on_change(True)
            return opened

    def released(self) -> None:
        """An admitted call that proved nothing either way: a half-open trial slot is freed,
        the state and the count stay."""
        with self._lock:
            self._trial_running = False


READ, CONSENT = "read", "consent"
PROBE_STATE = "api_consent_probe"
# A throttled consent write is retried a few times with backoff (DynamoDB's unprocessed
# items: about 0.35 s in all); a throttled read is not, it falls back.
_CONSENT_DYNAMODB_RETRIES = 3


def _timeout_ms(config: Config, lane: str) -> int:
    return config.api.store_write_timeout_ms if lane == CONSENT else config.api.store_timeout_ms


def with_store_timeout(config: Config, lane: str = READ) -> Config:
    """`config` with every store client's timeout set to the lane's: api.store_timeout_ms
    for reads, api.store_write_timeout_ms for consent."""
    milliseconds = _timeout_ms(config, lane)
    serving = config.serving
    serving = serving.model_copy(update={
        "redis": serving.redis.model_copy(update={"socket_timeout_s": milliseconds / 1000}),
        "sqlite": serving.sqlite.model_copy(update={"busy_timeout_ms": milliseconds}),
        # A throttled read batch is not retried with backoff inside a request: it falls back.
        "dynamodb": serving.dynamodb.model_copy(
            update={"max_retries": _CONSENT_DYNAMODB_RETRIES if lane == CONSENT else 0}),
    })
    return config.model_copy(update={"serving": serving})


def _open(config: Config, lane: str) -> ServingStore:
    cls = store_class(config.serving.type)
    if config.serving.type == "dynamodb":
        from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

        seconds = _timeout_ms(config, lane) / 1000
        client_config = BotoConfig(connect_timeout=seconds, read_timeout=seconds,
                                   retries={"max_attempts": 1, "mode": "standard"})
        return cls(config, client_config=client_config)  # type: ignore[call-arg]
    return cls(config)


class StoreHolder:
    """Per app: each lane's store config and breaker, and each thread's open stores.
    `on_change(lane, is_open)`: a lane's circuit opened or closed (the metrics' gauge)."""

    def __init__(self, config: Config, on_change: Callable[[str, bool], None] | None = None) -> None:
        self.configs = {READ: with_store_timeout(config, READ), CONSENT: with_store_timeout(config, CONSENT)}
        self.config = self.configs[READ]
        settings = config.api.circuit_breaker

        def breaker(lane: str) -> CircuitBreaker:
            told = None if on_change is None else partial(on_change, lane)
            return CircuitBreaker(settings.failure_threshold, settings.reset_timeout_s, on_change=told)

        self.breaker, self.consent_breaker = breaker(READ), breaker(CONSENT)
        self._local = threading.local()
        self._all: list[ServingStore] = []
        self._lock = threading.Lock()

    def thread_store(self, lane: str = READ) -> ServingStore:
        store: ServingStore | None = getattr(self._local, lane, None)
        if store is None:
            store = _open(self.configs[lane], lane)
            setattr(self._local, lane, store)
            with self._lock:
                self._all.append(store)
        return store

    def drop_thread_store(self, lane: str | None = None) -> None:
        """Close this thread's store of `lane` (of both lanes when None)."""
        for name in (READ, CONSENT) if lane is None else (lane,):
            store: ServingStore | None = getattr(self._local, name, None)
            setattr(self._local, name, None)
            if store is not None:
                with self._lock:
                    if store in self._all:
                        self._all.remove(store)
                try:
                    store.close()
                except Exception:  # noqa: BLE001 - a broken connection may fail to close too
                    pass

    def close_all(self) -> None:
        with self._lock:
            stores, self._all = self._all, []
        for store in stores:
            try:
                store.close()
            except Exception:  # noqa: BLE001
                pass

    def guarded(self, call: Callable[[ServingStore], T]) -> T:
        """A read: `call(store)` behind the breaker, with the short timeout; StoreUnavailable
        (CircuitOpen included) when the store cannot answer, and the thread's store is
        dropped at teardown."""
        self.breaker.before_call()
        try:
            result = call(self.thread_store(READ))
        except StoreUnavailable:
            self.breaker.failed()
            g.store_failed = True
            raise
        except Exception as error:  # noqa: BLE001 - every failure must reach the breaker, or a trial never ends
            # A half-closed connection, a garbled reply, a client error the store passes on:
            # an outage as far as a reader can tell.
            self.breaker.failed()
            g.store_failed = True
            raise StoreUnavailable(f"serving store: {type(error).__name__}") from None
        self.breaker.succeeded()
        return result

    def consent(self, call: Callable[[ServingStore], T], write: bool = True) -> T:
        """A consent read or write: `call(store)` on the thread's consent store, which waits
        up to api.store_write_timeout_ms, behind the consent lane's own breaker: never
        refused by the read lane's open circuit, and its outcome does not move that one.
        StoreUnavailable (CircuitOpen included) when the store cannot answer even so; the
        thread's consent store is dropped at teardown.

        The breaker counts changes, not calls: a change reads, then writes, and a read that
        answers does not make up for the write that did not (an export holding SQLite's
        write lock). The request's first call asks the breaker; the outcome is given at
        teardown (`close_store`), so a half-open trial is the whole request: a failure if
        any call failed, a success if a write was made, and otherwise nothing (a change
        that needed no write, such as unsubscribing someone already unsubscribed, says
        nothing about whether writes work). `g` is the request's: under a test that pushes
        an app context around several requests, they share one admission."""
        if not g.get("consent_admitted", False):
            self.consent_breaker.before_call()
            g.consent_admitted = True
        if write:
            g.consent_wrote = True
        try:
            return call(self.thread_store(CONSENT))
        except StoreUnavailable:
            g.consent_store_failed = True
            raise
        except Exception as error:  # noqa: BLE001 - as guarded(): any client failure is an outage to the caller
            g.consent_store_failed = True
            raise StoreUnavailable(f"serving store: {type(error).__name__}") from None


def probe_consent_lane(store_holder: StoreHolder) -> None:
    """A half-open consent circuit's trial, made with a harmless write (the time, under
    PROBE_STATE) by the readiness probe: a store that recovered closes the circuit without
    waiting for someone to change a preference, and one still down opens it again. Only
    when the reset timeout has passed and no other trial runs; its outcome is recorded here,
    so the probe's own answer shows it."""
    breaker = store_holder.consent_breaker
    if breaker.state != "half_open":
        return
    try:
        breaker.before_call()
    except CircuitOpen:
        return  # another request is the trial
    try:
        store_holder.thread_store(CONSENT).set_state(PROBE_STATE, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    except Exception:  # noqa: BLE001 - any failure of the write is the trial failing
        breaker.failed()
        store_holder.drop_thread_store(CONSENT)
        return
    breaker.succeeded()
    log.info("the consent circuit closed: the readiness probe's write went through")


def holder(app: Flask | None = None) -> StoreHolder:
    found: StoreHolder = (app or current_app).extensions["tailor"]["store"]
    return found


def get_store() -> ServingStore:
    """This thread's store (opened on first use), as flaskr's `get_db()`; note its use on `g`."""
    g.store_used = True
    return holder().thread_store()


def close_store(_error: BaseException | None = None) -> None:
    if g.pop("store_failed", False):
        holder().drop_thread_store(READ)
    consent_failed = g.pop("consent_store_failed", False)
    wrote = g.pop("consent_wrote", False)
    if g.pop("consent_admitted", False):
        breaker = holder().consent_breaker
        if consent_failed:
            if breaker.failed():
                log.warning("the consent circuit opened after %d failed changes in a row: changes are refused "
                            "for %.1f s, then one is tried", breaker.failure_threshold, breaker.reset_timeout_s)
        elif wrote:
            breaker.succeeded()
        else:
            breaker.released()
    if consent_failed:
        holder().drop_thread_store(CONSENT)


@click.command("load-rows")
@with_appcontext
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def load_rows_command(path: Path) -> None:
    """Write a JSON file of {kind: {key: row}} into the serving store (demo and test data)."""
    document: dict[str, dict[str, dict[str, Any]]] = json.loads(path.read_text(encoding="utf-8"))
    store = get_store()
    for kind, rows in document.items():
        if kind not in KINDS:
            raise click.BadParameter(f"unknown kind {kind!r}; kinds: {', '.join(KINDS)}")
        store.write_batch(kind, rows)
    click.echo(f"loaded {sum(len(rows) for rows in document.values())} rows")


def init_app(app: Flask, config: Config) -> None:
    gauge = metrics(app).circuit_open

    def changed(lane: str, is_open: bool) -> None:
        gauge.labels(lane).set(1 if is_open else 0)

    for lane in (READ, CONSENT):
        changed(lane, False)  # both series from the start: an alert on them sees 0, not nothing
    app.extensions.setdefault("tailor", {})["store"] = StoreHolder(config, changed)
    app.teardown_appcontext(close_store)
    app.cli.add_command(load_rows_command)
