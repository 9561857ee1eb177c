"""Benchmark: writing content rows through the serving stores, against each store's own
ceiling on the same machine.

    .venv/bin/python bench/export.py [--rows 200000] [--batch 5000] [--skip-redis]

Builds N content rows shaped like DESIGN.md's (four products, a hero, a greeting; about
1 KB of JSON each, from a fixed seed), then, in the same run:
  - sqlite: SqliteStore.write_json (the export's path: rows arrive as JSON text from
    Spark) in batches of --batch rows into a fresh file, against a bare sqlite3
    executemany of the same text in one transaction into a plain table (key TEXT, body
    TEXT), with the same WAL and synchronous=NORMAL settings; for information also
    write_batch of dicts against executemany of json.dumps'd rows.
  - redis: RedisStore.write_json in batches of --batch rows, against
    `redis-benchmark -P 16 -t set -n N -d <mean row bytes> -q` (Debian's redis-tools),
    both against a redis-server this script starts on a free loopback port, without
    persistence, emptied between the runs. That command overwrites one key N times; the
    same with `-r N` (N distinct keys, as the export writes) is a second baseline. The
    server's CPU seconds (INFO cpu) are kept beside each: writing N distinct rows costs
    the server about twice what overwriting one key does, which bounds any client's ratio
    against the first baseline.
Rows per second and their ratio to the baseline's; results in bench/results/export.json.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import result, workspace, write  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.services.redis_server import RedisServer  # noqa: E402
from pipelines.serving.base import encode  # noqa: E402
from pipelines.serving.redis_store import RedisStore  # noqa: E402
from pipelines.serving.sqlite import SqliteStore  # noqa: E402

ROOT = workspace("export")
GOAL = "≥ 0.5x the store's own bulk write"
WORDS = ("regency", "cakestand", "tier", "heart", "holder", "lantern", "vintage", "doormat", "union", "jack",
         "glass", "jar", "pink", "spotty", "bag", "alarm", "clock", "bakelike", "ceramic", "wooden", "frame")
SEGMENTS = ("cart_abandoner", "vip", "lapsed", "new", "browser", "loyal")
REASONS = ("buy_again", "because_you_viewed", "because_you_bought", "bought_together", "popular_in_segment")


def content_rows(count: int, seed: int = 7) -> dict[str, dict[str, Any]]:
    """`count` content rows as the publish job writes them, keyed by user id, in no
    particular key order (as Spark hands them over)."""
    rng = random.Random(seed)
    numbers = list(range(count))
    rng.shuffle(numbers)
    rows = {}
    for number in numbers:
        user_id = f"u-{number:07d}"
        name = rng.choice(("Ada", "Zoë", "Grace", "Jürgen", "Amélie", "Kenji", None))
        products = []
        for _ in range(4):
            product_id = str(rng.randrange(10000, 99999))
            products.append({
                "product_id": product_id,
                "title": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5))).capitalize(),
                "price": {"amount": round(rng.uniform(0.5, 120), 2), "currency": "GBP"},
                "image_url": f"https://cdn.example.com/p/{product_id}.jpg",
                "url": f"https://shop.example.com/p/{product_id}",
                "reason": rng.choice(REASONS)})
        rows[user_id] = {
            "user_id": user_id, "content_version": "2026-11-27T08:00:00Z/42", "generated_at": "2026-11-27T08:03:11Z",
            "model": {"name": "recs-als", "version": "7"}, "fallback": None, "locale": "en-GB",
            "greeting": {"first_name": name, "text": f"Hi {name}" if name else "Hi there"},
            "segment": rng.choice(SEGMENTS), "send_hour_utc": rng.randrange(24),
            "hero": {"offer_id": "winback-10", "headline": "10% off your next order",
                     "url": "https://shop.example.com/offers/winback-10"},
            "products": products, "cart": []}
    return rows


def _batches(rows: dict[str, dict[str, Any]], size: int) -> list[dict[str, dict[str, Any]]]:
    keys = list(rows)
    return [{key: rows[key] for key in keys[start:start + size]} for start in range(0, len(keys), size)]


def _bare_sqlite(path: Path, pairs: list[tuple[str, str]] | None, rows: dict[str, dict[str, Any]]) -> float:
    """executemany into a plain table in one transaction; `pairs` None: json.dumps inside the timing."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("CREATE TABLE plain (key TEXT, body TEXT)")
    started = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO plain VALUES (?, ?)",
                   pairs if pairs is not None else [(key, json.dumps(row)) for key, row in rows.items()])
    db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds


