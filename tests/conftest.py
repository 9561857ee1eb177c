"""Shared fixtures: one Spark session per test run, one real Kafka broker, both local.

Everything a test writes lives under a per-run temporary storage.root, never under var/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.config import Config, load_config
from tests.settings import SPARK_TEST_SETTINGS

ROOT = Path(__file__).resolve().parents[1]

# Expectations write event times as naive UTC datetimes, and PySpark converts naive
# datetimes with the process's local zone: pin it, so a machine set to another zone
# does not shift them.
os.environ["TZ"] = "UTC"
time.tzset()

# Tests only ever talk to the local AWS stand-in (moto). Set before Spark starts, so the
# Python workers that run the Kinesis reader inherit them.
for _name, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                      ("AWS_DEFAULT_REGION", "eu-west-1")):
    os.environ.setdefault(_name, _value)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts Spark or the Kafka broker by the fixtures it uses, so
    `make test-fast` (-m "not spark and not kafka") can leave them out."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "spark" in fixtures:
            item.add_marker(pytest.mark.spark)
        if "kafka_broker" in fixtures:
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def storage_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tailor-state")


@pytest.fixture(scope="session")
def config(storage_root) -> Config:
    return load_config("local", [f"storage.root={storage_root}", *SPARK_TEST_SETTINGS])


@pytest.fixture(scope="session")
def spark(config):
    from pipelines.runtime.session import build_spark

    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = build_spark(config, app_name="tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real single-node KRaft broker from the Maven jars, on free loopback ports."""
    from pipelines.services.kafka_broker import KafkaBroker, free_port

    home = tmp_path_factory.mktemp("kafka")
    broker = KafkaBroker(home=home, port=free_port(), controller_port=free_port())
    broker.start()
    yield broker
    broker.stop()
    if os.environ.get("TAILOR_KEEP_KAFKA_LOGS"):
        shutil.copytree(home / "logs", ROOT / "var" / "test-kafka-logs", dirs_exist_ok=True)


@pytest.fixture(scope="session")
def moto_server():
    """moto in server mode on a free loopback port: the stand-in for Kinesis and DynamoDB."""
    from moto.server import ThreadedMotoServer

    from pipelines.services.kafka_broker import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server (the system's package, which `make setup` installs) on a free
    loopback port, without persistence; yields its URL. Tests keep apart by key prefix."""
    import redis

    from pipelines.services.kafka_broker import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server not found: run `make setup` (it installs the system's redis-server package)")
    home = tmp_path_factory.mktemp("redis")
    port = free_port()
    with open(home / "redis.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
             "--dir", str(home)], stdout=log, stderr=subprocess.STDOUT)
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 20
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (home / "redis.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"redis-server did not answer PING on port {port}:\n{output}")
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
