"""Settings every test's Spark runs with, in-process or in a job's subprocess.

The tables here hold a few rows. At that size Spark's defaults spend the CPU of two
cores on work that pays off only on real data: generating and compiling Java code for
each projection in every task (about half of a small MERGE's CPU), re-planning every
stage (adaptive execution), and replaying the Delta log with several tasks. The
interpreted expressions are Spark's own fallback path, which its tests hold equal to the
generated code; the results do not change, only the CPU they take.
"""

SPARK_TEST_SETTINGS = (
    "spark.shuffle_partitions=2",
    "spark.conf.spark.sql.codegen.factoryMode=NO_CODEGEN",
    "spark.conf.spark.sql.adaptive.enabled=false",
    "spark.conf.spark.databricks.delta.snapshotPartitions=1",
)
