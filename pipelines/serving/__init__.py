"""The serving stores: where `tailor publish` exports content rows and the API reads them.

    with open_store(config) as store:               # serving.type: sqlite | redis | dynamodb
        store.write_batch("content", {"u-1": row}, generation="g42-1f2e")
        store.swap("g42-1f2e")                      # readers now see the rebuild, all of it
        store.read_many("content", ["u-1", "u-2"])  # {"u-1": row}

As Feast's `repo_config.py` does, `serving.type` names the class, imported only when
chosen: a machine without redis or boto3 opens a SQLite store, and gets one clear line
when it asks for the store whose client library is missing. Never imports pyspark: the
API uses this package on web hosts without Spark.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from pipelines.errors import ConfigError
from pipelines.serving.base import (
    CONTENT,
    DEFAULT,
    GENERATION_KINDS,
    INITIAL_GENERATION,
    KINDS,
    MAX_READ_KEYS,
    PREFERENCES,
    SUPPRESSION,
    TRAITS,
    UNVERSIONED_KINDS,
    Kind,
    ServingStore,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from pipelines.config import Config

__all__ = [
    "CONTENT", "DEFAULT", "GENERATION_KINDS", "INITIAL_GENERATION", "KINDS", "MAX_READ_KEYS", "PREFERENCES",
    "STORE_CLASS_FOR_TYPE", "SUPPRESSION", "TRAITS", "UNVERSIONED_KINDS", "Kind", "ServingStore", "StoreUnavailable",
    "open_store", "store_class",
]

# serving.type -> (module, class, the pip distribution its client library comes from).
STORE_CLASS_FOR_TYPE: dict[str, tuple[str, str, str | None]] = {
    "sqlite": ("pipelines.serving.sqlite", "SqliteStore", None),
    "redis": ("pipelines.serving.redis_store", "RedisStore", "redis"),
    "dynamodb": ("pipelines.serving.dynamodb", "DynamoDbStore", "boto3"),
}


def store_class(store_type: str) -> type[ServingStore]:
    """The class for a `serving.type`, imported now; a missing client library is a
    one-line ConfigError naming what to install."""
    if store_type not in STORE_CLASS_FOR_TYPE:
        raise ConfigError(f"serving.type: unknown store '{store_type}'; known: {', '.join(STORE_CLASS_FOR_TYPE)}")
    module_name, class_name, distribution = STORE_CLASS_FOR_TYPE[store_type]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name.split(".")[0] if error.name else None
        if distribution is None or missing not in {distribution, "botocore", "hiredis"}:
            raise
        package = "hiredis" if missing == "hiredis" else distribution
        raise ConfigError(f"serving.type: {store_type} needs the '{package}' package, which is not installed "
                          f"(pip install {package})") from None
    cls: type[ServingStore] = getattr(module, class_name)
    return cls


def open_store(config: Config) -> ServingStore:
    """The store `config.serving.type` names, opened (SQLite and DynamoDB with
    create_table check their file or table now; Redis connects on first use)."""
    return store_class(config.serving.type)(config)
