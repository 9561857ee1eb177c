"""A Structured Streaming source for Amazon Kinesis, written with the PySpark Python Data
Source API (open source Spark 4 ships none).

- The offset is the last sequence number taken from each shard: {"shardId-...": "4959..."}.
  A shard with nothing taken yet is absent, and is read from TRIM_HORIZON.
- One input partition per shard with new records; executors read their range
  (after, until] with GetRecords, so a replayed batch reads exactly the same records.
- Resharding: every shard `ListShards` returns is followed, closed parents and new
  children alike; a closed parent is read to its end, children from their start.
- Expired iterators are renewed after the last sequence read; throttling
  (ProvisionedThroughputExceeded, LimitExceeded) backs off exponentially with jitter.

The driver finds each shard's newest sequence number by reading forward from the last
position it planned (after a restart, from TRIM_HORIZON once): Kinesis has no call that
returns a shard's last sequence number without reading.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition

log = logging.getLogger("tailor.kinesis")

SCHEMA = ("data binary, stream_name string, shard_id string, sequence_number string, "
          "approximate_arrival_timestamp timestamp")
_THROTTLED = ("ProvisionedThroughputExceededException", "LimitExceededException")


def kinesis_client(options: dict[str, str]):
    import boto3
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "kinesis",
        region_name=options.get("region"),
        endpoint_url=options.get("endpoint_url") or None,
        config=BotoConfig(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10, read_timeout=30),
    )


def call_with_backoff(function, *, max_retries: int, base_delay: float = 0.2, **kwargs):
    """Call a Kinesis API, backing off exponentially (with full jitter) while throttled."""
    from botocore.exceptions import ClientError

    for attempt in range(max_retries + 1):
        try:
            return function(**kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code")
            if code not in _THROTTLED or attempt == max_retries:
                raise
            delay = random.uniform(0, base_delay * 2**attempt)
            log.warning("kinesis %s throttled (%s); retrying in %.2fs", function.__name__, code, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def list_shards(client, stream: str, max_retries: int) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    response = call_with_backoff(client.list_shards, max_retries=max_retries, StreamName=stream)
    shards += response["Shards"]
    while response.get("NextToken"):
        response = call_with_backoff(client.list_shards, max_retries=max_retries,
                                     NextToken=response["NextToken"])
        shards += response["Shards"]
    return shards


class ShardReader:
    """Iterates one shard's records after a sequence number, renewing expired iterators."""

    def __init__(self, client, stream: str, shard_id: str, after: str | None, limit: int, max_retries: int):
        self.client, self.stream, self.shard_id = client, stream, shard_id
        self.last = after
        self.limit, self.max_retries = limit, max_retries
        self.iterator = self._new_iterator()

    def _new_iterator(self) -> str | None:
        kwargs: dict[str, Any] = {"StreamName": self.stream, "ShardId": self.shard_id}
        if self.last:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=self.last)
        else:
            kwargs.update(ShardIteratorType="TRIM_HORIZON")
        return call_with_backoff(self.client.get_shard_iterator, max_retries=self.max_retries,
                                 **kwargs)["ShardIterator"]

    def pages(self) -> Iterator[tuple[list[dict[str, Any]], int, bool]]:
        """(records, millis behind latest, shard closed and exhausted) per GetRecords call."""
        from botocore.exceptions import ClientError

        while self.iterator:
            try:
                response = call_with_backoff(self.client.get_records, max_retries=self.max_retries,
                                             ShardIterator=self.iterator, Limit=self.limit)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") == "ExpiredIteratorException":
                    log.info("kinesis iterator for %s expired; renewing after %s", self.shard_id, self.last)
                    self.iterator = self._new_iterator()
                    continue
                raise
            records = response.get("Records", [])
            if records:
                self.last = records[-1]["SequenceNumber"]
            self.iterator = response.get("NextShardIterator")
            yield records, int(response.get("MillisBehindLatest", 0) or 0), self.iterator is None


class ShardRange(InputPartition):
    """Records of one shard with sequence numbers in (after, until]; after None = from the start."""

    def __init__(self, stream: str, shard_id: str, after: str | None, until: str):
        super().__init__(shard_id)
        self.stream, self.shard_id, self.after, self.until = stream, shard_id, after, until

    def __repr__(self) -> str:
        return f"ShardRange({self.stream}/{self.shard_id}, after={self.after}, until={self.until})"


class KinesisStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]):
        self.options = dict(options)
        self.stream = options["stream_name"]
        self.limit = int(options.get("max_records_per_request", "10000"))
        self.max_retries = int(options.get("max_retries", "8"))
        self.max_empty_pages = int(options.get("max_empty_pages", "5"))
        self.planned: dict[str, str] = {}
        self._client = None
        # A run-once query takes what the shards held when it started, and stops there.
        self.pin_latest = options.get("available_now", "false") == "true"
        self._pinned: dict | None = None

    @property
    def client(self):
        if self._client is None:
            self._client = kinesis_client(self.options)
        return self._client

    def initialOffset(self) -> dict:
        return {}

    def latestOffset(self) -> dict:
        """The newest sequence number of every shard, reading forward from what was planned."""
        if self._pinned is not None:
            return self._pinned
        latest = dict(self.planned)
        for shard in list_shards(self.client, self.stream, self.max_retries):
            shard_id = shard["ShardId"]
            reader = ShardReader(self.client, self.stream, shard_id, latest.get(shard_id), self.limit,
                                 self.max_retries)
            empty_pages = 0
            for records, behind, exhausted in reader.pages():
                if exhausted or (not records and behind == 0):
                    break
                empty_pages = 0 if records else empty_pages + 1
                if empty_pages >= self.max_empty_pages:
                    break
            if reader.last:
                latest[shard_id] = reader.last
        if self.pin_latest:
            self._pinned = latest
        return latest

    def partitions(self, start: dict, end: dict) -> list[ShardRange]:
        self.planned = dict(end)
        return [ShardRange(self.stream, shard_id, start.get(shard_id), until)
                for shard_id, until in sorted(end.items()) if start.get(shard_id) != until]

    def read(self, partition: ShardRange) -> Iterator[tuple]:
        client = kinesis_client(self.options)
        until = int(partition.until)
        reader = ShardReader(client, partition.stream, partition.shard_id, partition.after, self.limit,
                             self.max_retries)
        empty_pages = 0
        for records, behind, exhausted in reader.pages():
            for record in records:
                sequence = int(record["SequenceNumber"])
                if sequence > until:
                    return
                arrival = record.get("ApproximateArrivalTimestamp")
                if isinstance(arrival, datetime):
                    arrival = arrival.astimezone(UTC).replace(tzinfo=None)
                yield (bytes(record["Data"]), partition.stream, partition.shard_id,
                       record["SequenceNumber"], arrival)
                if sequence == until:
                    return
            if exhausted:
                return
            empty_pages = 0 if records else empty_pages + 1
            if not records and behind == 0 and empty_pages >= self.max_empty_pages:
                raise RuntimeError(
                    f"kinesis {partition.stream}/{partition.shard_id}: sequence {partition.until} was "
                    "planned but is no longer readable (trimmed by retention?)")

    def commit(self, end: dict) -> None:
        # After a restart Spark may commit the last finished batch before planning the next:
        # a position to read forward from, instead of TRIM_HORIZON.
        if not self.planned:
            self.planned = dict(end)

    def stop(self) -> None:
        self._client = None


class KinesisDataSource(DataSource):
    """`spark.readStream.format("tailor_kinesis").option("stream_name", ...)`"""

    @classmethod
    def name(cls) -> str:
        return "tailor_kinesis"

    def schema(self) -> str:
        return SCHEMA

    def streamReader(self, schema) -> KinesisStreamReader:
        return KinesisStreamReader(self.options)


def kinesis_records(rows):
    """Kinesis rows -> the raw columns validation expects (see pipelines.sources.raw)."""
    from pyspark.sql import functions as F

    return rows.select(
        F.col("data").alias("raw"),
        F.lit("kinesis").alias("source_kind"),
        F.col("stream_name").alias("source_stream"),
        F.col("shard_id").alias("source_partition"),
        F.col("sequence_number").alias("source_offset"),
        F.col("approximate_arrival_timestamp").alias("source_timestamp"),
    )


def read_kinesis(spark, config, checkpoint: str = "", once: bool = False) -> dict:
    """{"events": ..., "crm": ...} raw streams from the two configured Kinesis streams."""
    spark.dataSource.register(KinesisDataSource)
    settings = config.source.kinesis
    streams = {}
    for kind, name in (("events", settings.stream_name), ("crm", settings.crm_stream_name)):
        reader = (spark.readStream.format("tailor_kinesis")
                  .option("stream_name", name).option("region", settings.region)
                  .option("max_records_per_request", str(settings.max_records_per_request))
                  .option("max_retries", str(settings.max_retries)))
        if settings.endpoint_url:
            reader = reader.option("endpoint_url", settings.endpoint_url)
        if once:
            reader = reader.option("available_now", "true")
        streams[kind] = kinesis_records(reader.load())
    return streams
