"""Shared fixtures: one Spark session per xdist worker (per run without xdist), one real
Kafka broker, both local.

Everything a test writes lives under a per-run temporary storage.root, never under var/.
"""

from __future__ import annotations

import os
import shutil
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


# The slowest modules, slowest first (pytest --junitxml on 2 cores: 100 to 350 s each).
# `make test` hands whole modules to its two workers in collection order; starting with these
# keeps one worker from running a 300-second module alone at the end while the other idles
# (with --no-loadscope-reorder, which stops pytest-xdist from ordering by the number of tests).
SLOWEST_MODULES = (
    "tests/bench/test_smoke.py", "tests/pipelines/profiles/test_profile_merge.py", "tests/jobs/test_publish_content.py",
    "tests/jobs/test_run.py", "tests/jobs/test_merge_profiles.py", "tests/jobs/test_publish_crash.py",
    "tests/jobs/test_ingest_kill_restart.py", "tests/expectations/test_suites.py", "tests/bench/test_smoke_batch.py",
    "tests/jobs/test_score_recommendations.py", "tests/jobs/test_build_features.py",
    "tests/pipelines/profiles/test_order_property.py", "tests/jobs/test_train_recommender.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts Spark or the Kafka broker by the fixtures it uses, so
    `make test-fast` (-m "not spark and not kafka") can leave them out; and run the
    slowest modules first."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "spark" in fixtures:
            item.add_marker(pytest.mark.spark)
        if "kafka_broker" in fixtures:
            item.add_marker(pytest.mark.kafka)
    rank = {module: number for number, module in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


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
    """A real redis-server on a free loopback port, without persistence; yields its URL.
    Tests keep apart by key prefix."""
    from pipelines.errors import EnvironmentProblem
    from pipelines.services.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
    except EnvironmentProblem as problem:
        pytest.fail(str(problem))
    try:
        yield server.url
    finally:
        server.stop()
