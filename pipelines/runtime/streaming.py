"""Streaming plumbing every job shares: starting a foreachBatch query, waiting for it (and
stopping it on SIGTERM), and the writes that make a micro-batch land exactly once.

Delta's idempotent writes (`txnAppId` + `txnVersion`) skip a batch already committed, so
a batch replayed after a crash (the checkpoint had not recorded it yet) adds nothing.
The app id is minted once per checkpoint and stored beside it: a new checkpoint (batch
ids from 0 again) gets a new app id, so its batches are never mistaken for old ones.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from pipelines.config import TableRef
from pipelines.errors import TailorError
from pipelines.runtime.delta_tables import idempotent_writes, retry_on_conflict, save
from pipelines.runtime.session import jvm_log

log = logging.getLogger("tailor.streaming")
APP_ID_FILE = "_tailor_app_id"
BatchWriter = Callable[[DataFrame, int], None]


def checkpoint_app_id(spark: SparkSession, checkpoint: str, name: str) -> str:
    """The idempotent-write app id of the query using `checkpoint`, created on first use."""
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint.rstrip('/')}/{APP_ID_FILE}")
    fs = path.getFileSystem(hadoop_conf)
    if fs.exists(path):
        stream = fs.open(path)
        try:
            reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
            return reader.readLine().strip()
        finally:
            stream.close()
    app_id = f"tailor.{name}.{uuid.uuid4()}"
    stream = fs.create(path, False)
    try:
        stream.write(bytearray(app_id.encode("utf-8")))
    finally:
        stream.close()
    return app_id


def append_once(frame: DataFrame, table: TableRef, app_id: str, version: int) -> None:
    """Append `frame`, unless a commit with this app id and version is already in the table."""
    writer = (frame.write.format("delta").mode("append")
              .option("txnAppId", app_id).option("txnVersion", version))
    save(writer, table)


class BatchSteps:
    """The writes of one foreachBatch function, each committed at most once per batch id.

    Every step has its own txnAppId (`<app_id>.<step>`), so a batch cut short between two
    steps skips the one it committed and runs the other when replayed; a step that loses
    a commit race to another writer is run again, up to `retries` times."""

    def __init__(self, app_id: str, retries: int, on_conflict: Callable[[int], None] | None = None):
        self.app_id = app_id
        self.retries = retries
        self.on_conflict = on_conflict

    def run(self, spark: SparkSession, step: str, batch_id: int, write: Callable[[], None]) -> None:
        def attempt() -> None:
            with idempotent_writes(spark, f"{self.app_id}.{step}", batch_id):
                write()

        started = time.monotonic()
        retry_on_conflict(attempt, f"{self.app_id} {step} (batch {batch_id})", self.retries,
                          on_conflict=self.on_conflict)
        log.debug("batch %d: %s took %.1f s", batch_id, step, time.monotonic() - started)


# How soon Spark reports an idle query (onQueryIdle) after a trigger finds nothing to do;
# its default (10 s) would leave every run-once query idle that long before it stops.
_IDLE_EVENT_INTERVAL = "200ms"
_NO_DATA_INTERVAL_KEY = "spark.sql.streaming.noDataProgressEventInterval"


class _IdleWatch(StreamingQueryListener):
    """Sets `idle` when the watched query has processed everything it could see.

    Spark posts onQueryIdle only after a trigger that found no new data and owed no
    no-data (watermark) batch, so every earlier batch is committed by then. The event is
    latched here; the query's status shows that moment for only pollingDelay (10 ms)."""

    def __init__(self) -> None:
        self.query_id: str | None = None
        self.idle = threading.Event()

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        pass

    def onQueryIdle(self, event: Any) -> None:
        if str(event.id) == self.query_id:
            self.idle.set()

    def onQueryTerminated(self, event: Any) -> None:
        pass


class RunningQuery:
    """A started query, and how to tell that a run-once query without native availableNow
    support has drained its source."""

    def __init__(self, query: StreamingQuery, watch: _IdleWatch | None, spark: SparkSession):
        self.query = query
        self.watch = watch
        self.spark = spark

    @property
    def until_drained(self) -> bool:
        return self.watch is not None

    @property
    def drained(self) -> bool:
        return self.watch is not None and self.watch.idle.is_set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.query, name)


