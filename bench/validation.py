"""Benchmark: contract validation as Spark expressions vs a Python UDF per record.

    .venv/bin/python bench/validation.py [--events 60000] [--repeat 5] [--warm-up-seconds 60] [--batch-events 5000]

Both sides validate the same generated events (with faults) in the same Spark session and
report the error code of each; the result is the ratio of the UDF's time to the
expressions' time (higher means the JVM path is that many times faster), plus a check that
both gave the same codes. The goal is judged warm, as a long-running ingest stream runs:
the median of --repeat runs after each side has run for --warm-up-seconds (the JVM takes
some twenty runs of this size to compile the hot paths; one warm-up run left most of that
in the measurement). For information: the first run of each side (the expressions' in a
fresh JVM), and both sides warm on the first --batch-events events, a micro-batch's size,
where the fixed cost of a query weighs. Results in bench/results/validation.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import functions as F  # noqa: E402

from bench.report import raw_records, result, workspace, write  # noqa: E402
from bench.timing import once, timed  # noqa: E402
from pipelines.config import load_config  # noqa: E402
from pipelines.ingest.validation import validate_events  # noqa: E402
from pipelines.runtime.session import build_spark  # noqa: E402
from pipelines.synthetic.generator import Faults, WorldSpec, generate_world  # noqa: E402


def _python_code(raw: bytes):
    from pipelines.contracts import validate_event

    problem = validate_event(bytes(raw))
    return problem.code if problem else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warm-up-seconds", type=float, default=60.0)
    parser.add_argument("--batch-events", type=int, default=5_000,
                        help="also measured warm: a micro-batch's size, where the fixed cost per query shows")
    parser.add_argument("--set", action="append", default=[], help="config override, as for tailor")
    args = parser.parse_args()
    config = load_config("local", [f"storage.root={workspace('validation')}", *args.set])
    spark = build_spark(config, "bench-validation")
    spark.sparkContext.setLogLevel("ERROR")

    users = max(10, args.events // 45)
    lines = generate_world(WorldSpec(seed=5, users=users, products=200, days=14,
                                     faults=Faults.parse("all=0.01"))).events[: args.events]
    raw = raw_records(spark, lines).repartition(2).cache()
    raw.count()

    udf = F.udf(_python_code, "string")

    def both(frame):
        return (validate_events(frame).select("source_offset", "error_code"),
                frame.select("source_offset", udf("raw").alias("error_code")))

    expressions, python = both(raw)
    noop = lambda frame: frame.write.format("noop").mode("overwrite").save()  # noqa: E731
    jvm_cold_seconds = once(lambda: noop(expressions))
    udf_cold_seconds = once(lambda: noop(python))
    jvm_seconds = timed(lambda: noop(expressions), args.repeat, args.warm_up_seconds)
    udf_seconds = timed(lambda: noop(python), args.repeat, args.warm_up_seconds)
    batch = raw_records(spark, lines[: args.batch_events]).repartition(2).cache()
    batch_events = batch.count()
    batch_expressions, batch_python = both(batch)
    # Both paths are warm by now: a few runs settle the new query's own start.
    jvm_batch_seconds = timed(lambda: noop(batch_expressions), args.repeat, min(10.0, args.warm_up_seconds))
    udf_batch_seconds = timed(lambda: noop(batch_python), args.repeat, min(10.0, args.warm_up_seconds))
    disagreements = expressions.alias("e").join(python.alias("p"), "source_offset") \
        .where(~F.col("e.error_code").eqNullSafe(F.col("p.error_code"))).count()
    print(f"events: {len(lines)}")
    print(f"first run:  spark expressions: {jvm_cold_seconds:.2f}s   python udf: {udf_cold_seconds:.2f}s   "
          f"ratio {udf_cold_seconds / jvm_cold_seconds:.2f}x")
    print(f"warm:       spark expressions: {jvm_seconds:.2f}s   python udf: {udf_seconds:.2f}s   "
          f"ratio {udf_seconds / jvm_seconds:.2f}x")
    print(f"warm, {batch_events} events: spark expressions: {jvm_batch_seconds:.2f}s   "
          f"python udf: {udf_batch_seconds:.2f}s   ratio {udf_batch_seconds / jvm_batch_seconds:.2f}x")
    print(f"disagreements: {disagreements}")
    events = len(lines)
    ratio = udf_seconds / jvm_seconds
    path = write("validation", [result("validation.expressions_vs_python_udf", events / jvm_seconds,
                                       events / udf_seconds, "events/s",
                                       "≥ 1.5x a per-record Python UDF of the same contract, warm (each side run "
                                       f"for {args.warm_up_seconds:g} s first), with no disagreement",
                                       goal_ratio=1.5, met=ratio >= 1.5 and disagreements == 0,
                                       seconds=round(jvm_seconds, 2), baseline_seconds=round(udf_seconds, 2),
                                       disagreements=disagreements, warm_up_seconds=args.warm_up_seconds),
                                result(f"validation.batch_of_{batch_events}_vs_python_udf",
                                       batch_events / jvm_batch_seconds, batch_events / udf_batch_seconds,
                                       "events/s", "for information: the same, warm, at a micro-batch's size",
                                       seconds=round(jvm_batch_seconds, 2),
                                       baseline_seconds=round(udf_batch_seconds, 2)),
                                result("validation.first_run_vs_python_udf", events / jvm_cold_seconds,
                                       events / udf_cold_seconds, "events/s",
                                       "for information: each side's first run (the expressions' in a fresh JVM)",
                                       seconds=round(jvm_cold_seconds, 2),
                                       baseline_seconds=round(udf_cold_seconds, 2))],
                 events=events)
    print(f"results: {path}")
    if disagreements:
        raise SystemExit(f"{disagreements} events got different error codes from the two paths")


if __name__ == "__main__":
    main()
