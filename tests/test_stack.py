"""The stack is real: Delta tables MERGE, and a stream reads the real local Kafka broker."""

import json

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

SCHEMA = StructType([
    StructField("user_id", StringType(), False),
    StructField("first_name", StringType(), True),
    StructField("_sequence", LongType(), True),
])


def test_delta_write_merge_read(spark, tmp_path):
    from delta.tables import DeltaTable

    path = str(tmp_path / "profiles")
    spark.createDataFrame([("u-1", "Ada", 1), ("u-2", "Grace", 1)], SCHEMA) \
        .write.format("delta").save(path)
    changes = spark.createDataFrame([("u-2", "Grace H.", 2), ("u-3", "Alan", 1), ("u-1", "stale", 0)], SCHEMA)
    (DeltaTable.forPath(spark, path).alias("t")
     .merge(changes.alias("s"), "t.user_id = s.user_id")
     .whenMatchedUpdateAll(condition="s._sequence > t._sequence")
     .whenNotMatchedInsertAll()
     .execute())
    expected = spark.createDataFrame([("u-1", "Ada", 1), ("u-2", "Grace H.", 2), ("u-3", "Alan", 1)], SCHEMA)
    actual = spark.read.format("delta").load(path)
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    history = DeltaTable.forPath(spark, path).history().select("operation").collect()
    assert [row.operation for row in history] == ["MERGE", "WRITE"]


@pytest.mark.kafka
def test_stream_from_real_kafka_lands_exactly_the_produced_records(spark, kafka_broker, tmp_path):
    from pipelines.synthetic.producers import produce_to_kafka

    topic = "stack-test"
    kafka_broker.create_topics([topic], partitions=2)
    produced = [json.dumps({"n": n, "text": f"msg-{n}"}) for n in range(50)]
    assert produce_to_kafka(kafka_broker.bootstrap_servers, topic,
                            ((f"k{n % 7}", value) for n, value in enumerate(produced))) == 50

    target = str(tmp_path / "landed")
    query = (spark.readStream.format("kafka")
             .option("kafka.bootstrap.servers", kafka_broker.bootstrap_servers)
             .option("subscribe", topic)
             .option("startingOffsets", "earliest")
             .load()
             .select(F.col("value").cast("string").alias("value"), "partition", "offset")
             .writeStream.format("delta")
             .option("checkpointLocation", str(tmp_path / "checkpoint"))
             .trigger(availableNow=True)
             .start(target))
    query.awaitTermination(180)
    assert query.exception() is None

    landed = spark.read.format("delta").load(target)
    expected = spark.createDataFrame([(value,) for value in produced], "value string")
    assert_df_equality(landed.select("value"), expected, ignore_row_order=True, ignore_nullable=True)
    assert landed.select("partition", "offset").distinct().count() == 50
