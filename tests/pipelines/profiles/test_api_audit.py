"""The API's audit lines into audit.log (`tailor maintain`): each line once, whatever the
runs; a line still being written or damaged is never lost; the files of days gone by go.
The lines are written here as api/consent.py writes them, and the rows expected by hand."""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from pathlib import Path

from chispa import assert_df_equality
from pyspark.sql import Row

from pipelines.config import load_config
from pipelines.profiles.writes import ApiAuditLoad, load_api_audit
from pipelines.runtime.delta_tables import read_table
from tests.settings import SPARK_TEST_SETTINGS


def line(**fields: object) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


UNSUBSCRIBE = line(action="preferences_changed", actor="subscriber", after={"subscribed": False},
                   at="2026-12-01T10:00:00.250Z", audit_id="a1", before={"subscribed": True}, request_id="r1",
                   request_ref="ref-1", subject_hash="h-ada")
# Written before lines carried an audit_id.
ERASURE = line(action="erasure_requested", actor="key:ops", after=None, at="2026-11-27T09:00:00.000Z",
               before={"suppression": None}, request_id="r2", subject_hash="h-hal")
COMPLAINT = line(action="suppressed_by_esp", actor="esp:generic", after={"suppression": "complaint"},
                 at="2026-11-27T09:30:00.000Z", audit_id="a3", before={"suppression": None}, request_id=None,
                 subject_hash="h-bob")
KEPT = line(action="preferences_changed", actor="subscriber", after={"topics": ["offers"]},
            at="2026-11-28T08:00:00.000Z", audit_id="a4", before={"topics": []}, request_id="r4",
            request_ref="ref-4", subject_hash="h-cy")
DAMAGED = '{"action":"preferences_changed","at":'
REMOTE_STYLE = line(action="erasure_requested", actor="key:ops", after=None, at="2026-11-29T12:00:00.000Z",
                    audit_id="a5", before={"suppression": "unsubscribed"}, request_id="r5", request_ref="ref-5",
                    subject_hash="h-dee")
IN_FLIGHT = line(action="suppressed_by_esp", actor="esp:sendgrid", after={"suppression": "hard_bounce"},
                 at="2026-12-01T10:05:00.000Z", audit_id="a6", before={"suppression": None}, request_id="r6",
                 subject_hash="h-eve")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def expected_row(audit_id, subject_hash, action, field, before, after, actor, event_ref, occurred_at):  # type: ignore[no-untyped-def]
    return Row(audit_id=audit_id, subject_hash=subject_hash, action=action, field=field, before=before,
               after=after, outcome="requested", actor=actor, source="api", event_ref=event_ref,
               occurred_at=at(occurred_at))


def loaded_rows(spark, config):  # type: ignore[no-untyped-def]
    return (read_table(spark, config.table("audit.log")).where("source = 'api'")
            .drop("recorded_at").orderBy("audit_id"))


