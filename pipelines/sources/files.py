"""The landing-folder source: JSON-lines files dropped in `source.files.path` (events) and
`source.files.crm_path` (CRM changes)."""

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


def _read_folder(spark: SparkSession, config: Config, folder_setting: str) -> DataFrame:
    settings = config.source.files
    folder = config.under_root(folder_setting)
    reader = (spark.readStream.format("binaryFile").schema(BINARY_FILE_SCHEMA)
              .option("pathGlobFilter", "*.{json,jsonl}"))
    if settings.max_files_per_trigger:
        reader = reader.option("maxFilesPerTrigger", settings.max_files_per_trigger)
    return split_lines(reader.load(folder), folder)


def read_files(spark: SparkSession, config: Config) -> dict[str, DataFrame]:
    """{"events": ..., "crm": ...} raw streams from the two landing folders."""
    settings = config.source.files
    return {"events": _read_folder(spark, config, settings.path),
            "crm": _read_folder(spark, config, settings.crm_path)}
