"""The host's record of people its API made gone (api/recently_gone.py): where it lives,
how long an entry counts, that every process of the host reads it, that the store's answer
wins over it, and that its own failure never fails a request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from api import recently_gone
from api.recently_gone import RecentlyGone, location
from pipelines.config import load_config
from pipelines.serving import CONTENT, SUPPRESSION, StoreUnavailable, open_store
from pipelines.serving.sqlite import SqliteStore
from tests.api.conftest import headers
from tests.api.test_preferences import token_for
from tests.api.test_webhooks import signed

READER = headers("reader")


def test_two_stores_or_environments_never_share_a_record(tmp_path):
    base = [f"storage.root={tmp_path}"]
    sqlite = location(load_config("local", base))
    assert sqlite.parent == tmp_path / "api"
    assert location(load_config("local", base)) == sqlite  # every worker of one deployment finds the same file
    redis = location(load_config("local", [*base, "serving.type=redis"]))
    other_prefix = location(load_config("local", [*base, "serving.type=redis", "serving.redis.key_prefix=other"]))
    assert len({sqlite, redis, other_prefix}) == 3
    remote = location(load_config("local", ["storage.root=s3://bucket/tailor"]))
    assert remote.parent == Path(tempfile.gettempdir()) / f"tailor-api-{os.getuid()}"


def test_an_entry_counts_for_keep_s_then_is_dropped(tmp_path, monkeypatch):
    record = RecentlyGone(tmp_path / "gone.sqlite")
    assert record.reasons(["h1"]) == {}  # no file yet: nobody, and no file made by looking
    assert not (tmp_path / "gone.sqlite").exists()
    now = 1_800_000_000.0
    monkeypatch.setattr(recently_gone.time, "time", lambda: now)
    record.remember("h1", "unsubscribed")
    record.remember("h2", "erased")
    assert record.reasons(["h1", "h2", "h3"]) == {"h1": "unsubscribed", "h2": "erased"}
    record.forget("h2")
    assert record.reasons(["h1", "h2"]) == {"h1": "unsubscribed"}
    now += recently_gone.KEEP_S + 1
    assert record.reasons(["h1"]) == {}
    record.remember("h3", "complaint")  # a write also drops what is past KEEP_S
    assert [row[0] for row in record._connection(create=False).execute("SELECT subject_hash FROM gone")] == ["h3"]


def test_a_record_that_cannot_be_written_or_read_fails_nothing(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder would be")
    record = RecentlyGone(blocker / "gone.sqlite")
    record.remember("h1", "unsubscribed")
    assert record.reasons(["h1"]) == {}
    record.forget("h1")
    assert "could not note a person made gone" in caplog.text


def test_the_environment_is_part_of_the_name(tmp_path):
    here = load_config("local", [f"storage.root={tmp_path}"])
    assert location(here) != location(here.model_copy(update={"env": "emr"}))


def test_another_process_reads_what_this_one_noted(tmp_path):
    """gunicorn's workers are processes: one notes, another answers from the same file."""
    path = tmp_path / "gone.sqlite"
    RecentlyGone(path).remember("h1", "erased")
    script = ("import sys; from pathlib import Path; from api.recently_gone import RecentlyGone; "
              "print(RecentlyGone(Path(sys.argv[1])).reasons(['h1', 'h2']))")
    read = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert read.stdout.strip() == "{'h1': 'erased'}"


def test_a_temp_folder_others_can_write_to_is_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    config = load_config("local", ["storage.root=s3://bucket/tailor"])
    path = location(config)
    assert path.parent == tmp_path / f"tailor-api-{os.getuid()}"
    path.parent.mkdir(mode=0o777)
    path.parent.chmod(0o777)  # as if another user had made it first, for everyone
    record = RecentlyGone(path)
    record.remember("h1", "unsubscribed")
    assert "not this user's private folder" in caplog.text and not path.exists()
    path.parent.chmod(0o700)
    RecentlyGone(path).remember("h1", "unsubscribed")
    assert RecentlyGone(path).reasons(["h1"]) == {"h1": "unsubscribed"}


def test_a_corrupt_record_reads_as_nobody(tmp_path, caplog):
    path = tmp_path / "gone.sqlite"
    path.write_bytes(b"not a database" * 100)
    assert RecentlyGone(path).reasons(["h1"]) == {}
    assert "could not read those made gone" in caplog.text


def _reads_fail(monkeypatch, kinds):  # type: ignore[no-untyped-def]
    real = SqliteStore._read_many

    def failing(self, kind, keys):  # type: ignore[no-untyped-def]
        if kind in kinds:
            raise StoreUnavailable(f"{kind} unreadable")
        return real(self, kind, keys)

    monkeypatch.setattr(SqliteStore, "_read_many", failing)


def test_the_stores_answer_wins_over_the_hosts_note(make_app, monkeypatch):
    app = make_app()
    client = app.test_client()
    token = token_for(client, "u-ada")
    assert client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    # Re-subscribed through another host: the store no longer holds the record, this host's note stays.
    with open_store(app.extensions["tailor"]["config"]) as store:
        store.delete(SUPPRESSION, ["u-ada"])
    _reads_fail(monkeypatch, {CONTENT})  # the suppression read answers, the content read does not
    body = client.get("/v1/content/u-ada", headers=READER).get_json()
    assert body["fallback"] == "store_unavailable"
    _reads_fail(monkeypatch, {CONTENT, SUPPRESSION})  # now only the note can answer
    gone = client.get("/v1/content/u-ada", headers=READER)
    assert (gone.status_code, gone.get_json()["reason"]) == (410, "unsubscribed")


def test_a_resubscribe_lifts_an_unsubscribe_but_not_a_complaint(make_app, monkeypatch):
    app = make_app()
    client = app.test_client()
    body = json.dumps({"events": [{"id": "c1", "type": "complaint", "user_id": "u-bob",
                                   "occurred_at": "2026-11-28T10:00:00Z", "campaign_id": "c-1"}]}).encode()
    assert client.post("/v1/webhooks/generic", data=body, headers=signed(body)).status_code == 200
    for user_id in ("u-ada", "u-bob"):
        token = token_for(client, user_id)
        if user_id == "u-ada":
            assert client.put(f"/v1/preferences/{token}", json={"subscribed": False}).status_code == 200
        client.put(f"/v1/preferences/{token}", json={"subscribed": True})
    _reads_fail(monkeypatch, {CONTENT, SUPPRESSION})
    answers = client.post("/v1/content:batchGet", headers=READER, json={"user_ids": ["u-ada", "u-bob"]}).get_json()
    assert answers["gone"] == [{"user_id": "u-bob", "reason": "complaint"}]
    assert [(row["user_id"], row["fallback"]) for row in answers["rows"]] == [("u-ada", "store_unavailable")]
