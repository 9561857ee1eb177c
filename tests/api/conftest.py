"""flaskr's fixtures: `app` (a temporary SQLite store seeded from data.json), `client`
and `runner`; `store_app` and `store_client` run the same over each real store (SQLite,
the session's redis-server, moto's DynamoDB). API keys are test values, set in the
environment variable config names, as `tailor serve` reads them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from pipelines.config import Config, load_config
from pipelines.serving import open_store
from tests.pipelines.serving.conftest import STORE_TYPES, serving_overrides

# Store calls time out after 2 s here, not the 50 ms of production: the test machine runs
# Spark beside these tests, and moto answers in tens of milliseconds when it is busy.
TEST_TIMEOUT = "api.store_timeout_ms=2000"
DATA = json.loads((Path(__file__).parent / "data.json").read_text(encoding="utf-8"))
# key id -> (the key a client sends, its scopes)
KEYS = {
    "reader": ("test-key-reader-0001", "content:read"),
    "traits": ("test-key-traits-0002", "traits:read"),
    "prefs": ("test-key-prefs-0003", "preferences:write"),
    "ops": ("test-key-admin-0004", "admin"),
}
SIGNING_KEY = "test-link-signing-key-not-a-secret"
WEBHOOK_SECRET = "test-webhook-secret-not-a-secret"


def headers(key_id: str) -> dict[str, str]:
    return {"X-Api-Key": KEYS[key_id][0]}


def post_chunked(client: FlaskClient, path: str, body: bytes | io.BytesIO, headers: dict[str, str]) -> TestResponse:
    """POST `body` as gunicorn hands a chunked request over: de-chunked, no Content-Length,
    the stream marked as ending (wsgi.input_terminated)."""
    stream = body if isinstance(body, io.BytesIO) else io.BytesIO(body)
    return client.post(path, headers={**headers, "Transfer-Encoding": "chunked"}, input_stream=stream,
                       environ_overrides={"wsgi.input_terminated": True})


@pytest.fixture(autouse=True)
def api_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    entries = [f"{key_id}:{hashlib.sha256(key.encode()).hexdigest()}:{scopes}"
               for key_id, (key, scopes) in KEYS.items()]
    monkeypatch.setenv("TAILOR_API_TOKENS", ",".join(entries))
    monkeypatch.setenv("TAILOR_LINK_SIGNING_KEY", SIGNING_KEY)
    monkeypatch.setenv("TAILOR_WEBHOOK_GENERIC_SECRET", WEBHOOK_SECRET)
    public = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setenv("TAILOR_WEBHOOK_SENDGRID_PUBLIC_KEY", base64.b64encode(public).decode())


def seed(config: Config, data: dict[str, dict[str, Any]] = DATA) -> None:
    with open_store(config) as store:
        for kind, rows in data.items():
            store.write_batch(kind, rows)


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Flask]:
    """create_app over a fresh SQLite store (or the overrides given), seeded from data.json."""

    def make(*overrides: str, seeded: bool = True) -> Flask:
        config = load_config("local", [f"storage.root={tmp_path}", "serving.type=sqlite", TEST_TIMEOUT, *overrides])
        if seeded:
            seed(config)
        return create_app({"TESTING": True, "TAILOR_CONFIG": config})

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_cli_runner()


@pytest.fixture(params=STORE_TYPES)
def store_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    config = load_config("local", [*serving_overrides(request, str(request.param), str(tmp_path)), TEST_TIMEOUT])
    seed(config)
    yield create_app({"TESTING": True, "TAILOR_CONFIG": config})


@pytest.fixture
def store_client(store_app: Flask) -> FlaskClient:
    return store_app.test_client()


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():  # type: ignore[no-untyped-def]
    """Debian's headless chromium under selenium. make setup installs it: a missing browser
    is a broken set-up, not a reason to skip."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.fail("Debian's chromium and chromium-driver are not installed: make test installs them")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(20)
    driver.implicitly_wait(5)  # a lookup waits for its element on a slow, shared machine
    yield driver
    driver.quit()


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app on a free loopback port, for a browser or another process."""
    import threading

    from werkzeug.serving import make_server

    from pipelines.services.kafka_broker import free_port

    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=10)
