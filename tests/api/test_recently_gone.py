"""The host's record of people its API made gone (api/recently_gone.py): where it lives,
how long an entry counts, and that its own failure never fails a request."""

from __future__ import annotations

import tempfile
from pathlib import Path

from api import recently_gone
from api.recently_gone import RecentlyGone, location
from pipelines.config import load_config


def test_two_stores_or_environments_never_share_a_record(tmp_path):
    base = [f"storage.root={tmp_path}"]
    sqlite = location(load_config("local", base))
    assert sqlite.parent == tmp_path / "api"
    assert location(load_config("local", base)) == sqlite  # every worker of one deployment finds the same file
    redis = location(load_config("local", [*base, "serving.type=redis"]))
    other_prefix = location(load_config("local", [*base, "serving.type=redis", "serving.redis.key_prefix=other"]))
    assert len({sqlite, redis, other_prefix}) == 3
    remote = location(load_config("local", ["storage.root=s3://bucket/tailor"]))
    assert remote.parent == Path(tempfile.gettempdir()) / "tailor-api"


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
