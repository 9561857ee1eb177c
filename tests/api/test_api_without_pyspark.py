import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A meta-path finder that refuses pyspark and the rest of setup.py's `spark` extra, as on a
# web host where the API is installed without it (pip install .).
BLOCK_PYSPARK = """
import sys
SPARK_EXTRA = ("pyspark", "delta", "pandas", "pyarrow", "numpy", "great_expectations", "mlflow", "matplotlib")
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in SPARK_EXTRA:
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Refuse())
"""


def test_api_imports_and_serves_without_pyspark(tmp_path):
    script = BLOCK_PYSPARK + f"""
from api import create_app
from pipelines.config import load_config
config = load_config("local", ["storage.root={tmp_path}"])
client = create_app({{"TESTING": True, "TAILOR_CONFIG": config}}).test_client()
response = client.get("/healthz")
assert response.status_code == 200, response.status_code
assert response.get_json()["status"] == "ok"
missing = client.get("/nope")
assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
assert not any(name.startswith("pyspark") for name in sys.modules)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_every_endpoint_family_serves_without_pyspark(tmp_path):
    # A change through the preference API writes an event to the files source: that path too.
    script = BLOCK_PYSPARK + f"""
import hashlib, os
os.environ["TAILOR_API_TOKENS"] = "ops:" + hashlib.sha256(b"k").hexdigest() + ":admin"
os.environ["TAILOR_LINK_SIGNING_KEY"] = "test-only"
from api import create_app
from pipelines.config import load_config
client = create_app({{"TAILOR_CONFIG": load_config("local", ["storage.root={tmp_path}"])}}).test_client()
key = {{"X-Api-Key": "k"}}
assert client.get("/v1/content/u-1", headers=key).get_json()["fallback"] == "unknown_user"
token = client.get("/v1/users/u-1/preference-link", headers=key).get_json()["token"]
assert client.put("/v1/preferences/" + token, json={{"subscribed": False}}).status_code == 200
assert client.get("/v1/content/u-1", headers=key).status_code == 410
assert client.get("/v1/preview/u-2", headers=key).status_code == 200
assert client.get("/openapi.json").status_code == 200 and client.get("/metrics").status_code == 200
assert not any(name.startswith("pyspark") for name in sys.modules)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_config_and_contract_load_without_pyspark():
    script = BLOCK_PYSPARK + """
from pipelines.config import load_config
from pipelines.contracts import validate_event
load_config("local")
assert validate_event("{") .code == "malformed_json"
from jobs.cli import main
assert main(["config", "show"]) == 0
import tempfile
import pipelines.serving
import pipelines.serving.dynamodb
import pipelines.serving.redis_store
from pipelines.serving import open_store
with tempfile.TemporaryDirectory() as root:
    with open_store(load_config("local", [f"storage.root={root}", "serving.type=sqlite"])) as store:
        store.write_batch("content", {"u-1": {"greeting": {"text": "Hi Ada"}}})
        assert store.read("content", "u-1") == {"greeting": {"text": "Hi Ada"}}
assert not any(name.startswith("pyspark") for name in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_subpackage_and_the_modules_documented_as_pyspark_free_import_without_it():
    """The layout's rule: a subpackage's `__init__` never imports pyspark, so importing a
    pyspark-free module inside it (the offer rules, the serving stores) needs none either.
    The subpackages are found on disk: a new one is covered without editing this test."""
    subpackages = sorted(f"pipelines.{path.parent.name}" for path in (ROOT / "pipelines").glob("*/__init__.py"))
    assert {"pipelines.ingest", "pipelines.publish", "pipelines.serving"} <= set(subpackages)
    modules = [*subpackages, "pipelines.publish.offers", "pipelines.contracts.events", "pipelines.pii",
               "pipelines.errors", "pipelines.config"]
    script = BLOCK_PYSPARK + f"""
import importlib
for name in {modules!r}:
    importlib.import_module(name)
assert not any(name.startswith("pyspark") for name in sys.modules)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_an_s3_storage_root_keeps_audit_lines_without_the_spark_extra(tmp_path, moto_server):
    """Under an s3:// root the audit lines go to S3 through boto3 (moto's S3 and Kinesis
    here), which an API-only install has."""
    import base64
    import os

    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_server, region_name="eu-west-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")
    s3.create_bucket(Bucket="api-only", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    kinesis = boto3.client("kinesis", endpoint_url=moto_server, region_name="eu-west-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    kinesis.create_stream(StreamName="api-only-events", ShardCount=1)
    script = BLOCK_PYSPARK + f"""
import hashlib, os
os.environ["TAILOR_API_TOKENS"] = "ops:" + hashlib.sha256(b"k").hexdigest() + ":admin"
from api import create_app
from pipelines.config import load_config
config = load_config("local", ["storage.root=s3://api-only/state", "serving.type=sqlite",
                               "serving.sqlite.path={tmp_path / 'content.db'}", "source.type=kinesis",
                               "source.kinesis.stream_name=api-only-events",
                               "source.kinesis.endpoint_url={moto_server}"])
client = create_app({{"TAILOR_CONFIG": config}}).test_client()
print(client.delete("/v1/users/u-1", headers={{"X-Api-Key": "k"}}).status_code)
assert not any(name.split(".")[0] in SPARK_EXTRA for name in sys.modules)
"""
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "eu-west-1",
           "TAILOR_PII_HMAC_KEY": base64.b64encode(bytes(32)).decode()}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "202"
    listed = s3.list_objects_v2(Bucket="api-only", Prefix="state/audit/api/").get("Contents", [])
    lines = [line for item in listed
             for line in s3.get_object(Bucket="api-only", Key=item["Key"])["Body"].read().decode().splitlines()]
    assert [json.loads(line)["action"] for line in lines] == ["erasure_requested"]
