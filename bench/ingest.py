"""Benchmark: `tailor ingest --once` through the files source and through the local Kafka
broker, against Spark's own ceiling, `spark.read.json` of the same events written to Delta.

    .venv/bin/python bench/ingest.py [--users 10000] [--set key=value ...]

One synthetic world (10,000 users: 1,066,825 events of the generator's mix, 319 MB, with faults) is
written three ways: one large JSON-lines file, files of about 1 MB, and records on a Kafka
topic (produced before timing starts). Every path, the baseline included, runs twice in the
same Spark session, each time into a fresh storage root: the first run (cold: the JVM
compiles the plan's code as it goes) is reported beside the second (warm), which is the
one compared. The baseline reads the large file with the envelope schema given (no
inference pass) and appends it to a Delta table partitioned by event date, as bronze is.
Results are events per second, and their ratio to the baseline's, in
bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import result, workspace, write  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.runtime.session import build_spark  # noqa: E402
from pipelines.synthetic.generator import Faults, WorldSpec, generate_world  # noqa: E402

ROOT = workspace("ingest")
GOAL = "≥ 0.7x spark.read.json → Delta (the ingest issue's first step: 0.5x)"
ENVELOPE_DDL = ("event_id string, event_type string, schema_version int, user_id string, occurred_at string, "
                "source string, payload string")


def _write_files(folder: Path, lines: list[str], target_bytes: int | None) -> int:
    """JSON-lines files of about `target_bytes` each (None: one file); returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    files, current, size = 0, [], 0
    for line in lines:
        current.append(line)
        size += len(line) + 1
        if target_bytes and size >= target_bytes:
            (folder / f"events-{files:05d}.jsonl").write_text("\n".join(current) + "\n", encoding="utf-8")
            files, current, size = files + 1, [], 0
    if current:
        (folder / f"events-{files:05d}.jsonl").write_text("\n".join(current) + "\n", encoding="utf-8")
        files += 1
    return files


def _baseline(spark, landing: Path, target: Path) -> float:
    from pyspark.sql import functions as F

    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    frame = (spark.read.schema(ENVELOPE_DDL).json(str(landing))
             .withColumn("occurred_at", F.try_to_timestamp("occurred_at"))
             .withColumn("event_date", F.to_date("occurred_at")))
    frame.write.format("delta").partitionBy("event_date").mode("append").save(str(target))
    return time.perf_counter() - started


def _ingest(root: Path, overrides: list[str]) -> tuple[float, int]:
    from jobs.ingest_events import run
    from pipelines.runtime.delta_tables import read_table

    config = load_config("local", [f"storage.root={root}", *overrides])
    started = time.perf_counter()
    assert run(config, once=True) == 0
    seconds = time.perf_counter() - started
    spark = build_spark(config)
    landed = (read_table(spark, config.table("bronze.events")).count()
              + read_table(spark, config.table("bronze.quarantine")).count())
    return seconds, landed


def _cold_then_warm(name: str, overrides: list[str], cold_run: bool = True) -> tuple[float, float, int]:
    """(cold seconds, warm seconds, records landed by the warm run); without `cold_run`
    the one run is reported as both."""
    cold = _ingest(ROOT / f"{name}-cold", overrides)[0] if cold_run else None
    warm, landed = _ingest(ROOT / name, overrides)
    return warm if cold is None else cold, warm, landed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10000)
    parser.add_argument("--skip-kafka", action="store_true", help="measure the files paths only")
    parser.add_argument("--no-cold", action="store_true", help="one run per path, no cold run first (smoke runs)")
    parser.add_argument("--set", action="append", default=[], help="config override, as for tailor")
    args = parser.parse_args()

    shutil.rmtree(ROOT, ignore_errors=True)
    world = generate_world(WorldSpec(seed=7, users=args.users, products=2000, days=28,
                                     faults=Faults.parse("all=0.002")))
    lines = world.events
    events = len(lines)
    large, small = ROOT / "landing-large", ROOT / "landing-small"
    _write_files(large, lines, None)
    small_files = _write_files(small, lines, 1024 * 1024)
    megabytes = sum(path.stat().st_size for path in large.iterdir()) / 1e6
    print(f"{events} events, {megabytes:.0f} MB: one file, and {small_files} files of about 1 MB")

    config = load_config("local", [f"storage.root={ROOT}/baseline", *args.set])
    spark = build_spark(config, "bench-ingest")
    baseline_cold_s = 0.0 if args.no_cold else _baseline(spark, large, ROOT / "baseline-cold")
    baseline_s = _baseline(spark, large, ROOT / "baseline")
    baseline_eps = events / baseline_s
    print(f"baseline spark.read.json -> Delta: {baseline_s:.1f}s warm ({baseline_cold_s:.1f}s cold), "
          f"{baseline_eps:,.0f} events/s")

    results = []
    measured: dict[str, float] = {}
    for name, landing in (("files_one_large", large), ("files_many_small", small)):
        cold, seconds, landed = _cold_then_warm(name, [f"source.files.path={landing}", *args.set],
                                                not args.no_cold)
        measured[name] = events / seconds
        print(f"ingest {name}: {seconds:.1f}s warm ({cold:.1f}s cold), {measured[name]:,.0f} events/s "
              f"({measured[name] / baseline_eps:.2f}x); landed {landed} (+ duplicates dropped)")
        results.append(result(f"ingest.{name}", measured[name], baseline_eps, "events/s",
                              GOAL, goal_ratio=0.7,
                              seconds=round(seconds, 1), cold_seconds=round(cold, 1), events=events))
    results.append(result("ingest.one_large_vs_many_small", measured["files_one_large"], measured["files_many_small"],
                          "events/s", "≥ 1.0x: a large file no slower per event than small ones", goal_ratio=1.0))

    if not args.skip_kafka:
        from pipelines.services.kafka_broker import KafkaBroker, free_port
        from pipelines.synthetic.producers import produce_to_kafka

        broker = KafkaBroker(home=ROOT / "kafka", port=free_port(), controller_port=free_port())
        broker.start()
        try:
            topic = "bench.events"
            broker.create_topics([topic, "bench.crm"], partitions=2)
            produce_to_kafka(broker.bootstrap_servers, topic, ((None, line) for line in lines))
            overrides = ["source.type=kafka", f"source.kafka.bootstrap_servers={broker.bootstrap_servers}",
                         f"source.kafka.events_topic={topic}", "source.kafka.crm_topic=bench.crm", *args.set]
            cold, seconds, landed = _cold_then_warm("kafka", overrides, not args.no_cold)
            kafka_eps = events / seconds
            print(f"ingest kafka: {seconds:.1f}s warm ({cold:.1f}s cold), {kafka_eps:,.0f} events/s "
                  f"({kafka_eps / baseline_eps:.2f}x); landed {landed}")
            results.append(result("ingest.kafka", kafka_eps, baseline_eps, "events/s",
                                  GOAL, goal_ratio=0.7,
                                  seconds=round(seconds, 1), cold_seconds=round(cold, 1), events=events))
        finally:
            broker.stop()
    path = write("ingest", results, events=events, megabytes=round(megabytes), baseline_seconds=round(baseline_s, 1),
                 baseline_cold_seconds=round(baseline_cold_s, 1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
