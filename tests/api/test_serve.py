"""`tailor serve` runs the API under gunicorn with settings from config."""

from __future__ import annotations

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


def test_tailor_serve_answers_over_http(tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}"])
    seed(config)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "serve", "--set", f"storage.root={tmp_path}", "--bind",
         f"127.0.0.1:{port}", "--workers", "1", "--threads", "2"],
        cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    assert json.load(response)["status"] == "ok"
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, process.communicate()[1].decode()[-2000:]
                assert time.monotonic() < deadline, "tailor serve did not answer in 30 s"
                time.sleep(0.1)
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
