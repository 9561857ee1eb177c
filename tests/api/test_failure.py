"""Failure: the store killed mid-test, the circuit breaker, timeouts, fallbacks cached at
start-up; a content read never answers 5xx. Rate limits: 429 with Retry-After."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from api import create_app
from api.store import CircuitBreaker, CircuitOpen
from pipelines.config import load_config
from pipelines.services.kafka_broker import free_port
from pipelines.serving import StoreUnavailable
from tests.api.conftest import DATA, TEST_TIMEOUT, headers, seed

READER = headers("reader")


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, which the test may kill."""
    port = free_port()
    process = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port",
                                str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    yield process, f"redis://127.0.0.1:{port}/0"
    if process.poll() is None:
        process.kill()
        process.wait()


def test_redis_killed_mid_test_reads_fall_back_then_recover(own_redis, tmp_path):
    process, url = own_redis
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=redis", f"serving.redis.url={url}",
                                   "serving.redis.key_prefix=test:killed", "api.circuit_breaker.reset_timeout_s=0.2",
                                   TEST_TIMEOUT])
    seed(config)
    app = create_app({"TESTING": True, "TAILOR_CONFIG": config})
    client = app.test_client()
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None
    process.kill()
    process.wait()
    for _ in range(8):  # past the breaker's threshold: later calls are refused without trying
        started = time.perf_counter()
        response = client.get("/v1/content/u-ada", headers=READER)
        assert time.perf_counter() - started < 0.5
        assert response.status_code == 200
        body = response.get_json()
        assert body["fallback"] == "store_unavailable"
        assert body["user_id"] == "u-ada"
        assert body["hero"] == {"offer_id": "welcome", "headline": "New this week", "url": None}  # cached at start
        assert response.headers["Cache-Control"] == "no-store"
    batch = client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ["u-ada", "u-gone"]})
    assert batch.status_code == 200
    assert [row["fallback"] for row in batch.get_json()["rows"]] == ["store_unavailable", "store_unavailable"]
    assert app.extensions["tailor"]["store"].breaker.state in ("open", "half_open")
    assert client.get("/readyz").status_code == 503
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'tailor_api_fallbacks_total{reason="store_unavailable"} 10.0' in metrics
    assert 'tailor_api_circuit_open{lane="read"} 1.0' in metrics
    assert 'tailor_api_circuit_open{lane="consent"} 0.0' in metrics


def test_sqlite_store_gone_mid_test_falls_back(app, client):
    path = app.extensions["tailor"]["config"].under_root("serving/content.db")
    assert client.get("/v1/content/u-ada", headers=READER).get_json()["fallback"] is None
    with open(path, "r+b") as handle:  # a corrupt file: every read fails
        handle.write(b"\x00" * 4096)
    app.extensions["tailor"]["store"].drop_thread_store()
    body = client.get("/v1/content/u-ada", headers=READER).get_json()
    assert body["fallback"] == "store_unavailable"
    assert body["hero"] == {"offer_id": "welcome", "headline": "New this week", "url": None}


def test_store_down_at_start_serves_the_shipped_last_resort_row(tmp_path):
    port = free_port()  # nothing listens here
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=redis",
                                   f"serving.redis.url=redis://127.0.0.1:{port}/0"])
    client = create_app({"TESTING": True, "TAILOR_CONFIG": config}).test_client()
    response = client.get("/v1/content/u-ada", headers=READER)
    assert response.status_code == 200
    body = response.get_json()
    assert body["fallback"] == "store_unavailable"
    assert body["greeting"] == {"first_name": None, "text": "Hi there"}
    assert body["hero"] == {"offer_id": "browse", "headline": "New arrivals are in", "url": None}
    assert body["content_version"] == "builtin/0"


def test_circuit_breaker_opens_after_the_threshold_and_tries_once_after_the_timeout():
    now = [100.0]
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=5, clock=lambda: now[0])
    for _ in range(2):
        breaker.before_call()
        breaker.failed()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.failed()
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        breaker.before_call()
    now[0] = 105.0
    assert breaker.state == "half_open"
    breaker.before_call()  # the one trial
    with pytest.raises(CircuitOpen):
        breaker.before_call()  # no second trial while the first runs
    breaker.failed()
    assert breaker.state == "open"
    now[0] = 110.0
    breaker.before_call()
    breaker.succeeded()
    assert breaker.state == "closed"


def test_circuit_breaker_tells_only_its_openings_and_closings():
    """What sets tailor_api_circuit_open: once per change, not on every call (a success
    while closed, a failed trial that opens it again, a released trial)."""
    now, told = [100.0], []
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=5, clock=lambda: now[0], on_change=told.append)
    breaker.succeeded()
    breaker.failed()
    assert told == []
    breaker.failed()
    assert told == [True]
    now[0] = 105.0
    breaker.before_call()
    breaker.released()
    breaker.before_call()
    breaker.failed()
    assert (breaker.state, told) == ("open", [True])
    now[0] = 110.0
    breaker.before_call()
    breaker.succeeded()
    breaker.succeeded()
    assert (breaker.state, told) == ("closed", [True, False])


