"""Consent writes have their own store timeout (api.store_write_timeout_ms) and their own
circuit breaker: a store too slow for a content read (which falls back) still saves an
unsubscribe, a preference change, an erasure and a webhook's suppression, and one that
cannot take changes refuses them at once once their circuit opens.

Two real kinds of slow: a SQLite store whose write lock another connection holds, as
`tailor publish` does while it exports, and a real redis-server paused with CLIENT PAUSE."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from pipelines.config import load_config
from pipelines.errors import ConfigError
from tests.api.conftest import headers, seed
from tests.api.test_failure import own_redis  # noqa: F401 - a fixture: a redis-server this test may pause
from tests.api.test_preferences import token_for
from tests.api.test_webhooks import signed

READER = headers("reader")


@contextmanager
def paused(url: str, milliseconds: int) -> Iterator[float]:
    """A real Redis that stops answering clients for `milliseconds` (CLIENT PAUSE), unpaused
    on leaving; yields when the pause began."""
    pauser = redis.Redis.from_url(url, socket_timeout=5)
    paused_at = time.monotonic()
    pauser.execute_command("CLIENT", "PAUSE", str(milliseconds), "ALL")
    try:
        yield paused_at
    finally:
        pauser.execute_command("CLIENT", "UNPAUSE")
        pauser.close()


def _redis_app(url: str, root, prefix: str, *overrides: str, counters_in_memory: bool = False):  # type: ignore[no-untyped-def]
    """An app over a seeded Redis store with a 100 ms read timeout. `counters_in_memory`:
    rate-limit counters in process memory, for a test about the store alone."""
    config = load_config("local", [f"storage.root={root}", "serving.type=redis", f"serving.redis.url={url}",
                                   f"serving.redis.key_prefix=test:{prefix}", "api.store_timeout_ms=100", *overrides])
    seed(config)
    settings = {"TESTING": True, "TAILOR_CONFIG": config}
    if counters_in_memory:
        settings["RATELIMIT_STORAGE_URI"] = "memory://"
    return create_app(settings)


HOLD_S = 0.4  # how long the other connection keeps the write lock


@pytest.mark.parametrize("value", ["0", "-5", "soon", "20001", "2.5"])
def test_a_bad_write_timeout_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError) as raised:
        load_config("local", [f"api.store_write_timeout_ms={value}"])
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("config error: api.store_write_timeout_ms: ")
    assert "(from --set)" in message


def test_the_write_timeout_defaults_to_two_seconds_and_reads_keep_fifty_ms():
    config = load_config("local")
    assert (config.api.store_write_timeout_ms, config.api.store_timeout_ms) == (2000, 50)


@contextmanager
def write_lock_held(path: str, seconds: float) -> Iterator[None]:
    """Another connection takes the store's write lock (BEGIN IMMEDIATE, as an export's
    transactions do) and keeps it for `seconds`; yields once it holds it."""
    taken, failed = threading.Event(), []

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None, timeout=5)
        try:
            other.execute("BEGIN IMMEDIATE")
            taken.set()
            time.sleep(seconds)
            other.execute("COMMIT")
        except sqlite3.Error as error:  # pragma: no cover - reported below
            failed.append(error)
            taken.set()
        finally:
            other.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert taken.wait(5)
    assert not failed, failed
    try:
        yield
    finally:
        thread.join(10)


def _unsubscribe(client, user_id: str):  # type: ignore[no-untyped-def]
    token = token_for(client, user_id)
    return lambda: client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})


def _put(client, user_id: str):  # type: ignore[no-untyped-def]
    token = token_for(client, user_id)
    return lambda: client.put(f"/v1/preferences/{token}", json={"subscribed": False})


def _page(client, user_id: str):  # type: ignore[no-untyped-def]
    token = token_for(client, user_id)
    return lambda: client.post(f"/preferences/{token}", data={"subscribed": "no"})


def _erase(client, user_id: str):  # type: ignore[no-untyped-def]
    return lambda: client.delete(f"/v1/users/{user_id}", headers=headers("ops"))


def _webhook(client, user_id: str):  # type: ignore[no-untyped-def]
    body = json.dumps({"events": [{"id": f"w-{time.time_ns()}", "type": "unsubscribe", "user_id": user_id,
                                   "occurred_at": "2026-11-28T10:00:00Z", "campaign_id": "c-1"}]}).encode()
    return lambda: client.post("/v1/webhooks/generic", data=body, headers=signed(body))


# path -> (how to make the request, its success status, the 410 reason a content read gives after)
CONSENT_PATHS: dict[str, tuple[Callable, int, str]] = {
    "one-click unsubscribe": (_unsubscribe, 200, "unsubscribed"),
    "preference PUT": (_put, 200, "unsubscribed"),
    "preference page form": (_page, 200, "unsubscribed"),
    "erasure": (_erase, 202, "erased"),
    "webhook suppression": (_webhook, 200, "unsubscribed"),
}


def _sqlite_app(make_app, *overrides: str):  # type: ignore[no-untyped-def]
    # Reads at production's 50 ms, not the 2 s the other API tests use on this busy machine.
    app = make_app("api.store_timeout_ms=50", *overrides)
    return app, app.extensions["tailor"]["config"].under_root("serving/content.db")


@pytest.mark.parametrize("path", list(CONSENT_PATHS))
def test_a_consent_write_waits_out_an_export_holding_the_lock(make_app, path):
    app, database = _sqlite_app(make_app)
    client = app.test_client()
    make_request, status, reason = CONSENT_PATHS[path]
    send = make_request(client, "u-ada")
    with write_lock_held(database, HOLD_S):
        started = time.perf_counter()
        response = send()
        waited = time.perf_counter() - started
        # A read does not wait for the writer (WAL): it answers from the store meanwhile.
        assert client.get("/v1/content/u-bob", headers=READER).get_json()["fallback"] is None
    assert response.status_code == status, response.get_data(as_text=True)
    assert waited >= HOLD_S / 2  # it did wait for the lock: far past the 50 ms reads get
    gone = client.get("/v1/content/u-ada", headers=READER)
    assert (gone.status_code, gone.get_json()["reason"]) == (410, reason)
    assert app.extensions["tailor"]["store"].breaker.state == "closed"


def test_with_a_write_timeout_shorter_than_the_lock_the_change_is_refused_not_lost(make_app):
    """The key is what the consent path uses: 50 ms (what it used before) is not enough, and
    the subscriber is told to retry (503) rather than told it worked."""
    app, database = _sqlite_app(make_app, "api.store_write_timeout_ms=50")
    client = app.test_client()
    send = _unsubscribe(client, "u-ada")
    with write_lock_held(database, HOLD_S):
        response = send()
    assert response.status_code == 503
    assert response.get_json()["error"] == "store_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None  # not unsubscribed
    assert send().status_code == 200  # the lock is gone: the retry saves it
    assert client.get("/v1/content/u-ada", headers=READER).status_code == 410
    # A consent failure is not a read failure: the breaker the reads use never moved.
    assert app.extensions["tailor"]["store"].breaker.state == "closed"


def test_a_paused_redis_makes_reads_fall_back_but_an_unsubscribe_still_succeeds(own_redis, tmp_path):  # noqa: F811
    _, url = own_redis
    app = _redis_app(url, tmp_path, "paused", "api.store_write_timeout_ms=6000",
                     "api.circuit_breaker.failure_threshold=3", "api.circuit_breaker.reset_timeout_s=0.5",
                     counters_in_memory=True)
    client = app.test_client()
    token = token_for(client, "u-ada")
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None
    assert client.get(f"/v1/preferences/{token}").get_json()["subscribed"] is True

    with paused(url, 2500) as paused_at:
        for _ in range(4):  # past the breaker's threshold: the last ones are refused without a call
            started = time.perf_counter()
            read = client.get("/v1/content/u-ada", headers=READER)
            assert time.perf_counter() - started < 1.0
            assert (read.status_code, read.get_json()["fallback"]) == (200, "store_unavailable")
        assert app.extensions["tailor"]["store"].breaker.state == "open"
        assert time.monotonic() - paused_at < 2.0, "the reads took too long to test anything"
        unsubscribed = client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        finished_at = time.monotonic()
    assert unsubscribed.status_code == 200, unsubscribed.get_data(as_text=True)
    assert unsubscribed.get_json() == {"user_id": "u-ada", "subscribed": False}
    assert finished_at - paused_at >= 2.0  # it was answered once Redis was, not refused by the open circuit
    time.sleep(0.6)  # the breaker's reset timeout: the next read is its trial call
    gone = client.get("/v1/content/u-ada", headers=READER)
    assert (gone.status_code, gone.get_json()["reason"]) == (410, "unsubscribed")
    assert app.extensions["tailor"]["store"].breaker.state == "closed"


def test_while_reads_fall_back_a_person_unsubscribed_or_erased_here_is_410_on_every_worker(own_redis, tmp_path):  # noqa: F811
    """Two apps over one store and one storage root stand for two workers of one host: the
    unsubscribe and the erasure reach the first, while both have their read circuits open
    (Redis paused), and the second, which never saw them, skips those people too."""
    _, url = own_redis
    settings = ("api.store_write_timeout_ms=6000", "api.circuit_breaker.failure_threshold=3",
                "api.circuit_breaker.reset_timeout_s=60")
    first = _redis_app(url, tmp_path, "workers", *settings, counters_in_memory=True)
    second = _redis_app(url, tmp_path, "workers", *settings, counters_in_memory=True)
    one, other = first.test_client(), second.test_client()
    token = token_for(one, "u-ada")
    assert other.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None

    with paused(url, 2500):
        for app, client in ((first, one), (second, other)):
            for _ in range(3):
                assert client.get("/v1/content/u-bob", headers=READER).get_json()["fallback"] == "store_unavailable"
            assert app.extensions["tailor"]["store"].breaker.state == "open"
        unsubscribed = one.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
    assert unsubscribed.status_code == 200, unsubscribed.get_data(as_text=True)
    erased = one.delete("/v1/users/u-hal", headers=headers("ops"))
    assert erased.status_code == 202, erased.get_data(as_text=True)

    # Both read circuits stay open for a minute: every answer below comes without the store.
    for client in (one, other):
        gone = client.get("/v1/content/u-ada", headers=READER)
        assert (gone.status_code, gone.get_json()["reason"]) == (410, "unsubscribed")
        assert client.get("/v1/content/u-hal", headers=READER).get_json()["reason"] == "erased"
        batch = client.post("/v1/content:batchGet", headers=READER,
                            json={"user_ids": ["u-ada", "u-bob", "u-hal"]}).get_json()
        assert batch["gone"] == [{"user_id": "u-ada", "reason": "unsubscribed"},
                                 {"user_id": "u-hal", "reason": "erased"}]
        assert [(row["user_id"], row["fallback"]) for row in batch["rows"]] == [("u-bob", "store_unavailable")]

    # A re-subscribe through the first is seen by the second, still without the store.
    resubscribed = one.put(f"/v1/preferences/{token}", json={"subscribed": True})
    assert resubscribed.get_json()["subscribed"] is True, resubscribed.get_data(as_text=True)
    back = other.get("/v1/content/u-ada", headers=READER)
    assert (back.status_code, back.get_json()["fallback"]) == (200, "store_unavailable")
    assert second.extensions["tailor"]["store"].breaker.state == "open"

    # The host's record names people by their keyed hash only.
    files = list((tmp_path / "api").glob("recently_gone-*.sqlite*"))
    assert files and not any(b"u-hal" in path.read_bytes() or b"u-ada" in path.read_bytes() for path in files)


def test_a_paused_redis_holding_the_rate_limit_counters_does_not_hold_content_reads(own_redis, tmp_path):  # noqa: F811
    """The limiter's counters live in the same Redis: its client gets the store's read
    timeout, so a hung Redis costs a read that timeout (counting falls back to memory),
    not the length of the outage."""
    _, url = own_redis
    app = _redis_app(url, tmp_path, "limiter")
    client = app.test_client()
    assert client.get("/v1/content/u-ada", headers=READER).status_code == 200  # the counters are in Redis now
    with paused(url, 3000):
        started = time.monotonic()
        read = client.get("/v1/content/u-ada", headers=READER)
        waited = time.monotonic() - started
    assert (read.status_code, read.get_json()["fallback"]) == (200, "store_unavailable")
    assert waited < 1.5, f"the read waited {waited:.1f} s of a 3 s pause"


def test_a_webhook_while_redis_is_paused_is_a_503_to_retry_not_a_500(own_redis, tmp_path):  # noqa: F811
    """The replay check reads the limiter's storage (the same Redis, with the read timeout):
    a Redis that cannot answer gives the sender a 503 with Retry-After and changes nothing;
    once it answers, the same delivery is accepted."""
    _, url = own_redis
    app = _redis_app(url, tmp_path, "webhook")
    client = app.test_client()
    body = json.dumps({"events": [{"id": "c1", "type": "complaint", "user_id": "u-bob",
                                   "occurred_at": "2026-11-28T10:00:00Z", "campaign_id": "c-1"}]}).encode()
    with paused(url, 1500):
        refused = client.post("/v1/webhooks/generic", data=body, headers=signed(body))
    assert (refused.status_code, refused.get_json()["error"]) == (503, "store_unavailable"), refused.get_data()
    assert refused.headers["Retry-After"] == "1"
    assert client.get("/v1/content/u-bob", headers=READER).status_code == 200  # nothing was suppressed
    accepted = client.post("/v1/webhooks/generic", data=body, headers=signed(body))
    assert accepted.status_code == 200 and accepted.get_json()["suppressed"] == 1
    assert client.get("/v1/content/u-bob", headers=READER).status_code == 410


def test_looking_at_the_preference_page_while_redis_is_paused_answers_at_once(own_redis, tmp_path):  # noqa: F811
    """Only a change waits out a slow store: a page view (or a mail client's link scanner)
    takes the read lane, so it answers 503 within the read timeout instead of holding a
    worker thread for the consent timeout."""
    _, url = own_redis
    app = _redis_app(url, tmp_path, "looking", "api.store_write_timeout_ms=6000", counters_in_memory=True)
    client = app.test_client()
    token = token_for(client, "u-ada")
    with paused(url, 3000):
        started = time.monotonic()
        looked = client.get(f"/v1/preferences/{token}")
        waited = time.monotonic() - started
    assert (looked.status_code, looked.get_json()["error"]) == (503, "store_unavailable")
    assert waited < 1.5, f"a page view waited {waited:.1f} s of a 3 s pause"


def test_consent_calls_that_keep_failing_open_their_own_circuit_then_one_trial_closes_it(make_app):
    """While the store cannot take a change even with the longer timeout, changes after
    the threshold are refused at once (503, Retry-After until the trial) without a store
    call, so they stop holding worker threads; a change that needed no write neither
    resets the count nor closes the circuit; the read lane's breaker never moves."""
    app, database = _sqlite_app(make_app, "api.store_write_timeout_ms=50", "api.circuit_breaker.failure_threshold=2",
                                "api.circuit_breaker.reset_timeout_s=1.5")
    client = app.test_client()
    store_holder = app.extensions["tailor"]["store"]
    send, no_write = _unsubscribe(client, "u-ada"), _unsubscribe(client, "u-bob")
    assert no_write().status_code == 200  # bob is unsubscribed now: again, nothing is written
    consent_calls = []
    opened = store_holder.thread_store
    store_holder.thread_store = lambda lane="read": consent_calls.append(lane) or opened(lane)
    with write_lock_held(database, 3.0):
        failed = [send(), no_write(), send()]
        assert [(r.status_code, r.headers.get("Retry-After")) for r in failed] == [(503, "1"), (200, None), (503, "1")]
        assert store_holder.consent_breaker.state == "open"
        tried = len(consent_calls)
        refused = send()
        assert (refused.status_code, refused.get_json()["error"], refused.headers["Retry-After"]) == \
            (503, "store_unavailable", "2")
        assert len(consent_calls) == tried, "an open circuit still called the store"
        assert client.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None
    assert store_holder.breaker.state == "closed"
    time.sleep(1.6)  # the reset timeout: the next change is the trial call
    assert no_write().status_code == 200
    assert store_holder.consent_breaker.state == "half_open"  # it wrote nothing: writes are still untried
    assert send().status_code == 200
    assert store_holder.consent_breaker.state == "closed"
    assert client.get("/v1/content/u-ada", headers=READER).status_code == 410


def _circuit_gauge(client) -> dict[str, float]:  # type: ignore[no-untyped-def]
    text = client.get("/metrics").get_data(as_text=True)
    return {sample.labels["lane"]: sample.value for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "tailor_api_circuit_open"}


def test_an_open_consent_circuit_shows_in_readyz_and_the_gauge_but_the_node_stays_ready(make_app):
    """Reads still serve while changes are refused: /readyz stays 200 (a balancer keeps the
    node) and says degraded; tailor_api_circuit_open{lane="consent"} is 1 from the opening
    until a write goes through again. Past the reset timeout /readyz makes the trial
    itself: a store still locked opens the circuit again, one that recovered closes it,
    with no change needed."""
    app, database = _sqlite_app(make_app, "api.store_write_timeout_ms=50", "api.circuit_breaker.failure_threshold=2",
                                "api.circuit_breaker.reset_timeout_s=2")
    client = app.test_client()
    send = _unsubscribe(client, "u-ada")
    ready = client.get("/readyz")
    assert (ready.status_code, ready.get_json()) == (200, {"status": "ready", "store": "sqlite", "circuit": "closed",
                                                           "consent_circuit": "closed"})
    assert _circuit_gauge(client) == {"read": 0.0, "consent": 0.0}
    with write_lock_held(database, 3.0):
        assert [send().status_code, send().status_code] == [503, 503]
        opened_at = time.monotonic()
        degraded = client.get("/readyz")
        assert (degraded.status_code, degraded.get_json()) == (
            200, {"status": "degraded", "store": "sqlite", "circuit": "closed", "consent_circuit": "open"})
        assert _circuit_gauge(client) == {"read": 0.0, "consent": 1.0}
        time.sleep(max(0.0, opened_at + 2.1 - time.monotonic()))  # past the reset timeout, the lock still held
        tried = client.get("/readyz")  # its trial write fails: open again, for another reset timeout
        reopened_at = time.monotonic()
        assert (tried.status_code, tried.get_json()) == (
            200, {"status": "degraded", "store": "sqlite", "circuit": "closed", "consent_circuit": "open"})
        assert send().status_code == 503  # refused at once, not tried
    time.sleep(max(0.0, reopened_at + 2.1 - time.monotonic()))
    recovered = client.get("/readyz")  # the lock is gone: the probe's write closes the circuit
    assert (recovered.status_code, recovered.get_json()) == (200, {"status": "ready", "store": "sqlite",
                                                                   "circuit": "closed", "consent_circuit": "closed"})
    assert _circuit_gauge(client) == {"read": 0.0, "consent": 0.0}
    assert send().status_code == 200