def start_foreach_batch(frame: DataFrame, name: str, checkpoint: str, writer: BatchWriter, once: bool,
                        trigger_interval: str, native_available_now: bool = True) -> RunningQuery:
    """Start `frame` into a foreachBatch writer: processing time, or with `once` the backlog
    present at start and then stop.

    `once` uses Spark's availableNow trigger where every source supports it (Kafka, Delta).
    Spark runs a Python data source (files, Kinesis) under availableNow as a single batch,
    which after a crash is only the replay of the batch cut short; for those, `once` runs
    with a processing-time trigger instead and `await_query` stops the query when it is idle
    (the sources take only what they held at the first call: Kinesis pins its latest
    offset, the files source its first listing; so "idle" means the backlog of the start is
    done)."""
    stream = (frame.writeStream.queryName(name)
              .option("checkpointLocation", checkpoint)
              .foreachBatch(writer))
    spark = frame.sparkSession
    watch = None
    if once and native_available_now:
        stream, mode = stream.trigger(availableNow=True), "availableNow"
    elif once:
        watch = _IdleWatch()
        spark.streams.addListener(watch)
        stream, mode = stream.trigger(processingTime="0 seconds"), "until drained"
    else:
        stream, mode = stream.trigger(processingTime=trigger_interval), "processing time"
    if watch is None:
        query = stream.start()
    else:
        # Read when the query starts: set for this query only.
        previous = spark.conf.get(_NO_DATA_INTERVAL_KEY, None)
        spark.conf.set(_NO_DATA_INTERVAL_KEY, _IDLE_EVENT_INTERVAL)
        try:
            query = stream.start()
        finally:
            if previous is None:
                spark.conf.unset(_NO_DATA_INTERVAL_KEY)
            else:
                spark.conf.set(_NO_DATA_INTERVAL_KEY, previous)
        watch.query_id = str(query.id)
    log.info("query %s started (%s), checkpoint %s", name, mode, checkpoint)
    return RunningQuery(query, watch, spark)


def await_query(query: RunningQuery, name: str, on_tick: Callable[[], None] | None = None,
                tick_seconds: float = 30) -> None:
    """Wait for a streaming query to finish; SIGTERM stops it cleanly (a batch cut short is
    replayed at the next start). `on_tick` runs every `tick_seconds` while it runs.
    A failed query raises a one-line TailorError."""
    # The handler only records the request: stopping the query from inside a signal
    # handler would re-enter py4j while the main thread waits on it.
    stop_requested = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop_requested.set())
    try:
        last_tick = time.monotonic()
        while query.isActive:
            query.awaitTermination(0.25 if query.until_drained else 1)
            if stop_requested.is_set():
                log.info("SIGTERM: stopping %s; a batch cut short is replayed at the next start", name)
                query.stop()
            elif query.drained:
                query.stop()
            if on_tick and time.monotonic() - last_tick >= tick_seconds:
                on_tick()
                last_tick = time.monotonic()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if query.watch is not None:
            query.spark.streams.removeListener(query.watch)
    if query.exception() is not None:
        details = f" (the JVM's log: {jvm_log()})" if jvm_log() else ""
        raise TailorError(f"query {name} failed: {str(query.exception()).splitlines()[0][:500]}{details}")
    ran = last_batch_ran(query)
    log.info("query %s stopped after batch %s", name, "none" if ran is None else ran)


@dataclass(frozen=True)
class BatchFacts:
    """What the engine knows of the micro-batch a foreachBatch function is writing."""

    query_id: str
    run_id: str
    batch_id: int
    batch_timestamp: datetime            # the batch's trigger time, as its offset log recorded it
    observed: dict[str, dict[str, Any]]  # each `DataFrame.observe` name -> its values
    source_offsets: list[str | None]     # each source's end offset for the batch, as JSON


def running_batch(spark: SparkSession, query_name: str, batch_id: int) -> BatchFacts:
    """The facts of batch `batch_id` of the running query `query_name`, read from inside its
    foreachBatch function once an action has computed every partition of the batch.

    PySpark hands observed metrics out only in progress events, which Spark posts after
    the batch has committed: a crash between the two loses them. The running query's own
    execution holds the same values as soon as the batch has been computed, so a batch
    can write them itself. `spark` is the session that started the query (foreachBatch
    passes a batch on a child session, which does not list it). Classic Spark only: these
    are the JVM's query objects, which Spark Connect does not expose."""
    matches = [query for query in spark.streams.active if query.name == query_name]
    if len(matches) != 1:
        raise TailorError(f"query {query_name}: {len(matches)} running queries have that name, expected one")
    query = matches[0]
    engine = query._jsq.streamingQuery()
    execution = engine.lastExecution()
    if execution is None or execution.currentBatchId() != batch_id:
        raise TailorError(f"query {query_name}: batch {batch_id} is not the batch being written")
    metrics = execution.observedMetrics()
    names = metrics.keys().iterator()
    observed: dict[str, dict[str, Any]] = {}
    while names.hasNext():
        name = names.next()
        observed[name] = json.loads(metrics.apply(name).json())
    offsets = engine.offsetLog().get(batch_id).get().offsets()
    return BatchFacts(
        query_id=str(query.id), run_id=str(query.runId), batch_id=batch_id,
        batch_timestamp=datetime.fromtimestamp(execution.offsetSeqMetadata().batchTimestampMs() / 1000, UTC),
        observed=observed,
        source_offsets=[offsets.apply(i).get().json() if offsets.apply(i).isDefined() else None
                        for i in range(offsets.size())])


def last_batch_ran(query: StreamingQuery | RunningQuery) -> int | None:
    """The id of the query's last batch that ran: an idle trigger's progress (no addBatch)
    names the next batch id, which no batch has reached."""
    ran = [progress["batchId"] for progress in query.recentProgress if "addBatch" in progress["durationMs"]]
    return ran[-1] if ran else None
