"""The API's audit lines name a person by the pipeline's keyed subject_hash (HMAC-SHA256 of
"user:<user_id>" under the key in TAILOR_PII_HMAC_KEY), not by a plain SHA-256 that
anyone holding the list of user ids could reverse; the same value audit.log holds for the
same person. The expected values are computed here from the key, by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from pathlib import Path

import boto3
import pytest

from api import consent, create_app
from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.pii import load_keys, subject_hash
from tests.api.conftest import headers, seed
from tests.api.test_preferences import audit_lines, token_for
from tests.api.test_webhooks import signed

HMAC_KEY = bytes(range(32))  # test values, not secrets
ENCRYPTION_KEYRING = "t1:" + base64.b64encode(bytes(range(32, 64))).decode()


def by_hand(key: bytes, user_id: str) -> str:
    return hmac.new(key, b"user:" + user_id.encode(), hashlib.sha256).hexdigest()


@pytest.fixture
def keyed(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TAILOR_PII_HMAC_KEY", base64.b64encode(HMAC_KEY).decode())
    monkeypatch.setenv("TAILOR_PII_ENCRYPTION_KEY", ENCRYPTION_KEYRING)


def test_every_audit_line_names_the_person_by_the_keyed_hash(keyed, make_app):
    app = make_app()
    client = app.test_client()
    token = token_for(client, "u-ada")
    assert client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    body = json.dumps({"events": [{"id": "c1", "type": "complaint", "user_id": "u-bob",
                                   "occurred_at": "2026-11-28T10:00:00Z", "campaign_id": "c-1"}]}).encode()
    assert client.post("/v1/webhooks/generic", data=body, headers=signed(body)).status_code == 200
    assert client.delete("/v1/users/u-hal", headers=headers("ops")).status_code == 202

    entries = audit_lines(app)
    assert [(entry["action"], entry["subject_hash"]) for entry in entries] == [
        ("preferences_changed", by_hand(HMAC_KEY, "u-ada")),
        ("suppressed_by_esp", by_hand(HMAC_KEY, "u-bob")),
        ("erasure_requested", by_hand(HMAC_KEY, "u-hal")),
    ]
    text = json.dumps(entries)
    for user_id in ("u-ada", "u-bob", "u-hal"):
        assert user_id not in text
        assert hashlib.sha256(user_id.encode()).hexdigest() not in text  # the old, unkeyed reference
    assert all("user_ref" not in entry for entry in entries)
    # Each line has its own id, by which `tailor maintain` loads it into audit.log once.
    assert len({entry["audit_id"] for entry in entries}) == 3
    assert all(re.fullmatch(r"[0-9a-f]{32}", entry["audit_id"]) for entry in entries)


def _moto_s3(moto_server, monkeypatch):  # type: ignore[no-untyped-def]
    for name, value in (("AWS_ENDPOINT_URL", moto_server), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "eu-west-1")):
        monkeypatch.setenv(name, value)
    return boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-1")


def test_under_a_remote_storage_root_a_requests_lines_are_objects_in_a_folder_a_day(keyed, moto_server,
                                                                                      monkeypatch, tmp_path):
    """An object store cannot append: a request's lines are objects of their own (moto's S3),
    of at most AUDIT_BATCH lines (two here): a webhook suppressing three people is two writes."""
    s3 = _moto_s3(moto_server, monkeypatch)
    s3.create_bucket(Bucket="tailor-audit", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    config = load_config("local", ["storage.root=s3://tailor-audit/state", "serving.type=sqlite",
                                   f"serving.sqlite.path={tmp_path / 'content.db'}"])
    seed(config)
    app = create_app({"TESTING": True, "TAILOR_CONFIG": config})
    monkeypatch.setattr(consent, "emit", lambda events: None)  # no events source here: this test is about the audit
    monkeypatch.setattr(consent, "AUDIT_BATCH", 2)
    client = app.test_client()
    body = json.dumps({"events": [{"id": f"c{number}", "type": "complaint", "user_id": user_id,
                                   "occurred_at": "2026-11-28T10:00:00Z", "campaign_id": "c-1"}
                                  for number, user_id in enumerate(("u-ada", "u-bob", "u-hal"))]}).encode()
    assert client.post("/v1/webhooks/generic", data=body, headers=signed(body)).status_code == 200
    assert client.delete("/v1/users/u-cy", headers=headers("ops")).status_code == 202
    listed = s3.list_objects_v2(Bucket="tailor-audit", Prefix="state/audit/api/")["Contents"]
    objects = [s3.get_object(Bucket="tailor-audit", Key=item["Key"])["Body"].read().decode()
               for item in sorted(listed, key=lambda item: item["LastModified"])]
    assert all(re.fullmatch(r"state/audit/api/\d{4}-\d{2}-\d{2}/[0-9a-f]{32}\.jsonl", item["Key"]) for item in listed)
    entries = [[json.loads(line) for line in text.splitlines()] for text in objects]
    assert sorted(len(lines) for lines in entries) == [1, 1, 2]
    by_action = {entry["subject_hash"]: entry["action"] for lines in entries for entry in lines}
    assert by_action == {**{by_hand(HMAC_KEY, user_id): "suppressed_by_esp" for user_id in ("u-ada", "u-bob", "u-hal")},
                         by_hand(HMAC_KEY, "u-cy"): "erasure_requested"}
    assert all(text.endswith("\n") for text in objects)


def test_an_audit_line_that_cannot_be_stored_is_logged_and_the_change_stands(keyed, moto_server, monkeypatch,
                                                                             tmp_path, caplog):
    """No bucket: the erasure is still in effect and answered; its line goes to the log whole.
    The next request does not wait on S3 again for a while: its line is logged at once."""
    _moto_s3(moto_server, monkeypatch)
    config = load_config("local", ["storage.root=s3://no-such-bucket/state", "serving.type=sqlite",
                                   f"serving.sqlite.path={tmp_path / 'content.db'}", "source.type=kafka",
                                   "source.kafka.bootstrap_servers=127.0.0.1:1"])
    seed(config)
    app = create_app({"TESTING": True, "TAILOR_CONFIG": config})
    monkeypatch.setattr(consent, "emit", lambda events: None)  # no broker here: this test is about the audit
    client = app.test_client()
    assert client.delete("/v1/users/u-ada", headers={**headers("ops"), "X-Request-Id": "req-00000001"}).status_code \
        == 202
    assert client.get("/v1/content/u-ada", headers=headers("reader")).status_code == 410
    logged = [record.getMessage() for record in caplog.records if "audit line not stored" in record.getMessage()]
    assert len(logged) == 1
    entry = json.loads(logged[0].split("logged instead: ", 1)[1])
    assert (entry["action"], entry["subject_hash"]) == ("erasure_requested", by_hand(HMAC_KEY, "u-ada"))
    # audit.log will keep a keyed hash of the caller's request id, never the id itself.
    expected_ref = hmac.new(HMAC_KEY, b"request:req-00000001", hashlib.sha256).hexdigest()
    assert (entry["request_id"], entry["request_ref"]) == ("req-00000001", expected_ref)
    calls = []
    monkeypatch.setattr(consent, "_s3_client", lambda: calls.append(1))
    assert client.delete("/v1/users/u-bob", headers=headers("ops")).status_code == 202
    assert calls == [] and sum("audit line not stored" in record.getMessage() for record in caplog.records) == 2


def test_the_api_and_the_pipeline_hash_a_person_alike(keyed, make_app):
    """merge_profiles writes audit.log's subject_hash with pipelines.pii under load_keys(config):
    the API's line for the same person carries the same value, so the two can be joined."""
    app = make_app()
    client = app.test_client()
    assert client.delete("/v1/users/u-ada", headers=headers("ops")).status_code == 202
    config = app.extensions["tailor"]["config"]
    assert audit_lines(app)[0]["subject_hash"] == subject_hash(load_keys(config), "u-ada")


