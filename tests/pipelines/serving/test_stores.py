"""The serving stores, each against the real thing: a SQLite file, a redis-server, DynamoDB
in moto. The same behaviour is asked of all three; what each keeps on disk or on the
wire is checked against its documented layout. No Spark."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections import Counter
from typing import Any

import boto3
import pytest
import redis
from botocore.config import Config as BotoConfig

from pipelines.config import load_config
from pipelines.errors import ConfigError
from pipelines.services.kafka_broker import free_port
from pipelines.serving import ServingStore, StoreUnavailable, open_store
from pipelines.serving import redis_store as redis_store_module
from pipelines.serving import sqlite as sqlite_module
from pipelines.serving.dynamodb import DynamoDbStore

ADA = {
    "user_id": "u-1842",
    "content_version": "2026-11-27T08:00:00Z/42",
    "fallback": None,
    "locale": "en-GB",
    "greeting": {"first_name": "Ada", "text": "Hi Ada"},
    "segment": "cart_abandoner",
    "send_hour_utc": 19,
    "products": [
        {"product_id": "22423", "title": "Regency cakestand 3 tier", "price": {"amount": 12.75, "currency": "GBP"},
         "reason": "because_you_viewed"},
        {"product_id": "85123A", "title": "White hanging heart T-light holder", "price": {"amount": 2.55,
         "currency": "GBP"}, "reason": "popular_in_segment"},
    ],
    "cart": [],
}
ZOE = {
    "user_id": "u-7",
    "locale": "de-DE",
    "greeting": {"first_name": "Zoë", "text": "Hallo Zoë 👋"},
    "title": "日本語のタイトル",
    "nested": [["ä", "ß", []], [1, 2.5, None, True, False], {"deep": [{"deeper": ["€"]}]}],
}


# -- what each store keeps, read behind its back -------------------------------------------


def stored(store: ServingStore) -> Counter[str]:
    """Rows kept per generation ('-' for suppression), read from the store's own storage."""
    config = store.config
    counts: Counter[str] = Counter()
    if config.serving.type == "sqlite":
        with sqlite3.connect(config.under_root(config.serving.sqlite.path)) as db:
            for generation, count in db.execute("SELECT generation, COUNT(*) FROM records GROUP BY generation"):
                counts[generation or "-"] = count
    elif config.serving.type == "redis":
        client = redis.Redis.from_url(config.serving.redis.url)
        prefix = config.serving.redis.key_prefix
        for name in client.scan_iter(match=f"{prefix}:*", count=1000):
            parts = name.decode()[len(prefix) + 1:].split(":")
            if parts[0] == "g":
                counts[parts[1]] += 1
            elif parts[0] == "suppression":
                counts["-"] += 1
        client.close()
    else:
        for item in _scan(config):
            if "generation" in item:
                counts[item["generation"]["S"]] += 1
            elif item["pk"]["S"].startswith("suppression:"):
                counts["-"] += 1
    return counts


def _dynamodb(config):
    settings = config.serving.dynamodb
    return boto3.client("dynamodb", region_name=settings.region, endpoint_url=settings.endpoint_url)


def _scan(config) -> list[dict[str, Any]]:
    client = _dynamodb(config)
    items, request = [], {"TableName": config.serving.dynamodb.table, "ConsistentRead": True}
    while True:
        page = client.scan(**request)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# -- the same behaviour from every store ----------------------------------------------------


def test_open_store_picks_the_class_by_type(store, store_type):
    assert type(store).__name__ == {"sqlite": "SqliteStore", "redis": "RedisStore",
                                    "dynamodb": "DynamoDbStore"}[store_type]


def test_round_trip_keeps_unicode_and_nesting(store):
    store.write_batch("content", {"u-1842": ADA, "u-7": ZOE})

    assert store.read("content", "u-7") == {
        "user_id": "u-7",
        "locale": "de-DE",
        "greeting": {"first_name": "Zoë", "text": "Hallo Zoë 👋"},
        "title": "日本語のタイトル",
        "nested": [["ä", "ß", []], [1, 2.5, None, True, False], {"deep": [{"deeper": ["€"]}]}],
    }
    both = store.read_many("content", ["u-1842", "u-7"])
    assert both["u-1842"]["products"][1] == {"product_id": "85123A", "title": "White hanging heart T-light holder",
                                             "price": {"amount": 2.55, "currency": "GBP"},
                                             "reason": "popular_in_segment"}
    assert both["u-1842"]["fallback"] is None and both["u-1842"]["cart"] == []
    assert both == {"u-1842": ADA, "u-7": ZOE}
    # Kinds are apart: the same key in another kind is another record.
    assert store.read("traits", "u-7") is None
    store.write_batch("default", {"segment:cart_abandoner:en-GB": {"hero": "winback-10"},
                                  "global:en-GB": {"hero": None}})
    assert store.read_many("default", ["global:en-GB", "segment:cart_abandoner:en-GB"]) == {
        "global:en-GB": {"hero": None}, "segment:cart_abandoner:en-GB": {"hero": "winback-10"}}


