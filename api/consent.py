"""What every consent change does, wherever it comes from (the preference centre, an ESP
webhook, an erasure): the suppression record first, so the next content read already
honours it; then an event back into the pipeline (the events source: the files landing
folder locally, Kafka or Kinesis in production), validated against the contract before
it is written; then an audit line.

Every store call of a request that changes something (PUT, POST, DELETE), its reads
included, goes through the consent lane (api/store.py): api.store_write_timeout_ms and a
circuit breaker of its own, so a store too busy for a 50 ms content read still saves an
unsubscribe, and a store that is down refuses changes at once (503 with Retry-After)
rather than holding worker threads. A request that only looks (GET) takes the read lane.

The audit lines (JSON lines under <storage.root>/audit/api/) name the person by
`subject_hash`: the pipeline's keyed hash (pipelines/pii.py, HMAC-SHA256 under the key in
the variable secrets.pii_hmac_key names), never in clear text and never by a plain hash,
which anyone holding the list of user ids could reverse (DESIGN.md: the audit keeps that
an erasure happened, not who it was about). It is the same value as audit.log's
subject_hash for the same person. `tailor maintain` loads the lines into audit.log (source
`api`, outcome `requested`), beside the rows merge_profiles writes when it applies the
events (`applied` or `superseded`).
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flask import current_app, g, has_request_context, request

from api.errors import ApiError
from api.metrics import metrics
from api.recently_gone import note_back, note_gone
from api.rows import GONE_REASONS, ContentCache
from api.store import CircuitOpen, holder
from pipelines.config import API_AUDIT_FOLDER, Config, KinesisSourceConfig
from pipelines.contracts import validate_event
from pipelines.pii import keyed_hash, subject_hash_under
from pipelines.serving import PREFERENCES, SUPPRESSION, StoreUnavailable

log = logging.getLogger("tailor.api.consent")
_AUDIT_LOCK = threading.Lock()
API_SOURCE = "api"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def user_ref(user_id: str) -> str:
    """The pipeline's subject_hash of `user_id`, under the PII HMAC key loaded at start-up."""
    hmac_key: bytes = current_app.extensions["tailor"]["pii_hmac_key"]
    return subject_hash_under(hmac_key, user_id)


def _config() -> Config:
    config: Config = current_app.extensions["tailor"]["config"]
    return config


def _store_call(call: Any, write: bool = False) -> Any:
    """A request that changes something (PUT, POST, DELETE) waits on the consent lane; one
    that only looks (a subscriber opening the page, a mail client's link scanner) takes the
    read lane, with its short timeout and breaker, so a hung store cannot hold a worker's
    threads for page views while content reads queue behind them. `write`: the call
    changes the store (the consent breaker counts changes that wrote)."""
    reading = request.method in ("GET", "HEAD")
    try:
        return holder().guarded(call) if reading else holder().consent(call, write=write)
    except StoreUnavailable as error:
        metrics().store_errors.inc()
        message = "the store cannot answer; try again" if reading else "the change could not be saved; try again"
        # The consent circuit lets one change through after its reset timeout: sooner is refused again.
        waits = not reading and isinstance(error, CircuitOpen)
        retry_after = math.ceil(_config().api.circuit_breaker.reset_timeout_s) if waits else 1
        raise ApiError(503, "store_unavailable", message, headers={"Retry-After": str(retry_after)}) from None