def test_locally_the_api_uses_the_pipelines_generated_dev_keys(make_app, monkeypatch):
    """Without the key variables, conf/local.yaml's pii.dev_keys_file (generated once, shared
    with the pipeline's jobs under storage.root) holds the key."""
    monkeypatch.delenv("TAILOR_PII_HMAC_KEY", raising=False)
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    app = make_app()
    config = app.extensions["tailor"]["config"]
    client = app.test_client()
    assert client.delete("/v1/users/u-ada", headers=headers("ops")).status_code == 202
    material = json.loads(Path(config.under_root(config.pii.dev_keys_file)).read_text(encoding="utf-8"))
    assert audit_lines(app)[0]["subject_hash"] == by_hand(base64.b64decode(material["hmac_key"]), "u-ada")


@pytest.mark.parametrize(("value", "problem"), [
    ("not base64!", "TAILOR_PII_HMAC_KEY is not valid base64"),
    (base64.b64encode(b"short").decode(), "TAILOR_PII_HMAC_KEY must hold at least 32 bytes (base64), got 5"),
])
def test_a_bad_hmac_key_stops_the_app_with_one_line(keyed, monkeypatch, tmp_path, value, problem):
    monkeypatch.setenv("TAILOR_PII_HMAC_KEY", value)
    config = load_config("local", [f"storage.root={tmp_path}"])
    with pytest.raises(ConfigError) as raised:
        create_app({"TESTING": True, "TAILOR_CONFIG": config})
    assert str(raised.value) == problem  # one line, naming the variable, never quoting its value