def bench_sqlite(rows: dict[str, dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    count = len(rows)
    folder = ROOT / "sqlite"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = load_config("local", [f"storage.root={folder}", "serving.type=sqlite", "serving.sqlite.path=store.db"])
    batches = _batches(rows, batch)
    with SqliteStore(config) as store:
        started = time.perf_counter()
        for part in batches:
            store.write_batch("content", part, generation="g1-bench")
        store_s = time.perf_counter() - started
        store.swap("g1-bench")
        sample = list(rows)[:: max(1, count // 500)]
        assert store.read_many("content", sample) == {key: rows[key] for key in sample}, "rows did not round-trip"
    # What tailor publish's export does: the rows arrive as JSON text from Spark's to_json.
    encoded_batches = [{key: json.dumps(row) for key, row in part.items()} for part in batches]
    json_config = load_config("local", [f"storage.root={folder}", "serving.type=sqlite",
                                        "serving.sqlite.path=store-json.db"])
    with SqliteStore(json_config) as store:
        started = time.perf_counter()
        for encoded_part in encoded_batches:
            store.write_json("content", encoded_part, generation="g1-bench")
        json_s = time.perf_counter() - started
    bare_s = _bare_sqlite(folder / "bare.db", None, rows)
    encoded = [(key, json.dumps(row)) for key, row in rows.items()]
    bare_encoded_s = _bare_sqlite(folder / "bare-encoded.db", encoded, rows)
    print(f"sqlite: write_json (the export's path) {count / json_s:,.0f} rows/s ({json_s:.1f}s); bare executemany "
          f"of the same JSON text {count / bare_encoded_s:,.0f} rows/s ({bare_encoded_s:.1f}s); write_batch of "
          f"dicts {count / store_s:,.0f} rows/s ({store_s:.1f}s); bare executemany with json.dumps "
          f"{count / bare_s:,.0f} rows/s ({bare_s:.1f}s)")
    return [
        result("export.sqlite_write_json", count / json_s, count / bare_encoded_s, "rows/s",
               f"{GOAL} (sqlite3 executemany of the same JSON text into a plain table, one transaction)",
               goal_ratio=0.5, seconds=round(json_s, 2), baseline_seconds=round(bare_encoded_s, 2)),
        result("export.sqlite_write_batch", count / store_s, count / bare_s, "rows/s",
               "for information: dicts encoded by the store, against executemany of json.dumps'd rows",
               seconds=round(store_s, 2), baseline_seconds=round(bare_s, 2)),
    ]


def _server_cpu_s(client: Any) -> float:
    """CPU seconds the redis-server has used so far (INFO cpu)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def bench_redis(rows: dict[str, dict[str, Any]], batch: int) -> list[dict[str, Any]]:
    import redis

    if not shutil.which("redis-server") or not shutil.which("redis-benchmark"):
        raise SystemExit("redis-server and redis-benchmark are needed: make setup installs them")
    count = len(rows)
    row_bytes = round(sum(len(encode(row)) for row in rows.values()) / count)
    folder = ROOT / "redis"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    server = RedisServer(folder).start()
    port, url = server.port, server.url
    admin = redis.Redis.from_url(url)
    try:
        config = load_config("local", [f"storage.root={folder}", "serving.type=redis", f"serving.redis.url={url}",
                                       "serving.redis.key_prefix=bench", "serving.redis.socket_timeout_s=30"])
        batches = _batches(rows, batch)
        # What tailor publish's export does: the rows arrive as JSON text from Spark's to_json.
        encoded_batches = [{key: json.dumps(row) for key, row in part.items()} for part in batches]
        with RedisStore(config) as store:
            cpu_before = _server_cpu_s(admin)
            started = time.perf_counter()
            for encoded_part in encoded_batches:
                store.write_json("content", encoded_part, generation="g1-bench")
            store_s = time.perf_counter() - started
            store_cpu_s = _server_cpu_s(admin) - cpu_before
        stored = admin.dbsize()
        admin.flushall()

        def redis_benchmark(*extra: str) -> tuple[list[str], float, float, int]:
            # At least 20,000 SETs: redis-benchmark reports a rate of "inf" when a run ends within its
            # millisecond clock, as a smoke-sized run of a few hundred does.
            command = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-P", "16", "-t", "set", "-n",
                       str(max(count, 20_000)), "-d", str(row_bytes), "-q", *extra]
            cpu_before = _server_cpu_s(admin)
            output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
            cpu_s = _server_cpu_s(admin) - cpu_before
            keys = admin.dbsize()
            admin.flushall()
            # -q prints progress with carriage returns, then "SET: 123456.79 requests per second, p50=..."
            match = re.findall(r"SET: ([0-9.]+) requests per second", output.replace("\r", "\n"))
            if not match:
                raise SystemExit(f"could not read redis-benchmark's output: {output[-300:]!r}")
            return command, float(match[-1]), cpu_s, keys

        command, baseline, baseline_cpu_s, baseline_keys = redis_benchmark()
        # Without -r every SET overwrites one key; -r N spreads them over N keys, as the
        # export's rows are: the server then allocates and indexes each row, as for the export.
        spread_command, spread, spread_cpu_s, spread_keys = redis_benchmark("-r", str(count))
        # For information: one client, as the export is (redis-benchmark's default is 50).
        one_client_command, one_client, _, _ = redis_benchmark("-c", "1")
    finally:
        admin.close()
        server.stop()
    print(f"redis: write_json {count / store_s:,.0f} rows/s ({store_s:.1f}s, {stored} keys, server CPU "
          f"{store_cpu_s:.2f}s); redis-benchmark -P 16 -d {row_bytes}: {baseline:,.0f} SETs/s ({baseline_keys} key, "
          f"server CPU {baseline_cpu_s:.2f}s); with -r {count}: {spread:,.0f} SETs/s ({spread_keys} keys, server CPU "
          f"{spread_cpu_s:.2f}s); with one client (-c 1): {one_client:,.0f} SETs/s")

    def shown(full: list[str]) -> str:
        return " ".join(full[:1] + full[5:])

    return [result("export.redis_write_json", count / store_s, baseline, "rows/s",
                   f"{GOAL} (redis-benchmark -P 16 -t set -d <row bytes>, 50 clients)", goal_ratio=0.5,
                   seconds=round(store_s, 2), row_bytes=row_bytes, baseline_command=shown(command),
                   server_cpu_s=round(store_cpu_s, 2), baseline_server_cpu_s=round(baseline_cpu_s, 2),
                   baseline_keys=baseline_keys),
            result("export.redis_write_json_vs_distinct_keys", count / store_s, spread, "rows/s",
                   f"{GOAL} (the same redis-benchmark with -r <rows>: SETs spread over as many keys as the "
                   "export writes, where the one above overwrites one key); for information, the goal "
                   "names the one above",
                   seconds=round(store_s, 2), baseline_command=shown(spread_command),
                   server_cpu_s=round(store_cpu_s, 2), baseline_server_cpu_s=round(spread_cpu_s, 2),
                   baseline_keys=spread_keys),
            result("export.redis_write_json_vs_one_client", count / store_s, one_client, "rows/s",
                   "for information: the same with one redis-benchmark client, as the export has one connection",
                   seconds=round(store_s, 2), baseline_command=shown(one_client_command))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--skip-redis", action="store_true")
    args = parser.parse_args()

    rows = content_rows(args.rows)
    started = time.perf_counter()
    row_bytes = sum(len(encode(row)) for row in rows.values()) / len(rows)
    encode_rate = len(rows) / (time.perf_counter() - started)
    print(f"{len(rows)} content rows, {row_bytes:.0f} bytes of JSON each on average; encoding them alone "
          f"(the stores' compact sorted JSON): {encode_rate:,.0f} rows/s")
    results = bench_sqlite(rows, args.batch)
    if not args.skip_redis:
        results += bench_redis(rows, args.batch)
    path = write("export", results, rows=len(rows), batch_rows=args.batch, row_bytes=round(row_bytes),
                 json_encode_only_rows_per_s=round(encode_rate))
    print(f"results: {path}")
    shutil.rmtree(ROOT, ignore_errors=True)  # a gigabyte of store files, of no use once measured


if __name__ == "__main__":
    main()
