"""The Kafka source: one subscription to the events topic and the CRM topic, split by topic."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipelines.config import Config


def kafka_records(kafka_rows: DataFrame) -> DataFrame:
    """Spark's Kafka rows -> the raw columns validation expects (see pipelines.sources.raw)."""
    return kafka_rows.select(
        F.col("value").alias("raw"),
        F.lit("kafka").alias("source_kind"),
        F.col("topic").alias("source_stream"),
        F.col("partition").cast("string").alias("source_partition"),
        F.col("offset").cast("string").alias("source_offset"),
        F.col("timestamp").alias("source_timestamp"),
    )


def read_kafka(spark: SparkSession, config: Config, checkpoint: str = "", once: bool = False
               ) -> dict[str, DataFrame]:
    """{"events": ..., "crm": ...} raw streams from the configured topics."""
    settings = config.source.kafka
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.bootstrap_servers)
              .option("subscribe", f"{settings.events_topic},{settings.crm_topic}")
              .option("startingOffsets", settings.starting_offsets)
              .option("failOnDataLoss", str(config.ingest.fail_on_data_loss).lower()))
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    records = kafka_records(reader.load())
    return {"events": records.where(F.col("source_stream") != settings.crm_topic),
            "crm": records.where(F.col("source_stream") == settings.crm_topic)}