def read_suppression(user_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = _store_call(lambda store: store.read(SUPPRESSION, user_id))
    return found


def read_suppressions(user_ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = _store_call(lambda store: store.read_many(SUPPRESSION, user_ids))
    return found


def suppress(user_id: str, reason: str) -> None:
    record = {"reason": reason, "source": API_SOURCE, "since": now_iso()}
    _store_call(lambda store: store.write_batch(SUPPRESSION, {user_id: record}), write=True)
    cache: ContentCache = current_app.extensions["tailor"]["cache"]
    cache.invalidate(user_id)
    # Saved: this host's reads answer 410 even while they cannot reach the store.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if reason in GONE_REASONS:
        note_gone(app, user_id, reason)
    else:
        note_back(app, user_id)


def lift_suppression(user_id: str) -> None:
    """Remove the API's own unsubscribe record (a re-subscribe). An erasure, a complaint or
    a hard bounce is never lifted by a subscriber's link, and the publish job's record
    stays until publish sees the consent."""
    record = read_suppression(user_id)
    lifted = record is not None and record.get("source") == API_SOURCE and record.get("reason") == "unsubscribed"
    if lifted:
        _store_call(lambda store: store.delete(SUPPRESSION, [user_id]), write=True)
    current_app.extensions["tailor"]["cache"].invalidate(user_id)
    if lifted or record is None or str(record.get("reason")) not in GONE_REASONS:
        note_back(current_app._get_current_object(), user_id)  # type: ignore[attr-defined]


def read_preferences(user_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = _store_call(lambda store: store.read(PREFERENCES, user_id))
    return found


def write_preferences(user_id: str, preferences: dict[str, Any]) -> None:
    _store_call(lambda store: store.write_batch(PREFERENCES, {user_id: preferences}), write=True)


def delete_preferences(user_id: str) -> None:
    _store_call(lambda store: store.delete(PREFERENCES, [user_id]), write=True)


def make_event(event_type: str, user_id: str, source: str, payload: dict[str, Any],
               occurred_at: str | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {"event_id": event_id or f"api-{uuid.uuid4()}", "event_type": event_type, "schema_version": 1,
            "user_id": user_id, "occurred_at": occurred_at or now_iso(), "source": source, "payload": payload}


_KAFKA_LOCK = threading.Lock()
# Bounded waits: a broker that is down costs a request a few seconds, not a minute.
_KAFKA_SETTINGS = {"acks": "all", "linger_ms": 5, "retries": 3, "max_block_ms": 3000, "request_timeout_ms": 3000}


def _send_to_kafka(bootstrap_servers: str, topic: str, records: list[tuple[str, str]]) -> None:
    """One producer per process, kept between requests (a new one per request costs a
    bootstrap and a metadata round trip); dropped after a failure, so the next request
    starts afresh."""
    from kafka import KafkaProducer  # type: ignore[import-untyped]

    holder = current_app.extensions["tailor"]
    with _KAFKA_LOCK:
        producer = holder.get("kafka_producer")
        if producer is None:
            producer = KafkaProducer(bootstrap_servers=bootstrap_servers, **_KAFKA_SETTINGS)
            holder["kafka_producer"] = producer
    try:
        futures = [producer.send(topic, key=key.encode("utf-8"), value=value.encode("utf-8"))
                   for key, value in records]
        producer.flush(timeout=5)
        for future in futures:
            future.get(timeout=5)
    except Exception:
        with _KAFKA_LOCK:
            if holder.get("kafka_producer") is producer:
                holder["kafka_producer"] = None
        producer.close(timeout=1)
        raise


class EventsRefused(RuntimeError):
    """The events source took the request but not every event in it."""


_KINESIS_LOCK = threading.Lock()
# PutRecords answers 200 and still refuses records a throttled shard could not take
# (FailedRecordCount, an ErrorCode per record); botocore retries only whole calls.
_KINESIS_ATTEMPTS = 4
_KINESIS_FIRST_PAUSE_S = 0.05
_KINESIS_MAX_RECORDS = 500
_KINESIS_MAX_BYTES = 5 * 1024 * 1024


def _kinesis_client(kinesis: KinesisSourceConfig) -> Any:
    """One client per process, as for Kafka's producer: a new one per request costs
    tens of milliseconds of endpoint and credential resolution."""
    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config as BotoConfig  # type: ignore[import-untyped]

    state = current_app.extensions["tailor"]
    with _KINESIS_LOCK:
        if state.get("kinesis_client") is None:
            # Bounded waits, as for Kafka: a stream that does not answer costs a request
            # seconds, not a minute.
            state["kinesis_client"] = boto3.client(
                "kinesis", region_name=kinesis.region, endpoint_url=kinesis.endpoint_url,
                config=BotoConfig(connect_timeout=3, read_timeout=3, retries={"mode": "standard", "max_attempts": 3}))
        return state["kinesis_client"]


def _kinesis_batches(records: list[tuple[str, str]]) -> Iterator[list[dict[str, Any]]]:
    """The records in PutRecords-sized batches: at most 500 records and 5 MiB (data and
    partition keys) each; a webhook may carry up to a thousand events."""
    batch: list[dict[str, Any]] = []
    size = 0
    for key, value in records:
        data = value.encode("utf-8")
        record_size = len(data) + len(key.encode("utf-8"))
        if batch and (len(batch) == _KINESIS_MAX_RECORDS or size + record_size > _KINESIS_MAX_BYTES):
            yield batch
            batch, size = [], 0
        batch.append({"Data": data, "PartitionKey": key})
        size += record_size
    if batch:
        yield batch


def _send_to_kinesis(kinesis: KinesisSourceConfig, records: list[tuple[str, str]]) -> None:
    client = _kinesis_client(kinesis)
    for batch in _kinesis_batches(records):
        _put_records(client, kinesis.stream_name, batch)


def _put_records(client: Any, stream_name: str, pending: list[dict[str, Any]]) -> None:
    """PutRecords, sending again the records it refused (a few times, with a growing
    pause), then failing rather than losing them."""
    for attempt in range(_KINESIS_ATTEMPTS):
        if attempt:
            time.sleep(_KINESIS_FIRST_PAUSE_S * 2 ** (attempt - 1))
        response = client.put_records(StreamName=stream_name, Records=pending)
        if not response.get("FailedRecordCount"):
            return
        # The answer lists a result per record, in the request's order.
        pending = [record for record, result in zip(pending, response["Records"], strict=True)
                   if result.get("ErrorCode")]
    codes = sorted({str(result.get("ErrorCode")) for result in response["Records"] if result.get("ErrorCode")})
    raise EventsRefused(f"Kinesis refused {len(pending)} record(s) {_KINESIS_ATTEMPTS} times: {', '.join(codes)}")


def emit(events: list[dict[str, Any]]) -> None:
    """Write events to the events source; a contract violation is a bug here (500),
    an unreachable source a 503 the caller may retry."""
    lines = []
    for event in events:
        problem = validate_event(event)
        if problem is not None:
            raise RuntimeError(f"the API built an invalid {event['event_type']} event: {problem.code}")
        lines.append(json.dumps(event, separators=(",", ":"), sort_keys=True))
    if not lines:
        return
    config = _config()
    source = config.source
    try:
        # Through importlib: the producers module sits outside the strictly typed packages.
        producers = importlib.import_module("pipelines.synthetic.producers")
        if source.type == "kafka":
            _send_to_kafka(source.kafka.bootstrap_servers, source.kafka.events_topic,
                           [(event["user_id"], line) for event, line in zip(events, lines, strict=True)])
        elif source.type == "kinesis":
            _send_to_kinesis(source.kinesis, [(event["user_id"], line)
                                              for event, line in zip(events, lines, strict=True)])
        else:
            landing = config.under_root(source.files.path).removeprefix("file://")
            s3 = _s3_location(landing)
            if s3 is not None:
                # A landing folder on S3 (the files source reads it there): one object per request.
                bucket, prefix = s3
                _s3_put(bucket, f"{prefix}/api-{uuid.uuid4().hex}.jsonl".lstrip("/"),
                        "".join(f"{line}\n" for line in lines))
            elif "://" in landing:
                raise EventsRefused(f"the files source's folder {landing.split('://')[0]}:// cannot be written here")
            else:
                producers.write_jsonl(Path(landing), f"api-{uuid.uuid4().hex}", lines)
    except Exception as error:  # noqa: BLE001 - any client's failure: the caller retries
        # The type only: a client's message may quote the request. Ours names codes, no data.
        log.error("event not written to the %s source: %s", source.type,
                  error if isinstance(error, EventsRefused) else type(error).__name__)
        raise ApiError(503, "events_unavailable", "the change is in effect but could not be recorded; retry",
                       headers={"Retry-After": "5"}) from None


def audit(action: str, user_id: str, actor: str, before: Any = None, after: Any = None) -> None:
    """One audit line, which `tailor maintain` loads into audit.log (once: by its audit_id).

    Locally it is appended to a file a day at once; under another remote root, logged. Under
    an S3 storage.root (an object store cannot append) a request's lines are one object, in
    a folder a day, stored as the request ends (`store_audit`) or every AUDIT_BATCH lines, so
    a webhook suppressing a thousand people is a few writes, and a worker killed mid-request
    loses at most that many lines of it. Never raises (see `_store_lines`)."""
    request_id = g.get("request_id") if has_request_context() else None
    hmac_key: bytes = current_app.extensions["tailor"]["pii_hmac_key"]
    entry = {"audit_id": uuid.uuid4().hex, "at": now_iso(), "action": action, "subject_hash": user_ref(user_id),
             "actor": actor, "before": before, "after": after, "request_id": request_id,
             # A caller chooses its X-Request-Id, which may name someone: audit.log keeps a keyed hash.
             "request_ref": keyed_hash(hmac_key, "request:" + request_id) if request_id else None}
    line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
    if _s3_location(_audit_folder()) is None or not has_request_context():
        _store_lines([line])
        return
    pending: list[str] = g.setdefault("audit_lines", [])
    pending.append(line)
    if len(pending) >= AUDIT_BATCH:
        _store_lines(g.pop("audit_lines"))


def store_audit(_error: BaseException | None = None) -> None:
    """teardown_request: the request's audit lines not stored yet, whatever its outcome (its
    changes stand)."""
    lines: list[str] = g.pop("audit_lines", [])
    if lines:
        _store_lines(lines)


AUDIT_BATCH = 100


def _audit_folder() -> str:
    return _config().under_root(API_AUDIT_FOLDER).rstrip("/").removeprefix("file://")


def _s3_location(folder: str) -> tuple[str, str] | None:
    """(bucket, key prefix) of an s3:// or s3a:// folder; None for any other."""
    for scheme in ("s3://", "s3a://"):
        if folder.startswith(scheme):
            bucket, _, prefix = folder.removeprefix(scheme).rstrip("/").partition("/")
            return bucket, prefix
    return None


def _store_lines(lines: list[str]) -> None:
    """Never raises: lines that cannot be stored are logged whole (they name no one in
    clear) as errors."""
    day = json.loads(lines[0])["at"][:10]
    folder = _audit_folder()
    try:
        s3 = _s3_location(folder)
        if s3 is not None:
            bucket, prefix = s3
            _s3_put(bucket, f"{prefix}/{day}/{uuid.uuid4().hex}.jsonl".lstrip("/"), "".join(lines))
        elif "://" in folder:
            for line in lines:
                log.warning("audit %s", line.strip())
        else:
            path = Path(folder) / f"audit-{day}.jsonl"
            with _AUDIT_LOCK:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a", encoding="utf-8") as handle:
                    handle.write("".join(lines))
    except Exception as error:  # noqa: BLE001 - the changes stand; their audit lines must not vanish
        for line in lines:
            log.error("audit line not stored (%s), logged instead: %s", type(error).__name__, line.strip())


def _s3_put(bucket: str, key: str, body: str) -> None:
    """One object; after a failure the worker does not call S3 again for S3_PAUSE_S, so a
    failing S3 does not hold request after request for its timeouts."""
    state = current_app.extensions["tailor"]
    if time.monotonic() < state.get("s3_paused_until", 0.0):
        raise StoreUnavailable("S3 failed less than S3_PAUSE_S ago")
    try:
        _s3_client().put_object(Bucket=bucket, Key=key, Body=body.encode("utf-8"))
    except Exception:
        state["s3_paused_until"] = time.monotonic() + S3_PAUSE_S
        raise


S3_PAUSE_S = 30.0
_S3_LOCK = threading.Lock()


def _s3_client() -> Any:
    """One client per process, as for Kinesis: endpoint and credentials resolved once; a
    call that gets no answer gives up within seconds, not a minute."""
    import boto3
    from botocore.config import Config as BotoConfig

    state = current_app.extensions["tailor"]
    with _S3_LOCK:
        if state.get("s3_client") is None:
            state["s3_client"] = boto3.client("s3", config=BotoConfig(
                connect_timeout=2, read_timeout=2, retries={"mode": "standard", "max_attempts": 2}))
        return state["s3_client"]
