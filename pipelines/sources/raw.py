"""Streaming sources, chosen by `source.type`, each normalized to the raw columns that
validation expects: the record's bytes as received and its coordinates in the source.

| column             | kafka            | kinesis              | files                 |
|--------------------|------------------|----------------------|-----------------------|
| raw                | value            | data                 | one line's bytes      |
| source_kind        | 'kafka'          | 'kinesis'            | 'files'               |
| source_stream      | topic            | stream name          | folder                |
| source_partition   | partition        | shard id             | file path             |
| source_offset      | offset           | sequence number      | line number (1-based) |
| source_timestamp   | record timestamp | approximate arrival  | file modification     |

Each source yields two logical streams, first-party events and CRM changes; `stream`
picks one: "events" or "crm".
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType, TimestampType

from pipelines.config import Config


BINARY_FILE_SCHEMA = StructType([
    StructField("path", StringType(), False),
    StructField("modificationTime", TimestampType(), False),
    StructField("length", LongType(), False),
    StructField("content", BinaryType(), True),
])


def split_lines(files: DataFrame, folder: str) -> DataFrame:
    """binaryFile rows -> one row per line, bytes untouched.

    ISO-8859-1 maps every byte to one character and back, so splitting the decoded text
    on newlines and encoding each piece again yields each line's exact bytes, invalid
    UTF-8 included, with its position in the file."""
    lines = F.split(F.decode("content", "ISO-8859-1"), "\n")
    exploded = files.select(
        "path", "modificationTime", F.size(lines).alias("_count"),
        F.posexplode(lines).alias("_position", "_line"))
    without_final_newline = exploded.where(
        ~((F.col("_position") == F.col("_count") - 1) & (F.col("_line") == "")))
    return without_final_newline.select(
        F.encode(F.regexp_replace("_line", "\r$", ""), "ISO-8859-1").alias("raw"),
        F.lit("files").alias("source_kind"),
        F.lit(folder).alias("source_stream"),
        F.col("path").alias("source_partition"),
        (F.col("_position") + 1).cast("string").alias("source_offset"),
        F.col("modificationTime").alias("source_timestamp"),
    )


def _files(spark: SparkSession, config: Config, stream: str) -> DataFrame:
    settings = config.source.files
    folder = config.under_root(settings.path if stream == "events" else settings.crm_path)
    reader = (spark.readStream.format("binaryFile").schema(BINARY_FILE_SCHEMA)
              .option("pathGlobFilter", "*.{json,jsonl}"))
    if settings.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", settings.max_files_per_trigger)
    return split_lines(reader.load(folder), folder)


def kafka_records(kafka_rows: DataFrame) -> DataFrame:
    return kafka_rows.select(
        F.col("value").alias("raw"),
        F.lit("kafka").alias("source_kind"),
        F.col("topic").alias("source_stream"),
        F.col("partition").cast("string").alias("source_partition"),
        F.col("offset").cast("string").alias("source_offset"),
        F.col("timestamp").alias("source_timestamp"),
    )


def _kafka(spark: SparkSession, config: Config) -> DataFrame:
    settings = config.source.kafka
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", settings.bootstrap_servers)
              .option("subscribe", f"{settings.events_topic},{settings.crm_topic}")
              .option("startingOffsets", settings.starting_offsets)
              .option("failOnDataLoss", str(config.ingest.fail_on_data_loss).lower()))
    if settings.max_offsets_per_trigger:
        reader = reader.option("maxOffsetsPerTrigger", settings.max_offsets_per_trigger)
    return kafka_records(reader.load())


def read_raw(spark: SparkSession, config: Config) -> dict[str, DataFrame]:
    """{"events": raw first-party records, "crm": raw CRM changes}, as streaming frames."""
    kind = config.source.type
    if kind == "files":
        return {"events": _files(spark, config, "events"), "crm": _files(spark, config, "crm")}
    if kind == "kafka":
        records = _kafka(spark, config)
        crm_topic = config.source.kafka.crm_topic
        return {"events": records.where(F.col("source_stream") != crm_topic),
                "crm": records.where(F.col("source_stream") == crm_topic)}
    if kind == "kinesis":
        from pipelines.sources.kinesis import read_kinesis

        return read_kinesis(spark, config)
    raise ValueError(f"unknown source.type {kind!r}")
