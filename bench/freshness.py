"""Benchmark: how long after an event is produced to Kafka it is visible downstream.

    .venv/bin/python bench/freshness.py [--rate 10] [--warm-up 90] [--seconds 180]

Starts the local Kafka broker and, in one Spark session, the three streaming jobs with a
1 s trigger: ingest (Kafka -> bronze.events), merge_profiles (-> silver.profiles) and
build_features (-> gold.user_features). A producer sends, at a steady --rate per second,
a CRM create of a new customer (to the CRM topic) and a page view by another new user (to
the events topic), noting when each was sent. After --warm-up seconds (cold batches, not
counted) it measures for --seconds, then waits for the stragglers. A row's visibility is
the commit that first added a data file holding it, read from the table's Delta log once
every query is idle, so nothing reads the tables while they are measured. Reported: p50
and p95 of (commit time - produce time) per table; goal: silver.profiles p95 <= 2 s on 2
cores. The baseline beside each is the same figure for bronze.events in the same run (the
ingest leg every row goes through first). A row that never arrives fails the run. Results
in bench/results/freshness.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import result, workspace, write  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.runtime.session import build_spark  # noqa: E402
from tests.profile_events import crm, event, person  # noqa: E402

TRIGGER = "1 second"
GOAL_SECONDS = 2.0
COMMIT_FILE = re.compile(r"\d{20}\.json")


def crm_create(number: int, at: datetime) -> dict:
    iso = at.isoformat().replace("+00:00", "Z")
    return crm("c", 1_000_000 + number, iso, after=person(f"fresh-crm-{number}", email=f"fresh{number}@example.com",
                                                             first_name="Fresh", country="GB", locale="en-GB"))


def page_view(number: int, at: datetime) -> dict:
    return event("page_view", f"fresh-web-{number}", at.isoformat().replace("+00:00", "Z"),
                 {"url": "https://shop.example/", "session_id": f"s-{number}"}, f"fresh-view-{number}", source="web")


class Producer(threading.Thread):
    """Sends one CRM create and one page view every 1/rate seconds until stopped; records
    each user's send time (epoch seconds)."""

    def __init__(self, bootstrap: str, events_topic: str, crm_topic: str, rate: float):
        super().__init__(daemon=True)
        self.bootstrap, self.events_topic, self.crm_topic, self.rate = bootstrap, events_topic, crm_topic, rate
        self.sent: dict[str, float] = {}
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        try:
            started, number = time.monotonic(), 0
            while not self.stopping.is_set():
                delay = started + number / self.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now = datetime.now(UTC)
                producer.send(self.crm_topic, json.dumps(crm_create(number, now)).encode())
                producer.send(self.events_topic, json.dumps(page_view(number, now)).encode())
                self.sent[f"fresh-crm-{number}"] = self.sent[f"fresh-web-{number}"] = now.timestamp()
                number += 1
            producer.flush()
        except BaseException as error:  # reported by the main thread
            self.error = error
        finally:
            producer.close()


