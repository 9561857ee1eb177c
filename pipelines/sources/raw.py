"""The ingest job's sources, chosen by `source.type`, each normalized to the raw columns
that validation expects: the record's bytes as received and its coordinates in the source.

| column             | kafka            | kinesis              | files                 |
|--------------------|------------------|----------------------|-----------------------|
| raw                | value            | data                 | one line's bytes      |
| source_kind        | 'kafka'          | 'kinesis'            | 'files'               |
| source_stream      | topic            | stream name          | folder                |
| source_partition   | partition        | shard id             | file path             |
| source_offset      | offset           | sequence number      | line number (1-based) |
| source_timestamp   | record timestamp | approximate arrival  | file modification     |

Each source yields two logical streams, first-party events and CRM changes:
`read_raw` returns {"events": ..., "crm": ...}.
"""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession

from pipelines.config import Config
from pipelines.sources.files import read_files
from pipelines.sources.kafka import read_kafka
from pipelines.sources.kinesis import read_kinesis

RawReader = Callable[[SparkSession, Config], dict[str, DataFrame]]

# source.type -> reader; config validates the type, so a lookup here cannot miss.
READERS: dict[str, RawReader] = {
    "files": read_files,
    "kafka": read_kafka,
    "kinesis": read_kinesis,
}


def read_raw(spark: SparkSession, config: Config) -> dict[str, DataFrame]:
    """{"events": raw first-party records, "crm": raw CRM changes}, as streaming frames."""
    return READERS[config.source.type](spark, config)
