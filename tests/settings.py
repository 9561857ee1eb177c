"""Settings every test's Spark runs with, in-process or in a job's subprocess.

The tables here hold a few rows. At that size Spark's defaults spend the CPU of two
cores on work that pays off only on real data: generating and compiling Java code for
each projection in every task (about half of a small MERGE's CPU), re-planning every
stage (adaptive execution), and replaying the Delta log with several tasks. The
interpreted expressions are Spark's own fallback path, which its tests hold equal to the
generated code; the results do not change, only the CPU they take. The expression
setting alone still left whole-stage code generation on: a Java Flight Recorder profile
of a profile-merge test found a fifth of its task threads' samples in generating,
formatting and compiling (Janino) each stage's code; turning it off too cut that test
from 66 to 61 s and the feature job tests from 100 to 94 s.

The JVM flags do the same for the JVM itself. A test JVM never gets warm: after twenty
small MERGEs, HotSpot's optimising compiler (C2) still spends 1.7 CPU-seconds per MERGE
compiling Spark's and Delta's planning code, a third of the MERGE's CPU, on a machine
whose two cores the two pytest workers already share. Stopping at the quick compiler
(C1) with room for its code, and the throughput collector with a 3 GiB heap (a 1 GiB
heap ran a concurrent mark cycle every second and a half), cut the CPU of the profile
MERGE tests by 31% (286 to 198 CPU-seconds, measured by /proc/stat).
"""

SPARK_TEST_SETTINGS = (
    "spark.shuffle_partitions=2",
    "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN",
    "spark.conf.spark.sql.adaptive.enabled=false",
    "spark.conf.spark.sql.codegen.wholeStage=false",
    "spark.conf.spark.databricks.delta.snapshotPartitions=1",
    "spark.conf.spark.driver.memory=3g",
    "spark.conf.spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=512m "
    "-XX:+UseParallelGC",
)


def job_args(root, *extra: str) -> list[str]:
    """A job's argv over storage.root `root`, with the settings above."""
    settings = [arg for setting in SPARK_TEST_SETTINGS for arg in ("--set", setting)]
    return ["--set", f"storage.root={root}", *settings, *extra]
