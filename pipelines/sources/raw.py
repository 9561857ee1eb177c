"""The ingest job's sources, chosen by `source.type`, each normalized to the raw columns
that validation expects: the record's bytes as received and its coordinates in the source.

| column             | kafka            | kinesis              | files                 |
|--------------------|------------------|----------------------|-----------------------|
| raw                | value            | data                 | one line's bytes      |
| source_kind        | 'kafka'          | 'kinesis'            | 'files'               |
| source_stream      | topic            | stream name          | folder                |
| source_partition   | partition        | shard id             | file path             |
| source_offset      | offset           | sequence number      | byte offset of line   |
| source_timestamp   | record timestamp | approximate arrival  | file modification     |

Each source yields two logical streams, first-party events and CRM changes:
`read_raw` returns {"events": ..., "crm": ...}.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from pipelines.config import Config
from pipelines.sources.files import read_files
from pipelines.sources.kafka import read_kafka
from pipelines.sources.kinesis import read_kinesis

# (spark, config, the query's checkpoint, once) -> {"events": ..., "crm": ...}
RawReader = Callable[[SparkSession, Config, str, bool], dict[str, DataFrame]]


@dataclass(frozen=True)
class SourceKind:
    read: RawReader
    # Spark's availableNow trigger works for JVM sources; Python data sources get a single
    # batch instead (see pipelines.runtime.streaming.start_foreach_batch).
    native_available_now: bool


# source.type -> its reader; config validates the type, so a lookup here cannot miss.
SOURCES: dict[str, SourceKind] = {
    "files": SourceKind(read_files, native_available_now=False),
    "kafka": SourceKind(read_kafka, native_available_now=True),
    "kinesis": SourceKind(read_kinesis, native_available_now=False),
}


def read_raw(spark: SparkSession, config: Config, checkpoint: str, once: bool) -> dict[str, DataFrame]:
    """{"events": raw first-party records, "crm": raw CRM changes}, as streaming frames.
    A source that keeps its own state (the files source's admitted-files log) keeps it
    beside `checkpoint`, the reading query's; `once` says the query runs availableNow."""
    return SOURCES[config.source.type].read(spark, config, checkpoint, once)