def test_read_many_leaves_out_missing_keys_and_takes_duplicates(store):
    store.write_batch("content", {"u-1": {"n": 1}, "u-2": {"n": 2}})

    assert store.read_many("content", ["u-2", "u-404", "u-2", "u-1", "u-1"]) == {"u-1": {"n": 1}, "u-2": {"n": 2}}
    assert store.read_many("content", ["u-404"]) == {}
    assert store.read_many("content", []) == {}
    assert store.read("content", "u-404") is None


def test_read_many_refuses_more_than_1000_keys(store):
    store.write_batch("content", {"u-999": {"n": 999}})
    keys = [f"u-{number}" for number in range(1001)]

    with pytest.raises(ValueError, match="at most 1000 keys, not 1001"):
        store.read_many("content", keys)
    assert store.read_many("content", keys[:1000]) == {"u-999": {"n": 999}}


def test_upsert_overwrites(store):
    store.write_batch("content", {"u-1": {"hero": "old", "products": [1, 2]}, "u-2": {"hero": "kept"}})
    store.write_batch("content", {"u-1": {"hero": "new"}})
    store.write_batch("content", {"u-1": {"hero": "new"}})  # the same batch again: idempotent

    assert store.read_many("content", ["u-1", "u-2"]) == {"u-1": {"hero": "new"}, "u-2": {"hero": "kept"}}
    assert stored(store) == Counter({"g0": 2})


def test_delete_is_idempotent(store):
    store.write_batch("content", {"u-1": {"n": 1}, "u-2": {"n": 2}, "u-3": {"n": 3}})
    store.write_batch("suppression", {"u-1": {"reason": "unsubscribed"}})

    store.delete("content", ["u-1", "u-1", "u-404"])
    store.delete("content", ["u-1", "u-404"])
    store.delete("content", [])
    store.delete("suppression", iter(["u-1", "u-404"]))
    store.delete("suppression", ["u-1"])

    assert store.read_many("content", ["u-1", "u-2", "u-3"]) == {"u-2": {"n": 2}, "u-3": {"n": 3}}
    assert store.read("suppression", "u-1") is None
    assert stored(store) == Counter({"g0": 2})


def test_before_any_swap_writes_and_reads_use_the_initial_generation(store):
    assert store.live_generation() is None
    store.write_batch("content", {"u-1": {"n": 1}})

    assert store.read("content", "u-1") == {"n": 1}
    assert stored(store) == Counter({"g0": 1})
    assert store.live_generation() is None


def test_rebuild_is_invisible_until_the_swap_then_all_visible(store, serving_config):
    store.write_batch("content", {"u-1": {"v": "old-1"}, "u-2": {"v": "old-2"}})
    store.write_batch("default", {"global:en-GB": {"v": "old-default"}})
    store.write_batch("content", {"u-1": {"v": "new-1"}, "u-3": {"v": "new-3"}}, generation="g7-1a2b3c4d")
    store.write_batch("default", {"global:en-GB": {"v": "new-default"}}, generation="g7-1a2b3c4d")
    store.write_batch("traits", {"u-3": {"lifecycle": "new"}}, generation="g7-1a2b3c4d")

    with open_store(serving_config) as reader:  # another connection, as the API has
        assert reader.read_many("content", ["u-1", "u-2", "u-3"]) == {"u-1": {"v": "old-1"}, "u-2": {"v": "old-2"}}
        assert reader.read("default", "global:en-GB") == {"v": "old-default"}
        assert reader.read("traits", "u-3") is None

        store.swap("g7-1a2b3c4d")

        assert reader.live_generation() == "g7-1a2b3c4d"
        assert reader.read_many("content", ["u-1", "u-2", "u-3"]) == {"u-1": {"v": "new-1"}, "u-3": {"v": "new-3"}}
        assert reader.read("default", "global:en-GB") == {"v": "new-default"}
        assert reader.read("traits", "u-3") == {"lifecycle": "new"}
    # The old generation is gone, not merely hidden.
    assert stored(store) == Counter({"g7-1a2b3c4d": 4})
    # Incremental writes now go to the new live generation.
    store.write_batch("content", {"u-4": {"v": "incremental"}})
    store.delete("content", ["u-1"])
    assert store.read_many("content", ["u-1", "u-3", "u-4"]) == {"u-3": {"v": "new-3"}, "u-4": {"v": "incremental"}}
    assert stored(store) == Counter({"g7-1a2b3c4d": 4})


