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

import pytest

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


def start_serving(tmp_path: Path, *overrides: str, workers: int = 1, threads: int = 2,
                  env: dict[str, str] | None = None,
                  stderr_to: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`tailor serve` over a seeded SQLite store, once it answers /healthz. `stderr_to`: a
    file for the logs, when a test sends more requests than a pipe's buffer holds lines."""
    config = load_config("local", [f"storage.root={tmp_path}"])
    seed(config)
    port = free_port()
    sets = [part for override in (f"storage.root={tmp_path}", *overrides) for part in ("--set", override)]
    process = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "serve", *sets, "--bind", f"127.0.0.1:{port}", "--workers",
         str(workers), "--threads", str(threads)],
        cwd=ROOT, env=os.environ.copy() if env is None else env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if stderr_to is None else stderr_to.open("wb"))
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
            output = process.communicate()[1]
            stderr = (output if stderr_to is None else stderr_to.read_bytes()).decode()[-2000:]
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


def post_in_chunks(port: int, body: bytes, size: int, path: str = "/v1/content:batchGet",
                   headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST `path` (batchGet as the reader) with Transfer-Encoding: chunked and no
    Content-Length, the chunks framed here by hand, as HTTP/1.1 lets a client send a body of
    unknown length."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.putrequest("POST", path)
        sent = {"X-Api-Key": KEYS["reader"][0], "Content-Type": "application/json"} if headers is None else headers
        for name, value in sent.items():
            connection.putheader(name, value)
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


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=30)


def unsubscribe_token(port: int, user_id: str) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/users/{user_id}/preference-link",
                                     headers={"X-Api-Key": KEYS["prefs"][0]})
    with urllib.request.urlopen(request, timeout=5) as response:
        return str(json.load(response)["token"])


def subscribed(port: int, token: str) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/preferences/{token}", timeout=5) as response:
        return bool(json.load(response)["subscribed"])


def test_tailor_serve_bounds_a_chunked_one_click_form(tmp_path):
    """RFC 8058's form through gunicorn's de-chunking: at the limit it unsubscribes; one byte
    more is 413 with a JSON error, even though its first 1024 bytes hold a whole valid form."""
    process, port = start_serving(tmp_path, "api.max_body_bytes=1024")
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    try:
        prefix = b"List-Unsubscribe=One-Click&pad="
        ada, bob = unsubscribe_token(port, "u-ada"), unsubscribe_token(port, "u-bob")
        status, body = post_in_chunks(port, prefix + b"x" * (1025 - len(prefix)), 100, f"/v1/unsubscribe/{ada}", form)
        assert (status, body) == (413, {"error": "body_too_large", "message": "the body is over 1024 bytes"})
        assert subscribed(port, ada)
        status, body = post_in_chunks(port, prefix + b"x" * (1024 - len(prefix)), 100, f"/v1/unsubscribe/{bob}", form)
        assert (status, body) == (200, {"user_id": "u-bob", "subscribed": False})
        assert not subscribed(port, bob)
        page = b"subscribed=no&pad="
        status, body = post_in_chunks(port, page + b"x" * (2000 - len(page)), 500, f"/preferences/{ada}", form)
        assert (status, body["error"]) == (413, "body_too_large")
        assert subscribed(port, ada)
    finally:
        stop(process)


# -- metrics across gunicorn workers -------------------------------------------------------

CONTENT_ROUTE = "/v1/content/<user_id>"


def content_reads_in(files: list[Path]) -> float:
    """tailor_api_requests_total{route=CONTENT_ROUTE, status="200"} summed over prometheus-client's
    per-process files, read here with its own file reader."""
    from prometheus_client.multiprocess import MultiProcessCollector

    return sum(sample.value for metric in MultiProcessCollector.merge([str(path) for path in files])
               for sample in metric.samples
               if sample.name == "tailor_api_requests_total" and sample.labels.get("route") == CONTENT_ROUTE
               and sample.labels.get("status") == "200")