def test_api_audit_lines_reach_audit_log_once_and_past_days_files_go(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    folder = tmp_path / "audit" / "api"
    (folder / "2026-11-29").mkdir(parents=True)
    today_file = folder / "audit-2026-12-01.jsonl"
    today_file.write_text(f"{UNSUBSCRIBE}\n\n{IN_FLIGHT[:40]}")  # the API is writing its second line
    (folder / "audit-2026-11-27.jsonl").write_text(f"{ERASURE}\n{COMPLAINT}\n")
    (folder / "audit-2026-11-28.jsonl").write_text(f"{KEPT}\n{DAMAGED}\n")
    (folder / "2026-11-29" / f"{'5' * 32}.jsonl").write_text(f"{REMOTE_STYLE}\n")  # an object a request, as on S3
    (folder / "audit-2026-11-26.jsonl").write_text("")  # empty: nothing to load, removed
    # Not named as the API names its files (a copy, a name Spark takes for hidden or as a
    # pattern): not read, and kept.
    strangers = ["audit-2026-11-27 copy.jsonl", "_audit-2026-11-27.jsonl", "audit-[2026-11-27.jsonl"]
    for name in strangers:
        (folder / name).write_text(f"{KEPT}\n")
    today = date(2026, 12, 1)

    first = load_api_audit(spark, config, today)
    assert (first.loaded, first.removed) == (5, 3)
    assert sorted((Path(name).name, count) for name, count in first.unreadable.items()) == [
        ("audit-2026-11-28.jsonl", 1), ("audit-2026-12-01.jsonl", 1)]
    assert sorted(Path(name).name for name in first.not_the_apis) == sorted(strangers)
    # Before yesterday, read whole: removed. A file with a line unread stays, and so does today's.
    assert sorted(path.name for path in folder.rglob("*.jsonl")) == sorted(
        [*strangers, "audit-2026-11-28.jsonl", "audit-2026-12-01.jsonl"])
    erasure_id = "api:" + hashlib.sha256(ERASURE.encode()).hexdigest()
    expected = [
        expected_row("api:a1", "h-ada", "preference", "api.preferences_changed", '{"subscribed":true}',
                     '{"subscribed":false}', "subscriber", "ref-1", "2026-12-01 10:00:00.250"),
        expected_row("api:a3", "h-bob", "consent", "api.suppressed_by_esp", '{"suppression":null}',
                     '{"suppression":"complaint"}', "esp:generic", "unknown", "2026-11-27 09:30:00"),
        expected_row("api:a4", "h-cy", "preference", "api.preferences_changed", '{"topics":[]}',
                     '{"topics":["offers"]}', "subscriber", "ref-4", "2026-11-28 08:00:00"),
        expected_row("api:a5", "h-dee", "erasure", "api.erasure_requested", '{"suppression":"unsubscribed"}',
                     None, "key:ops", "ref-5", "2026-11-29 12:00:00"),
        expected_row(erasure_id, "h-hal", "erasure", "api.erasure_requested", '{"suppression":null}', None,
                     "key:ops", "unknown", "2026-11-27 09:00:00"),
    ]
    found = loaded_rows(spark, config)
    assert_df_equality(found, spark.createDataFrame(sorted(expected, key=lambda row: row.audit_id), found.schema),
                       ignore_nullable=True)

    # Run again (as after a crash between the MERGE and the clean-up): nothing twice.
    assert load_api_audit(spark, config, today) == ApiAuditLoad(0, first.unreadable, 0, first.not_the_apis)
    # The line in flight is finished: only it is new.
    today_file.write_text(f"{UNSUBSCRIBE}\n\n{IN_FLIGHT}\n")
    third = load_api_audit(spark, config, today)
    assert (third.loaded, third.removed) == (1, 0)
    assert [Path(name).name for name in third.unreadable] == ["audit-2026-11-28.jsonl"]
    assert loaded_rows(spark, config).count() == 6
    # Two days on, today's file is of a day gone by and goes too; the damaged one stays.
    assert load_api_audit(spark, config, date(2026, 12, 3)).removed == 1
    assert sorted(path.name for path in folder.rglob("*.jsonl")) == sorted([*strangers, "audit-2026-11-28.jsonl"])


def test_no_api_audit_folder_loads_nothing_and_creates_nothing(spark, tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", *SPARK_TEST_SETTINGS])
    assert load_api_audit(spark, config) == ApiAuditLoad(0, {}, 0)
    assert not (tmp_path / "audit").exists()


def test_what_the_api_writes_is_what_the_load_reads(spark, tmp_path, monkeypatch):
    """A real unsubscribe through the API (its line, its keyed hashes), then the load."""
    import hashlib as _hashlib
    import hmac

    from api import create_app
    from pipelines.pii import load_keys, subject_hash
    from tests.api.conftest import KEYS, seed
    from tests.api.test_preferences import token_for

    monkeypatch.setenv("TAILOR_API_TOKENS", ",".join(f"{key_id}:{_hashlib.sha256(key.encode()).hexdigest()}:{scopes}"
                                                     for key_id, (key, scopes) in KEYS.items()))
    monkeypatch.setenv("TAILOR_LINK_SIGNING_KEY", "test-link-signing-key-not-a-secret")
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=sqlite", *SPARK_TEST_SETTINGS])
    seed(config)
    client = create_app({"TESTING": True, "TAILOR_CONFIG": config}).test_client()
    token = token_for(client, "u-ada")
    assert client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"},
                       headers={"X-Request-Id": "req-00000042"}).status_code == 200

    assert load_api_audit(spark, config).loaded == 1
    row = loaded_rows(spark, config).first()
    keys = load_keys(config)
    assert (row.subject_hash, row.action, row.field, row.outcome, row.actor, row.source) == (
        subject_hash(keys, "u-ada"), "preference", "api.preferences_changed", "requested", "subscriber", "api")
    assert row.event_ref == hmac.new(keys.hmac_key, b"request:req-00000042", _hashlib.sha256).hexdigest()
    assert json.loads(row.before)["subscribed"] is True and json.loads(row.after)["subscribed"] is False