def test_count_is_what_readers_see(store):
    store.write_batch("content", {"u-1": {"v": 1}, "u-2": {"v": 2}, "u-3": {"v": 3}})
    store.write_batch("suppression", {"u-9": {"reason": "unsubscribed"}})
    store.write_batch("content", {"u-1": {"v": "new"}, "u-4": {"v": "new"}}, generation="g8-00aa11bb")
    # The rebuild's two rows are not counted until they are live.
    assert [store.count(kind) for kind in ("content", "suppression", "traits")] == [3, 1, 0]
    store.swap("g8-00aa11bb")
    store.delete("content", ["u-4"])
    assert [store.count(kind) for kind in ("content", "suppression", "traits")] == [1, 1, 0]
    with pytest.raises(ValueError):
        store.count("gossip")


def test_suppression_survives_a_swap_while_the_old_content_goes(store):
    store.write_batch("content", {"u-1": {"hero": "old"}, "u-2": {"hero": "old"}})
    store.write_batch("suppression", {"u-1": {"reason": "unsubscribed", "source": "api"}})
    store.write_batch("suppression", {"u-2": {"reason": "no_email_consent", "source": "publish"}},
                      generation="g5-ignored")  # a generation means nothing to suppression
    store.write_batch("content", {"u-3": {"hero": "new"}}, generation="g1-rebuild")

    store.swap("g1-rebuild")

    assert store.read_many("content", ["u-1", "u-2", "u-3"]) == {"u-3": {"hero": "new"}}
    assert store.read_many("suppression", ["u-1", "u-2", "u-3"]) == {
        "u-1": {"reason": "unsubscribed", "source": "api"},
        "u-2": {"reason": "no_email_consent", "source": "publish"}}
    assert stored(store) == Counter({"g1-rebuild": 1, "-": 2})


def test_a_crashed_rebuild_is_cleaned_at_the_next_swap(store):
    store.write_batch("content", {"u-1": {"v": "initial"}})
    store.write_batch("content", {"u-2": {"v": "crashed"}}, generation="g1-crashed")
    store.write_batch("traits", {"u-2": {"v": "crashed"}}, generation="g1-crashed")
    store.write_batch("content", {"u-3": {"v": "rebuild"}}, generation="g2-rebuild")
    assert stored(store) == Counter({"g0": 1, "g1-crashed": 2, "g2-rebuild": 1})

    store.swap("g2-rebuild")

    assert stored(store) == Counter({"g2-rebuild": 1})
    assert store.read_many("content", ["u-1", "u-2", "u-3"]) == {"u-3": {"v": "rebuild"}}
    # Gone, not hidden: making the crashed generation live shows nothing (and removes g2).
    store.swap("g1-crashed")
    assert store.read_many("content", ["u-1", "u-2", "u-3"]) == {}
    assert store.read("traits", "u-2") is None
    assert stored(store) == Counter()


def test_swapping_to_the_live_generation_again_keeps_it(store):
    store.write_batch("content", {"u-1": {"v": 1}}, generation="g3-a")
    store.swap("g3-a")
    store.swap("g3-a")

    assert store.read("content", "u-1") == {"v": 1}
    assert store.live_generation() == "g3-a"


def test_many_rows_of_an_old_generation_are_all_removed(store, monkeypatch):
    # Small clean-up chunks, so a swap goes round its loop several times.
    monkeypatch.setattr(sqlite_module, "_CLEAN_CHUNK_ROWS", 100)
    monkeypatch.setattr(redis_store_module, "_CLEAN_CHUNK_KEYS", 100)
    store.write_batch("content", {f"u-{number}": {"n": number} for number in range(450)})
    store.write_batch("content", {"u-1": {"n": "new"}}, generation="g1-new")

    store.swap("g1-new")

    assert stored(store) == Counter({"g1-new": 1})
    assert store.read_many("content", ["u-0", "u-1", "u-449"]) == {"u-1": {"n": "new"}}