def test_store_calls_time_out_after_store_timeout_ms(make_app):
    app = make_app("api.store_timeout_ms=25")
    config = app.extensions["tailor"]["store"].config
    assert config.serving.sqlite.busy_timeout_ms == 25
    assert config.serving.redis.socket_timeout_s == 0.025


def test_content_cache_serves_a_row_without_the_store_until_its_ttl(make_app):
    app = make_app("api.cache_ttl_s=60")
    client = app.test_client()
    client.get("/v1/content/u-ada", headers=READER)
    hits = app.extensions["tailor"]["metrics"].cache.labels("hit")
    client.get("/v1/content/u-ada", headers=READER)
    assert hits._value.get() == 1.0
    off = make_app("api.cache_ttl_s=0").test_client()
    assert off.get("/v1/content/u-ada", headers=READER).get_json() == DATA["content"]["u-ada"]


@pytest.mark.parametrize("store_type", ["sqlite", "redis"])
def test_rate_limit_per_key_gives_429_with_retry_after(request, tmp_path, store_type):
    from tests.pipelines.serving.conftest import serving_overrides

    config = load_config("local", [*serving_overrides(request, store_type, str(tmp_path)),
                                   "api.rate_limit.content:read=3 per minute", TEST_TIMEOUT])
    seed(config)
    client = create_app({"TESTING": True, "TAILOR_CONFIG": config}).test_client()
    statuses = [client.get("/v1/content/u-ada", headers=READER).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.get("/v1/content/u-ada", headers=READER)
    assert limited.get_json() == {"error": "rate_limited",
                                  "message": "rate limit 3 per 1 minute exceeded for this key"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert client.get("/v1/content/u-ada", headers=headers("ops")).status_code == 200  # another key, own count
    assert client.get("/healthz").status_code == 200  # not limited


def test_an_unexpected_store_error_is_still_fallback_content_never_5xx(app, client, monkeypatch):
    from pipelines.serving.sqlite import SqliteStore

    def broken(self, kind, keys):  # a client bug, not an outage
        raise RuntimeError("unexpected")

    monkeypatch.setattr(SqliteStore, "_read_many", broken)
    response = client.get("/v1/content/u-ada", headers=READER)
    assert response.status_code == 200
    assert response.get_json()["fallback"] == "store_unavailable"
    batch = client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ["u-ada", "u-bob"]})
    assert batch.status_code == 200
    assert [row["fallback"] for row in batch.get_json()["rows"]] == ["store_unavailable", "store_unavailable"]


def test_a_gone_person_stays_410_when_only_the_content_read_fails(app, client, monkeypatch):
    from pipelines.serving import StoreUnavailable
    from pipelines.serving.sqlite import SqliteStore

    real = SqliteStore._read_many

    def content_down(self, kind, keys):
        if kind == "content":
            raise StoreUnavailable("content table unreadable")
        return real(self, kind, keys)

    monkeypatch.setattr(SqliteStore, "_read_many", content_down)
    body = client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ["u-gone", "u-ada"]}).get_json()
    assert body["gone"] == [{"user_id": "u-gone", "reason": "unsubscribed"}]
    assert [(row["user_id"], row["fallback"]) for row in body["rows"]] == [("u-ada", "store_unavailable")]


def test_an_unexpected_error_in_the_trial_call_does_not_keep_the_circuit_open(app):
    holder = app.extensions["tailor"]["store"]
    now = [0.0]
    holder.breaker = CircuitBreaker(failure_threshold=1, reset_timeout_s=5, clock=lambda: now[0])

    def broken(store):
        raise RuntimeError("a client error the store passed on")

    with app.test_request_context():
        with pytest.raises(StoreUnavailable):
            holder.guarded(broken)          # opens the circuit
        now[0] = 10.0
        with pytest.raises(StoreUnavailable):
            holder.guarded(broken)          # the trial fails: open again, trial over
        now[0] = 20.0
        assert holder.guarded(lambda store: "answered") == "answered"  # the next trial runs and closes it
    assert holder.breaker.state == "closed"


def test_behind_a_trusted_proxy_subscribers_are_limited_by_their_own_address(tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", "api.trusted_proxies=1",
                                   "api.rate_limit.subscriber=2 per minute", TEST_TIMEOUT])
    seed(config)
    client = create_app({"TESTING": True, "TAILOR_CONFIG": config}).test_client()

    def one_click(address: str) -> int:
        # Every request reaches the API from the load balancer's address; X-Forwarded-For names the client.
        return client.post("/v1/unsubscribe/not-a-token", data={"List-Unsubscribe": "One-Click"},
                           headers={"X-Forwarded-For": address}, environ_base={"REMOTE_ADDR": "10.0.0.1"}).status_code

    assert [one_click("203.0.113.7") for _ in range(3)] == [403, 403, 429]
    assert one_click("198.51.100.9") == 403  # another subscriber, own count