def test_no_key_and_no_dev_keys_file_stops_the_app(monkeypatch, tmp_path):
    monkeypatch.delenv("TAILOR_PII_HMAC_KEY", raising=False)
    monkeypatch.setenv("TAILOR_PII_ENCRYPTION_KEY", ENCRYPTION_KEYRING)
    config = load_config("local", [f"storage.root={tmp_path}", "pii.dev_keys_file=null"])
    with pytest.raises(ConfigError, match=r"^environment variable TAILOR_PII_HMAC_KEY is not set; "):
        create_app({"TESTING": True, "TAILOR_CONFIG": config})


def test_the_api_needs_the_hmac_key_only_never_the_encryption_key(monkeypatch, tmp_path):
    """It hashes ids and decrypts nothing: a web host without the key to every stored email
    starts, and hashes as the pipeline does."""
    monkeypatch.setenv("TAILOR_PII_HMAC_KEY", base64.b64encode(HMAC_KEY).decode())
    monkeypatch.delenv("TAILOR_PII_ENCRYPTION_KEY", raising=False)
    config = load_config("local", [f"storage.root={tmp_path}", "pii.dev_keys_file=null"])
    app = create_app({"TESTING": True, "TAILOR_CONFIG": config})
    assert app.extensions["tailor"]["pii_hmac_key"] == HMAC_KEY
    assert not (tmp_path / "secrets").exists()  # no dev keys were generated either


def test_under_an_s3_root_the_files_sources_events_land_in_s3_not_in_a_local_folder(keyed, moto_server, monkeypatch,
                                                                                     tmp_path):
    """The files source reads its landing folder under storage.root: the API's events go there
    (moto's S3), never to a folder named `s3:` beside the process."""
    s3 = _moto_s3(moto_server, monkeypatch)
    s3.create_bucket(Bucket="tailor-files", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    monkeypatch.chdir(tmp_path)
    config = load_config("local", ["storage.root=s3://tailor-files/state", "serving.type=sqlite",
                                   f"serving.sqlite.path={tmp_path / 'content.db'}"])
    seed(config)
    client = create_app({"TESTING": True, "TAILOR_CONFIG": config}).test_client()
    token = token_for(client, "u-ada")
    assert client.post(f"/v1/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="tailor-files")["Contents"]]
    landed = [key for key in keys if key.startswith("state/landing/events/api-")]
    assert len(landed) == 1 and any(key.startswith("state/audit/api/") for key in keys), keys
    events = [json.loads(line) for line in
              s3.get_object(Bucket="tailor-files", Key=landed[0])["Body"].read().decode().splitlines()]
    assert [(event["event_type"], event["user_id"]) for event in events] == [("unsubscribe", "u-ada")]
    assert not (tmp_path / "s3:").exists()