def test_state_is_written_with_the_batch(store):
    assert store.get_state("exported:gold.email_content") is None
    store.write_batch("content", {"u-1": {"n": 1}}, state={"exported:gold.email_content": "41"})
    assert store.get_state("exported:gold.email_content") == "41"

    store.delete("content", ["u-1"], state={"exported:gold.email_content": "42", "exported:gold.user_traits": "7"})
    assert store.get_state("exported:gold.email_content") == "42"
    assert store.get_state("exported:gold.user_traits") == "7"

    store.write_batch("traits", {}, state={"exported:gold.user_traits": "8"})  # nothing changed but the point
    assert store.get_state("exported:gold.user_traits") == "8"

    # A batch refused before it is written leaves the resume point where it was.
    with pytest.raises(ValueError):
        store.write_batch("content", {"u-2": {"score": float("nan")}}, state={"exported:gold.email_content": "99"})
    assert store.get_state("exported:gold.email_content") == "42"
    assert store.read("content", "u-2") is None

    store.set_state("exported:gold.email_content", "43")
    store.write_batch("content", {"u-5": {"n": 5}}, generation="g9-x")
    store.swap("g9-x")  # state lives outside generations
    assert store.get_state("exported:gold.email_content") == "43"
    assert store.get_state("exported:gold.user_traits") == "8"


def test_read_many_is_one_round_trip(store, store_type, monkeypatch):
    store.write_batch("content", {"u-1": {"n": 1}, "u-2": {"n": 2}})
    store.read_many("content", ["u-1"])  # warm: Redis loads its script on first use
    sent: list[str] = []
    if store_type == "sqlite":
        store._db.set_trace_callback(sent.append)
    elif store_type == "redis":
        original = redis.connection.Connection.send_packed_command

        def send_packed_command(connection, command, check_health=True):
            sent.append("send")
            return original(connection, command, check_health)

        monkeypatch.setattr(redis.connection.Connection, "send_packed_command", send_packed_command)
    else:
        store._client.meta.events.register("before-call.dynamodb", lambda model, **_: sent.append(model.name))

    assert store.read_many("content", ["u-2", "u-3", "u-1"]) == {"u-1": {"n": 1}, "u-2": {"n": 2}}
    # DynamoDB: the live pointer, then the keys (a request of up to 100).
    assert len(sent) == 1 if store_type != "dynamodb" else sent == ["GetItem", "BatchGetItem"]


def test_bad_arguments_are_refused(store):
    with pytest.raises(ValueError, match="unknown record kind 'contents'"):
        store.write_batch("contents", {"u-1": {}})
    with pytest.raises(ValueError, match="bad generation name"):
        store.write_batch("content", {"u-1": {}}, generation="g1:evil*")
    with pytest.raises(ValueError, match="bad generation name"):
        store.swap("")
    with pytest.raises(TypeError, match="not one string"):
        store.read_many("content", "u-1")
    with pytest.raises(TypeError, match="not one string"):
        store.delete("content", "u-1")
    with pytest.raises(TypeError, match="a mapping"):
        store.write_batch("content", {"u-1": ["not", "an", "object"]})
    with pytest.raises(ValueError, match="non-empty string"):
        store.write_batch("content", {"": {"n": 1}})
    assert stored(store) == Counter()


# -- each store's own layout and failures ---------------------------------------------------


