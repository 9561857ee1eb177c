"""`tailor serve` runs the API under gunicorn with settings from config."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from jobs.serve import gunicorn_options
from pipelines.config import load_config
from pipelines.services.kafka_broker import free_port
from tests.api.conftest import KEYS, seed

ROOT = Path(__file__).resolve().parents[2]


def test_gunicorn_options_come_from_config():
    config = load_config("local", ["api.bind=0.0.0.0:9000", "api.workers=3", "api.threads=1"])
    options = gunicorn_options(config)
    assert (options["bind"], options["workers"], options["threads"], options["worker_class"]) == (
        "0.0.0.0:9000", 3, 1, "sync")
    assert options["accesslog"] is None


def start_serving(tmp_path: Path, *overrides: str) -> tuple[subprocess.Popen[bytes], int]:
    """`tailor serve` over a seeded SQLite store, once it answers /healthz."""
    config = load_config("local", [f"storage.root={tmp_path}"])
    seed(config)
    port = free_port()
    sets = [part for override in (f"storage.root={tmp_path}", *overrides) for part in ("--set", override)]
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "serve", *sets, "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--threads", "2"],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                assert json.load(response)["status"] == "ok"
            return process, port
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            process.kill()
            stderr = process.communicate()[1].decode()[-2000:]
            raise AssertionError(f"tailor serve did not answer in 30 s: {stderr}") from None


def test_tailor_serve_answers_over_http(tmp_path):
    process, port = start_serving(tmp_path)
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/content/u-ada",
                                         headers={"X-Api-Key": KEYS["reader"][0]})
        with urllib.request.urlopen(request, timeout=2) as response:
            body = json.load(response)
            assert (body["user_id"], body["fallback"]) == ("u-ada", None)
            assert response.headers["ETag"] == '"2026-11-27T08:00:00Z/42"'
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    log_lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert {"route": "/v1/content/<user_id>", "status": 200} in [
        {"route": line.get("route"), "status": line.get("status")} for line in log_lines]
    assert "u-ada" not in stderr.decode()  # no user id in the logs
    assert KEYS["reader"][0] not in stderr.decode()


def post_in_chunks(port: int, body: bytes, size: int) -> tuple[int, dict]:
    """POST /v1/content:batchGet with Transfer-Encoding: chunked and no Content-Length, the
    chunks framed here by hand, as HTTP/1.1 lets a client send a body of unknown length."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest("POST", "/v1/content:batchGet")
        connection.putheader("X-Api-Key", KEYS["reader"][0])
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for start in range(0, len(body), size):
            chunk = body[start:start + size]
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_tailor_serve_reads_a_chunked_body_up_to_the_limit(tmp_path):
    process, port = start_serving(tmp_path, "api.max_body_bytes=1024")
    try:
        at_limit = b'{"user_ids": ["u-ada"]' + b" " * 1001 + b"}"
        status, body = post_in_chunks(port, at_limit, size=100)
        assert (status, [row["user_id"] for row in body["rows"]]) == (200, ["u-ada"])
        status, body = post_in_chunks(port, at_limit + b" ", size=100)
        assert (status, body) == (413, {"error": "body_too_large", "message": "the body is over 1024 bytes"})
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