def first_visible(spark, table_path: str, prefix: str) -> dict[str, float]:
    """user_id -> commit time (epoch seconds) of the first commit adding a data file that
    holds the user, from the table's Delta log."""
    from pyspark.sql import functions as F

    added: dict[str, float] = {}  # data file name (unique per table) -> commit time
    files: list[str] = []
    for commit in sorted(Path(table_path, "_delta_log").glob("*.json")):
        if not COMMIT_FILE.fullmatch(commit.name):
            continue  # checksums, compacted logs
        actions = [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        stamp = next(a["commitInfo"]["timestamp"] for a in actions if "commitInfo" in a) / 1000
        for action in actions:
            path = action.get("add", {}).get("path", "")
            if path.endswith(".parquet"):
                name = unquote(path).rsplit("/", 1)[-1]
                if name not in added:
                    added[name] = stamp
                    files.append(str(Path(table_path, unquote(path))))
    if not files:
        return {}
    rows = (spark.read.parquet(*files).where(F.col("user_id").startswith(prefix))
            .select("user_id", F.input_file_name().alias("file")).collect())
    seen: dict[str, float] = {}
    for row in rows:
        stamp = added[unquote(urlsplit(row.file).path).rsplit("/", 1)[-1]]
        seen[row.user_id] = min(stamp, seen.get(row.user_id, stamp))
    return seen


def _all_idle(queries) -> bool:
    return all(not query.status["isTriggerActive"] and not query.status["isDataAvailable"] for query in queries)


def _median_batch_seconds(query, since: float) -> float | None:
    """The median wall time of the query's batches that started after `since` (epoch s)."""
    durations = [progress.durationMs["triggerExecution"] / 1000 for progress in query.recentProgress
                 if datetime.fromisoformat(progress.timestamp.replace("Z", "+00:00")).timestamp() >= since
                 and progress.numInputRows > 0]
    return round(statistics.median(durations), 2) if durations else None


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=10.0, help="new customers and page views per second")
    parser.add_argument("--warm-up", type=float, default=90.0, help="not counted: several of the slowest batches")
    parser.add_argument("--seconds", type=float, default=180.0, help="measured: about five of the slowest batches here")
    parser.add_argument("--grace", type=float, default=300.0, help="longest wait for the queries to go idle")
    parser.add_argument("--set", action="append", default=[], help="config override, as for tailor")
    args = parser.parse_args()

    from jobs import build_features, ingest_events, merge_profiles
    from pipelines.features.writes import ensure_feature_tables, load_feature_rules
    from pipelines.ingest.writes import ensure_bronze_tables
    from pipelines.pii import load_keys
    from pipelines.profiles.writes import ensure_profile_tables
    from pipelines.services.kafka_broker import KafkaBroker, free_port

    root = workspace("freshness")
    shutil.rmtree(root, ignore_errors=True)
    broker = KafkaBroker(home=root / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    queries = []
    try:
        events_topic, crm_topic = "fresh.events", "fresh.crm"
        broker.create_topics([events_topic, crm_topic], partitions=2)
        config = load_config("local", [f"storage.root={root}", "source.type=kafka",
                                       f"source.kafka.bootstrap_servers={broker.bootstrap_servers}",
                                       f"source.kafka.events_topic={events_topic}",
                                       f"source.kafka.crm_topic={crm_topic}", *args.set])
        spark = build_spark(config, "bench-freshness")
        spark.sparkContext.setLogLevel("ERROR")
        keys, rules = load_keys(config), load_feature_rules(config)
        ensure_bronze_tables(spark, config)
        ensure_profile_tables(spark, config)
        ensure_feature_tables(spark, config)
        queries = [ingest_events.start_query(spark, config, False, TRIGGER),
                   merge_profiles.start_query(spark, config, keys, False, TRIGGER),
                   build_features.start_query(spark, config, keys, rules, False, TRIGGER)]
        producer = Producer(broker.bootstrap_servers, events_topic, crm_topic, args.rate)
        producer.start()
        time.sleep(args.warm_up)
        measured_from = time.time()
        time.sleep(args.seconds)
        producer.stopping.set()
        producer.join()
        if producer.error:
            raise producer.error
        measured = {user: at for user, at in producer.sent.items() if at >= measured_from}
        # Wait, without reading any table, until every query has had two idle looks in a row
        # (ingest first drains Kafka, then the other two drain bronze).
        deadline, idle_looks = time.monotonic() + args.grace, 0
        while idle_looks < 2 and time.monotonic() < deadline:
            for query in queries:
                if query.exception():
                    raise RuntimeError(f"{query.name} failed: {query.exception()}")
            idle_looks = idle_looks + 1 if _all_idle(queries) else 0
            time.sleep(3)
        batch_seconds = {query.name: _median_batch_seconds(query, measured_from) for query in queries}
    finally:
        for query in queries:
            query.stop()
        broker.stop()

    tables = {"bronze.events": ("fresh-", config.table("bronze.events").path),
              "silver.profiles": ("fresh-crm-", config.table("silver.profiles").path),
              "gold.user_features": ("fresh-web-", config.table("gold.user_features").path)}
    lags: dict[str, list[float]] = {}
    for name, (prefix, path) in tables.items():
        seen = first_visible(spark, path, prefix)
        expected = [user for user in measured if user.startswith(prefix)]
        missing = [user for user in expected if user not in seen]
        if missing or not expected:
            raise SystemExit(f"{len(missing)} of the {len(expected)} measured rows did not reach {name} "
                             f"within --grace {args.grace:.0f} s")
        lags[name] = [seen[user] - measured[user] for user in expected]
        print(f"{name}: {len(expected)} rows; p50 {statistics.median(lags[name]):.2f} s, "
              f"p95 {percentile(lags[name], 0.95):.2f} s")
    bronze_p50, bronze_p95 = statistics.median(lags["bronze.events"]), percentile(lags["bronze.events"], 0.95)
    results = []
    for name in ("silver.profiles", "gold.user_features"):
        p50, p95 = statistics.median(lags[name]), percentile(lags[name], 0.95)
        goal = (f"p95 ≤ {GOAL_SECONDS:.0f} s on 2 cores (baseline: bronze.events' p95, the ingest leg)"
                if name == "silver.profiles" else "for information (baseline: bronze.events' p95)")
        met = {"met": p95 <= GOAL_SECONDS} if name == "silver.profiles" else {}
        results.append(result(f"freshness.{name}.p95", p95, bronze_p95, "seconds", goal, higher_is_better=False,
                              rows=len(lags[name]), **met))
        results.append(result(f"freshness.{name}.p50", p50, bronze_p50, "seconds",
                              "for information (baseline: bronze.events' p50)", higher_is_better=False))
    print(f"median batch time of each query while measured (s): {batch_seconds}")
    path = write("freshness", results, rate_per_second=args.rate, trigger=TRIGGER, warm_up_seconds=args.warm_up,
                 measured_seconds=args.seconds, median_batch_seconds=batch_seconds)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