def test_sqlite_layout(tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=sqlite",
                                   "serving.sqlite.path=nested/folder/content.db"])
    with open_store(config) as store:
        store.write_batch("content", {"u-1": {"n": 1}}, state={"p": "1"})
        store.write_batch("suppression", {"u-1": {"reason": "unsubscribed"}})
        store.swap("g2-x")
        store.write_batch("content", {"u-2": {"b": [1, {"z": "Zoë", "a": None}], "a": 1.5}})

    with sqlite3.connect(tmp_path / "nested" / "folder" / "content.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        # Bodies as stored: compact, sorted keys, non-ASCII escaped.
        assert db.execute("SELECT kind, generation, key, body FROM records ORDER BY kind").fetchall() == [
            ("content", "g2-x", "u-2", '{"a":1.5,"b":[1,{"a":null,"z":"Zo\\u00eb"}]}'),
            ("suppression", "", "u-1", '{"reason":"unsubscribed"}'),
        ]
        assert db.execute("SELECT name, value FROM meta ORDER BY name").fetchall() == [("live", "g2-x"),
                                                                                        ("state:p", "1")]
        schema = db.execute("SELECT sql FROM sqlite_master WHERE name = 'records'").fetchone()[0]
        assert "UNIQUE (kind, generation, key)" in schema
        plan = db.execute("EXPLAIN QUERY PLAN SELECT body FROM records WHERE kind = 'content' AND generation = 'g2-x' "
                          "AND key IN ('u-1', 'u-2')").fetchall()
        assert "USING INDEX sqlite_autoindex_records_1 (kind=? AND generation=? AND key=?)" in str(plan)


def test_sqlite_reads_while_locked_and_a_long_lock_is_unavailable(tmp_path):
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=sqlite",
                                   "serving.sqlite.busy_timeout_ms=50"])
    with open_store(config) as store:
        store.write_batch("content", {"u-1": {"n": 1}})
        other = sqlite3.connect(config.under_root(config.serving.sqlite.path), isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        try:
            assert store.read("content", "u-1") == {"n": 1}  # WAL: readers do not wait
            with open_store(config) as opened_meanwhile:  # opening an existing store writes nothing
                assert opened_meanwhile.read("content", "u-1") == {"n": 1}
            with pytest.raises(StoreUnavailable, match=r"^SQLite serving store .*content\.db: OperationalError: "
                                                       r"database is locked$"):
                store.write_batch("content", {"u-2": {"n": 2}}, state={"p": "2"})
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert store.read("content", "u-2") is None and store.get_state("p") is None


def test_sqlite_path_that_cannot_be_a_file_is_unavailable(tmp_path):
    (tmp_path / "serving").write_text("a file where the folder should be")
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=sqlite"])
    with pytest.raises(StoreUnavailable, match="^SQLite serving store .*serving/content.db: "):
        open_store(config)


def test_redis_layout(open_another):
    store = open_another("redis")
    prefix = store.config.serving.redis.key_prefix
    store.write_batch("content", {"u-1": {"b": [1, {"z": "Zoë", "a": None}], "a": 1.5}})
    store.write_batch("suppression", {"u-1": {"reason": "unsubscribed"}}, state={"p": "1"})
    store.write_batch("default", {"segment:vip:en-GB": {"hero": "x"}}, generation="g2-x")

    client = redis.Redis.from_url(store.config.serving.redis.url)
    try:
        assert client.get(f"{prefix}:g:g0:content:u-1") == b'{"a":1.5,"b":[1,{"a":null,"z":"Zo\\u00eb"}]}'
        assert client.get(f"{prefix}:suppression:u-1") == b'{"reason":"unsubscribed"}'
        assert client.get(f"{prefix}:state:p") == b"1"
        assert client.get(f"{prefix}:g:g2-x:default:segment:vip:en-GB") == b'{"hero":"x"}'
        assert client.smembers(f"{prefix}:generations") == {b"g0", b"g2-x"}
        assert client.get(f"{prefix}:live") is None
        store.swap("g2-x")
        assert client.get(f"{prefix}:live") == b"g2-x"
        assert client.smembers(f"{prefix}:generations") == {b"g2-x"}
        assert sorted(client.scan_iter(match=f"{prefix}:*")) == sorted([
            f"{prefix}:g:g2-x:default:segment:vip:en-GB".encode(), f"{prefix}:suppression:u-1".encode(),
            f"{prefix}:state:p".encode(), f"{prefix}:live".encode(), f"{prefix}:generations".encode()])
    finally:
        client.close()


def test_redis_clean_up_escapes_glob_characters(open_another):
    unique = str(time.monotonic_ns())
    # Unescaped, the pattern p[ab]*<unique>:g:g0:* would also match pa-<unique>:g:g0:...
    globby = open_another("redis", f"serving.redis.key_prefix=p[ab]*{unique}")
    neighbour = open_another("redis", f"serving.redis.key_prefix=pa-{unique}")
    neighbour.write_batch("content", {"u-1": {"owner": "neighbour"}})
    globby.write_batch("content", {"u-1": {"owner": "globby"}})
    globby.write_batch("content", {"u-2": {"owner": "globby"}}, generation="g1-new")

    globby.swap("g1-new")

    assert neighbour.read("content", "u-1") == {"owner": "neighbour"}
    assert globby.read_many("content", ["u-1", "u-2"]) == {"u-2": {"owner": "globby"}}
    assert stored(neighbour) == Counter({"g0": 1})


def test_redis_write_racing_a_swap_lands_in_the_new_generation(open_another, monkeypatch):
    store = open_another("redis")
    store.write_batch("content", {"u-0": {"n": 0}}, generation="g1-new")
    seen: list[str | None] = []
    build_key = store.record_key

    def record_key(kind, key, generation):
        if not seen:  # between reading the pointer and EXEC, another process swaps
            with open_store(store.config) as other:
                other.swap("g1-new")
        seen.append(generation)
        return build_key(kind, key, generation)

    monkeypatch.setattr(store, "record_key", record_key)
    store.write_batch("content", {"u-1": {"n": 1}})

    assert seen == ["g0", "g1-new"]  # the transaction failed on the WATCHed pointer and ran again
    assert store.read_many("content", ["u-0", "u-1"]) == {"u-0": {"n": 0}, "u-1": {"n": 1}}
    assert stored(store) == Counter({"g1-new": 2})


def test_redis_batch_of_many_commands_is_one_transaction(open_another, monkeypatch):
    monkeypatch.setattr(redis_store_module, "_COMMAND_ROWS", 100)
    store = open_another("redis")
    rows = {f"u-{n:04d}": f'{{"n":{n}}}' for n in range(1234)}  # thirteen MSETs
    admin = redis.Redis.from_url(store.config.serving.redis.url)

    def calls() -> Counter[str]:
        return Counter({name: stats["calls"] for name, stats in admin.info("commandstats").items()})

    before = calls()
    store.write_json("content", rows, generation="g1-big", state={"exported:gold.email_content": "5"})
    made = calls() - before
    admin.close()
    # One MULTI and one EXEC around the SADD, thirteen MSETs of rows and the state's MSET.
    assert (made["cmdstat_multi"], made["cmdstat_exec"], made["cmdstat_mset"], made["cmdstat_sadd"]) == (1, 1, 14, 1)

    assert store.get_state("exported:gold.email_content") == "5"
    assert stored(store) == Counter({"g1-big": 1234})
    store.delete("content", [f"u-{n:04d}" for n in range(0, 1234, 2)], generation="g1-big")
    store.swap("g1-big")
    assert store.read_many("content", ["u-0000", "u-0001", "u-1233"]) == {"u-0001": {"n": 1}, "u-1233": {"n": 1233}}
    assert stored(store) == Counter({"g1-big": 617})


def test_redis_connection_dropped_mid_batch_lands_nothing_then_the_retry_lands_all(open_another, monkeypatch):
    monkeypatch.setattr(redis_store_module, "_COMMAND_ROWS", 100)
    store = open_another("redis")
    store.write_batch("content", {"u-0000": {"n": -1}}, state={"p": "1"})
    admin = redis.Redis.from_url(store.config.serving.redis.url)
    packed: list[bool] = []
    original = redis_store_module.pack_command

    def pack_command(command):
        packed.append(True)
        if len(packed) == 3:  # the SADD and one MSET sent inside MULTI: the server drops the connection
            admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            seen_then.update(rows_seen())
        return original(command)

    def rows_seen() -> dict[str, Any]:
        return store.read_many("content", [f"u-{n:04d}" for n in range(0, 500, 50)])

    seen_then: dict[str, Any] = {}
    monkeypatch.setattr(redis_store_module, "pack_command", pack_command)
    try:
        store.write_batch("content", {f"u-{n:04d}": {"n": n} for n in range(500)}, state={"p": "2"})
    finally:
        admin.close()

    # Killed between MULTI and EXEC: nothing of it was applied; the write ran again on a new connection.
    assert seen_then == {"u-0000": {"n": -1}}
    assert store.get_state("p") == "2"
    assert store.read_many("content", ["u-0000", "u-0499"]) == {"u-0000": {"n": 0}, "u-0499": {"n": 499}}
    assert stored(store) == Counter({"g0": 500})


def test_redis_reply_lost_after_exec_is_not_run_again(open_another, monkeypatch):
    """The transaction may have landed: running it again could undo another client's write
    made meanwhile, so a lost EXEC reply is an error, not a retry."""
    store = open_another("redis")
    exec_sent: list[bool] = []
    send_command, read_response = redis.connection.Connection.send_command, redis.connection.Connection.read_response

    def sending(connection, *args, **options):
        if args[:1] == ("EXEC",):
            exec_sent.append(True)
        return send_command(connection, *args, **options)

    def reading(connection, *args, **options):
        if exec_sent and not getattr(reading, "failed", False):
            reading.failed = True  # type: ignore[attr-defined]
            connection.disconnect()
            raise redis.ConnectionError("the reply was lost")
        return read_response(connection, *args, **options)

    monkeypatch.setattr(redis.connection.Connection, "send_command", sending)
    monkeypatch.setattr(redis.connection.Connection, "read_response", reading)
    with pytest.raises(StoreUnavailable, match="the reply was lost"):
        store.write_batch("content", {"u-1": {"n": 1}}, state={"p": "1"})
    assert exec_sent == [True]


def test_redis_down_is_unavailable_without_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("TAILOR_REDIS_PASSWORD", "pw-never-printed")
    port = free_port()  # nothing listens here
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=redis",
                                   f"serving.redis.url=redis://127.0.0.1:{port}/3",
                                   "serving.redis.socket_timeout_s=0.3"])
    started = time.monotonic()
    with open_store(config) as store:
        calls = [lambda: store.read("content", "u-1"), lambda: store.read_many("suppression", ["u-1"]),
                 lambda: store.write_batch("content", {"u-1": {"n": 1}}, state={"p": "1"}),
                 lambda: store.delete("content", ["u-1"]), lambda: store.swap("g1-x"),
                 lambda: store.live_generation(), lambda: store.get_state("p"), lambda: store.set_state("p", "2")]
        for call in calls:
            with pytest.raises(StoreUnavailable) as caught:
                call()
            message = str(caught.value)
            assert message.startswith(f"Redis serving store at 127.0.0.1:{port}/3: ConnectionError: ")
            assert "pw-never-printed" not in message and "\n" not in message
    assert time.monotonic() - started < 10


