"""One store of each kind, real ones: a SQLite file under tmp_path, the session's
redis-server, moto's DynamoDB. Each test gets its own key prefix or table, so tests do
not see each other's records."""

from __future__ import annotations

import uuid

import pytest

from pipelines.config import Config, load_config
from pipelines.serving import ServingStore, open_store

STORE_TYPES = ("sqlite", "redis", "dynamodb")


def serving_overrides(request: pytest.FixtureRequest, store_type: str, root: str) -> list[str]:
    """--set overrides for a fresh store of `store_type`; starts Redis or moto only when asked for."""
    unique = uuid.uuid4().hex[:12]
    overrides = [f"storage.root={root}", f"serving.type={store_type}"]
    if store_type == "redis":
        url = request.getfixturevalue("redis_server")
        overrides += [f"serving.redis.url={url}", f"serving.redis.key_prefix=test:{unique}"]
    elif store_type == "dynamodb":
        endpoint = request.getfixturevalue("moto_server")
        overrides += [f"serving.dynamodb.endpoint_url={endpoint}", f"serving.dynamodb.table=content-{unique}",
                      "serving.dynamodb.create_table=true", "serving.dynamodb.region=eu-west-1"]
    return overrides


@pytest.fixture(params=STORE_TYPES)
def store_type(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serving_config(request: pytest.FixtureRequest, store_type: str, tmp_path) -> Config:
    return load_config("local", serving_overrides(request, store_type, str(tmp_path)))


@pytest.fixture
def store(serving_config: Config):
    with open_store(serving_config) as opened:
        yield opened


@pytest.fixture
def open_another(request: pytest.FixtureRequest, tmp_path):
    """Opens further stores of a given type (closed at the end), each with its own prefix or table."""
    opened: list[ServingStore] = []

    def make(store_type: str, *extra: str) -> ServingStore:
        config = load_config("local", [*serving_overrides(request, store_type, str(tmp_path)), *extra])
        opened.append(open_store(config))
        return opened[-1]

    yield make
    for item in opened:
        item.close()
