"""Folders copied between this machine and an object store (moto's S3 in server mode), and
the Great Expectations project kept under a remote storage.root through a local copy."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from expectations.runner import _project
from pipelines.config import load_config
from pipelines.runtime.filesystems import copy_tree

BUCKET = "tailor-state"
DOCS = "gx/uncommitted/data_docs/local_site/index.html"


@pytest.fixture
def s3(moto_server, monkeypatch):
    for name, value in (("AWS_ENDPOINT_URL", moto_server), ("AWS_ACCESS_KEY_ID", "testing"),
                        ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_REGION", "eu-west-1"),
                        ("AWS_DEFAULT_REGION", "eu-west-1")):
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-1")
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for found in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=found["Key"])
    client.delete_bucket(Bucket=BUCKET)


def _keys(client, prefix: str) -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    # pyarrow leaves an empty "folder/" marker object for each folder it creates: not files.
    return {item["Key"]: client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read() for item in listed
            if not item["Key"].endswith("/")}


def test_a_folder_goes_to_the_store_and_comes_back_byte_for_byte(s3, tmp_path):
    source = tmp_path / "out"
    (source / "a" / "b").mkdir(parents=True)
    (source / "top.json").write_bytes(b'{"x": 1}')
    (source / "a" / "b" / "deep.html").write_bytes(b"<p>deep</p>")
    assert copy_tree(str(source), f"s3://{BUCKET}/state/out")
    assert _keys(s3, "state/out/") == {"state/out/top.json": b'{"x": 1}', "state/out/a/b/deep.html": b"<p>deep</p>"}
    back = tmp_path / "back"
    assert copy_tree(f"s3://{BUCKET}/state/out", str(back))
    assert (back / "top.json").read_bytes() == b'{"x": 1}'
    assert (back / "a" / "b" / "deep.html").read_bytes() == b"<p>deep</p>"


def test_a_missing_folder_copies_nothing(s3, tmp_path):
    assert copy_tree(f"s3://{BUCKET}/nothing-here", str(tmp_path / "into")) is False
    assert not (tmp_path / "into").exists()
    assert copy_tree(str(tmp_path / "absent"), f"s3://{BUCKET}/state/absent") is False
    assert _keys(s3, "state/") == {}


def test_the_expectations_project_on_a_remote_root_is_brought_down_and_kept(s3):
    config = load_config("emr", [f"storage.root=s3://{BUCKET}/prod"])
    with _project(config, keep=True) as folder:
        assert not folder.startswith("s3://")
        docs = Path(folder) / DOCS
        docs.parent.mkdir(parents=True)
        docs.write_text("run 1", encoding="utf-8")
    assert _keys(s3, "prod/quality/") == {f"prod/quality/{DOCS}": b"run 1"}
    assert not Path(folder).exists()  # the local copy is gone

    # The next run finds the last one's site; a run that keeps nothing leaves the store alone.
    with _project(config, keep=False) as folder:
        docs = Path(folder) / DOCS
        assert docs.read_text(encoding="utf-8") == "run 1"
        docs.write_text("scratch", encoding="utf-8")
    assert _keys(s3, "prod/quality/") == {f"prod/quality/{DOCS}": b"run 1"}


def test_a_local_root_is_used_in_place(tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}"])
    with _project(config, keep=True) as folder:
        assert folder == str(tmp_path / "quality")


def test_an_s3a_uri_is_the_same_bucket(s3, tmp_path):
    """Spark outside EMR names S3 s3a://; pyarrow knows it as s3://."""
    source = tmp_path / "out"
    source.mkdir()
    (source / "a.json").write_bytes(b"{}")
    assert copy_tree(str(source), f"s3a://{BUCKET}/state/out")
    assert _keys(s3, "state/out/") == {"state/out/a.json": b"{}"}