def scraped_content_reads(port: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "tailor_api_requests_total" and sample.labels.get("route") == CONTENT_ROUTE
               and sample.labels.get("status") == "200")


def read_content(port: int) -> int:
    """One content read on a connection of its own, so that either worker may take it."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/content/u-ada",
                                     headers={"X-Api-Key": KEYS["reader"][0], "Connection": "close"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def worker_files(folder: Path) -> dict[int, Path]:
    return {int(path.stem.split("_")[-1]): path for path in folder.glob("counter_*.db")}


def write_stale_count(folder: Path, pid: int, value: float) -> Path:
    """A counter file as a worker of an earlier run would have left it."""
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    path = folder / f"counter_{pid}.db"
    stale = MmapedDict(str(path))
    stale.write_value(mmap_key("tailor_api_requests", "tailor_api_requests_total", ["route", "method", "status"],
                               [CONTENT_ROUTE, "GET", "200"], "Requests by route and status"), value, 0.0)
    stale.close()
    return path


def test_metrics_add_up_across_two_gunicorn_workers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    folder = tmp_path / "metrics"
    folder.mkdir()
    stale = write_stale_count(folder, 999_999, 1000.0)
    assert content_reads_in([stale]) == 1000.0  # a file prometheus-client reads: its wiping is what counts
    (folder / "notes.txt").write_text("not a metrics file", encoding="utf-8")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)}
    # Sync workers (one request at a time each): with eight clients at once both workers take
    # connections; a gthread worker may accept nearly all of them while the other sleeps.
    process, port = start_serving(tmp_path, workers=2, threads=1, env=env, stderr_to=tmp_path / "serve.log")
    try:
        assert not stale.exists()  # the earlier run's counts are gone
        assert (folder / "notes.txt").exists()  # and nothing else was touched
        sent = 0
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in range(25):  # until both workers have answered some (the kernel picks who accepts)
                assert list(pool.map(lambda _: read_content(port), range(24))) == [200] * 24
                sent += 24
                shares = {pid: content_reads_in([path]) for pid, path in worker_files(folder).items()}
                if sum(1 for share in shares.values() if share > 0) >= 2:
                    break
        print(f"content reads per worker: {sorted(shares.values())}")
        assert sum(1 for share in shares.values() if share > 0) == 2, shares
        assert sum(shares.values()) == sent
        # Every scrape, whichever worker answers it, counts every worker's reads.
        for _ in range(6):
            assert scraped_content_reads(port) == sent

        # A worker that exits (gunicorn starts another; child_exit marks it dead): its reads still count.
        gone = max(shares, key=lambda pid: shares[pid])
        os.kill(gone, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while len(worker_files(folder)) < 3:
            assert time.monotonic() < deadline, "gunicorn did not start another worker"
            time.sleep(0.1)
        for _ in range(4):
            assert read_content(port) == 200
        sent += 4
        for _ in range(4):
            assert scraped_content_reads(port) == sent
    finally:
        stop(process)
    assert "Traceback" not in (tmp_path / "serve.log").read_text(encoding="utf-8")


def test_tailor_serve_makes_its_own_metrics_folder_and_removes_it(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
    process, port = start_serving(tmp_path, workers=2, env=env, stderr_to=tmp_path / "serve.log")
    folder = None
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().decode()
        assert "metrics files in " in banner, banner
        folder = Path(banner.rsplit("metrics files in ", 1)[1].strip())
        assert folder.is_dir() and folder.name.startswith("tailor-metrics-")
        for _ in range(5):
            assert read_content(port) == 200
        assert scraped_content_reads(port) == 5
        assert content_reads_in(list(worker_files(folder).values())) == 5
    finally:
        stop(process)
    assert folder is not None and not folder.exists()


def test_the_metrics_folder_is_emptied_of_metric_files_only(tmp_path):
    from jobs.serve import prepare_metrics_dir

    folder = tmp_path / "given"
    folder.mkdir()
    (folder / "counter_12.db").write_bytes(b"old")
    (folder / "histogram_12.db").write_bytes(b"old")
    (folder / "keep.txt").write_text("mine", encoding="utf-8")
    environ = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    assert prepare_metrics_dir(environ) == (folder, False)
    assert sorted(path.name for path in folder.iterdir()) == ["keep.txt", "tailor-serve.lock"]

    made: dict[str, str] = {}
    path, created = prepare_metrics_dir(made)
    try:
        assert created and path.is_dir() and list(path.iterdir()) == []
        assert made == {"PROMETHEUS_MULTIPROC_DIR": str(path)}
    finally:
        path.rmdir()

    missing = tmp_path / "not-yet" / "metrics"
    assert prepare_metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(missing)}) == (missing, False)
    assert missing.is_dir()


def test_a_metrics_folder_another_server_uses_is_refused_in_one_line_and_its_files_kept(tmp_path):
    from jobs.serve import prepare_metrics_dir
    from pipelines.errors import ConfigError

    folder = tmp_path / "shared"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from jobs.serve import prepare_metrics_dir; "
         "prepare_metrics_dir({'PROMETHEUS_MULTIPROC_DIR': sys.argv[1]}); print('held', flush=True); "
         "time.sleep(60)", str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        (folder / "counter_77.db").write_bytes(b"the other server's count")
        with pytest.raises(ConfigError) as refused:
            prepare_metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(folder)})
        assert str(refused.value) == (f"PROMETHEUS_MULTIPROC_DIR={folder}: another tailor serve uses it; give each "
                                      "server a folder of its own (its /metrics adds up every file in it)")
        assert (folder / "counter_77.db").exists()
    finally:
        holder.kill()
        holder.wait()
    # The lock goes with its holder: the next server starts, and clears the dead one's files.
    assert prepare_metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(folder)}) == (folder, False)
    assert not (folder / "counter_77.db").exists()


def test_a_metrics_folder_that_cannot_be_made_is_one_line(tmp_path):
    from jobs.serve import prepare_metrics_dir
    from pipelines.errors import ConfigError

    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    try:
        prepare_metrics_dir({"PROMETHEUS_MULTIPROC_DIR": str(blocker / "metrics")})
    except ConfigError as error:
        message = str(error)
    else:
        raise AssertionError("a folder under a file was accepted")
    assert message.startswith(f"PROMETHEUS_MULTIPROC_DIR={blocker / 'metrics'}: cannot prepare it")
    assert "\n" not in message


def test_child_exit_marks_the_worker_dead(tmp_path, monkeypatch):
    """gunicorn's child_exit hook removes the exited worker's live-gauge files only."""
    from types import SimpleNamespace

    from jobs.serve import child_exit

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for name in ("gauge_livesum_4242.db", "gauge_liveall_4242.db", "gauge_livesum_4243.db", "counter_4242.db"):
        (tmp_path / name).write_bytes(b"")
    assert gunicorn_options(load_config("local"))["child_exit"] is child_exit
    child_exit(None, SimpleNamespace(pid=4242))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["counter_4242.db", "gauge_livesum_4243.db"]
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    child_exit(None, SimpleNamespace(pid=4243))  # outside multiprocess mode: nothing to do, and no error
    assert (tmp_path / "gauge_livesum_4243.db").exists()


def test_tailor_serve_refuses_to_start_without_the_pii_keys(tmp_path):
    """The audit names people by the pipeline's keyed hash: no key, no server (one line), rather
    than a server whose consent changes fail."""
    env = {name: value for name, value in os.environ.items()
           if name not in ("TAILOR_PII_HMAC_KEY", "TAILOR_PII_ENCRYPTION_KEY")}
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "serve", "--set", f"storage.root={tmp_path}", "--set",
         "pii.dev_keys_file=null", "--bind", f"127.0.0.1:{free_port()}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tailor: environment variable TAILOR_PII_HMAC_KEY is not set; it holds a PII key "
        "(see README, 'Personal data')"]