def test_dynamodb_layout(open_another):
    store = open_another("dynamodb")
    store.write_batch("content", {"u-1": {"b": [1, {"z": "Zoë", "a": None}], "a": 1.5}})
    store.write_batch("suppression", {"u-1": {"reason": "unsubscribed"}}, state={"p": "1"})
    store.swap("g2-x")
    store.write_batch("traits", {"u-1": {"lifecycle": "active"}})

    items = sorted(_scan(store.config), key=lambda item: item["pk"]["S"])
    assert items == [
        {"pk": {"S": "g:g2-x:traits:u-1"}, "body": {"S": '{"lifecycle":"active"}'}, "generation": {"S": "g2-x"}},
        {"pk": {"S": "live"}, "value": {"S": "g2-x"}},
        {"pk": {"S": "state:p"}, "value": {"S": "1"}},
        {"pk": {"S": "suppression:u-1"}, "body": {"S": '{"reason":"unsubscribed"}'}},
    ]
    store.write_batch("content", {"u-3": {"b": [1, {"z": "Zoë", "a": None}], "a": 1.5}})
    item = _dynamodb(store.config).get_item(TableName=store.config.serving.dynamodb.table,
                                            Key={"pk": {"S": "g:g2-x:content:u-3"}})["Item"]
    assert item["body"]["S"] == '{"a":1.5,"b":[1,{"a":null,"z":"Zo\\u00eb"}]}'
    table = _dynamodb(store.config).describe_table(TableName=store.config.serving.dynamodb.table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"


class Throttled:
    """The real client, except that its next `failures` BatchWriteItem / BatchGetItem calls
    do only the first half of the request and hand the rest back unprocessed, as
    DynamoDB does when it throttles (moto never does). Records each call's size."""

    def __init__(self, client, failures: int) -> None:
        self._client, self.failures = client, failures
        self.write_calls: list[int] = []
        self.get_calls: list[int] = []

    def __getattr__(self, name):
        return getattr(self._client, name)

    def batch_write_item(self, RequestItems, **kwargs):  # noqa: N803 (boto3's argument name)
        ((table, requests),) = RequestItems.items()
        self.write_calls.append(len(requests))
        if self.failures <= 0:
            return self._client.batch_write_item(RequestItems=RequestItems, **kwargs)
        self.failures -= 1
        half = len(requests) // 2
        response = self._client.batch_write_item(RequestItems={table: requests[:half]}, **kwargs)
        return {**response, "UnprocessedItems": {table: requests[half:]}}

    def batch_get_item(self, RequestItems, **kwargs):  # noqa: N803
        ((table, request),) = RequestItems.items()
        self.get_calls.append(len(request["Keys"]))
        if self.failures <= 0:
            return self._client.batch_get_item(RequestItems=RequestItems, **kwargs)
        self.failures -= 1
        half = len(request["Keys"]) // 2
        response = self._client.batch_get_item(RequestItems={table: {**request, "Keys": request["Keys"][:half]}},
                                               **kwargs)
        return {**response, "UnprocessedKeys": {table: {**request, "Keys": request["Keys"][half:]}}}


def test_dynamodb_retries_unprocessed_items(open_another):
    store = open_another("dynamodb")
    store.backoff_base_s = 0.001
    throttled = store._client = Throttled(store._client, failures=1)
    rows = {f"u-{number:02d}": {"n": number} for number in range(30)}

    store.write_batch("content", rows, state={"p": "30"})

    # 30 rows: a chunk of 25 (12 written, 13 handed back and sent again), then 5; then the state.
    assert throttled.write_calls == [25, 13, 5, 1]
    assert store.read_many("content", list(rows)) == rows
    assert store.get_state("p") == "30"


def test_dynamodb_retries_unprocessed_keys(open_another):
    store = open_another("dynamodb")
    store.backoff_base_s = 0.001
    rows = {f"u-{number:03d}": {"n": number} for number in range(120)}
    store.write_batch("content", rows)
    throttled = store._client = Throttled(store._client, failures=1)

    assert store.read_many("content", list(rows)) == rows
    # 120 keys: a chunk of 100 (50 read, 50 handed back and asked again), then 20.
    assert throttled.get_calls == [100, 50, 20]


def test_dynamodb_gives_up_after_max_retries(open_another):
    store = open_another("dynamodb", "serving.dynamodb.max_retries=2")
    store.backoff_base_s = 0.001
    throttled = store._client = Throttled(store._client, failures=100)

    with pytest.raises(StoreUnavailable, match=r"4 items still unprocessed after 2 retries"):
        store.write_batch("content", {f"u-{number:02d}": {"n": number} for number in range(30)}, state={"p": "1"})
    assert throttled.write_calls == [25, 13, 7]
    assert store.get_state("p") is None  # the resume point never runs ahead of the data


def test_dynamodb_missing_table_is_unavailable(open_another):
    store = open_another("dynamodb", "serving.dynamodb.create_table=false", "serving.dynamodb.table=no-such-table")
    with pytest.raises(StoreUnavailable, match=r"^DynamoDB table no-such-table not found in eu-west-1 .*create_table"):
        store.read("content", "u-1")


def test_dynamodb_unreachable_is_unavailable(tmp_path):
    port = free_port()  # nothing listens here
    overrides = [f"storage.root={tmp_path}", "serving.type=dynamodb",
                 f"serving.dynamodb.endpoint_url=http://127.0.0.1:{port}"]
    quick = BotoConfig(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1})
    started = time.monotonic()
    store = DynamoDbStore(load_config("local", overrides), client_config=quick)
    for call in (lambda: store.read("content", "u-1"), lambda: store.write_batch("content", {"u-1": {"n": 1}}),
                 lambda: store.swap("g1-x"), lambda: store.get_state("p")):
        with pytest.raises(StoreUnavailable, match=r"^DynamoDB \w+ on table tailor_content \(eu-west-1\): "
                                                   r"EndpointConnectionError: "):
            call()
    store.close()
    with pytest.raises(StoreUnavailable, match="EndpointConnectionError"):
        DynamoDbStore(load_config("local", [*overrides, "serving.dynamodb.create_table=true"]), client_config=quick)
    assert time.monotonic() - started < 20


def test_a_missing_client_library_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # as if redis were not installed
    monkeypatch.delitem(sys.modules, "pipelines.serving.redis_store")
    config = load_config("local", [f"storage.root={tmp_path}", "serving.type=redis"])
    with pytest.raises(ConfigError, match=r"^serving.type: redis needs the 'redis' package, which is not installed "
                                          r"\(pip install redis\)$"):
        open_store(config)
    monkeypatch.setitem(sys.modules, "redis", redis)
    monkeypatch.setitem(sys.modules, "hiredis", None)  # redis is there, its C packer not
    with pytest.raises(ConfigError, match=r"^serving.type: redis needs the 'hiredis' package, which is not installed "
                                          r"\(pip install hiredis\)$"):
        open_store(config)
