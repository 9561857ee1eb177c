"""The Kinesis source (a PySpark Python data source) against moto in server mode:
exactly-once across runs, a reshard mid-stream, expired iterators and throttling."""

import json
import uuid
from collections import OrderedDict

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.kinesis import models as kinesis_models

from jobs.ingest_events import run
from pipelines.config import load_config
from pipelines.sources.kinesis import ShardReader, call_with_backoff
from pipelines.synthetic.generator import Faults, WorldSpec, crm_message, generate_world
from tests.jobs.ingest_helpers import expected_outcome, landed
from tests.settings import SPARK_TEST_SETTINGS


@pytest.fixture
def kinesis_like_resharding(monkeypatch):
    """moto's SplitShard re-puts the parent's records into the children under new sequence
    numbers and keeps routing new records to the closed parent. Kinesis does neither: the
    parent keeps its records, closed, and new records go to the open children. The source
    is tested against Kinesis's behaviour."""

    def split_shard(self, shard_to_split, new_starting_hash_key):
        parent = self.shards[shard_to_split]
        split_at = int(new_starting_hash_key)
        last = max(shard._shard_id for shard in self.shards.values())
        for number, (low, high) in enumerate(((parent.starting_hash, split_at - 1), (split_at, parent.ending_hash)),
                                             start=1):
            child = kinesis_models.Shard(last + number, starting_hash=low, ending_hash=high, parent=parent.shard_id)
            self.shards[child.shard_id] = child
        parent.is_open = False

    original = kinesis_models.Stream.get_shard_for_key

    def get_shard_for_key(self, partition_key, explicit_hash_key):
        shards = self.shards
        self.shards = OrderedDict((k, v) for k, v in shards.items() if v.is_open)
        try:
            return original(self, partition_key, explicit_hash_key)
        finally:
            self.shards = shards

    monkeypatch.setattr(kinesis_models.Stream, "split_shard", split_shard)
    monkeypatch.setattr(kinesis_models.Stream, "get_shard_for_key", get_shard_for_key)


def _put(client, stream, lines):
    for start in range(0, len(lines), 400):
        chunk = lines[start:start + 400]
        response = client.put_records(StreamName=stream, Records=[
            {"Data": line.encode("utf-8"), "PartitionKey": f"pk-{(start + n) % 37}"} for n, line in enumerate(chunk)])
        assert response["FailedRecordCount"] == 0


def _all_coordinates(client, stream):
    coordinates = set()
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            response = client.get_records(ShardIterator=iterator, Limit=10000)
            if not response["Records"]:
                break
            coordinates |= {(stream, shard["ShardId"], r["SequenceNumber"]) for r in response["Records"]}
            iterator = response.get("NextShardIterator")
    return coordinates


def test_kinesis_exactly_once_across_a_reshard(spark, moto_server, kinesis_like_resharding, tmp_path):
    suffix = uuid.uuid4().hex[:6]
    events_stream, crm_stream = f"events-{suffix}", f"crm-{suffix}"
    client = boto3.client("kinesis", endpoint_url=moto_server, region_name="eu-west-1")
    client.create_stream(StreamName=events_stream, ShardCount=2)
    client.create_stream(StreamName=crm_stream, ShardCount=1)
    config = load_config("local", [
        f"storage.root={tmp_path}", "source.type=kinesis", "ingest.metrics_flush_seconds=1",
        f"source.kinesis.stream_name={events_stream}", f"source.kinesis.crm_stream_name={crm_stream}",
        f"source.kinesis.endpoint_url={moto_server}", "source.kinesis.region=eu-west-1", *SPARK_TEST_SETTINGS])
    world = generate_world(WorldSpec(seed=71, users=30, products=20, days=3,
                                     faults=Faults.parse("duplicate=0.02,malformed_json=0.01,missing_field=0.01")))
    half = len(world.events) // 2
    _put(client, events_stream, world.events[:half])
    _put(client, crm_stream, [crm_message(c, with_schema=False) for c in world.crm_changes])
    assert run(config, once=True) == 0
    first_bronze = landed(spark, config)[0].count()
    assert first_bronze > 0

    shard = client.list_shards(StreamName=events_stream)["Shards"][0]
    middle = (int(shard["HashKeyRange"]["StartingHashKey"]) + int(shard["HashKeyRange"]["EndingHashKey"])) // 2
    client.split_shard(StreamName=events_stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str(middle))
    shards = client.list_shards(StreamName=events_stream)["Shards"]
    assert len(shards) == 4 and sum(1 for s in shards if s.get("ParentShardId") == shard["ShardId"]) == 2
    _put(client, events_stream, world.events[half:])
    assert run(config, once=True) == 0
    assert run(config, once=True) == 0          # nothing new: adds nothing

    bronze, quarantine, metrics = landed(spark, config)
    valid_ids, codes, duplicates = expected_outcome([event.encode() for event in world.events], world.crm_changes)
    rows = bronze.select("event_id").collect()
    assert len(rows) == len({r.event_id for r in rows}) == len(valid_ids)
    assert {r.event_id for r in rows} == valid_ids
    assert quarantine.count() == sum(codes.values())
    landed_at = [(r.source_stream, r.source_partition, r.source_offset) for r in
                 bronze.select("source_stream", "source_partition", "source_offset")
                 .union(quarantine.select("source_stream", "source_partition", "source_offset")).collect()]
    put = _all_coordinates(client, events_stream) | _all_coordinates(client, crm_stream)
    assert len(landed_at) == len(set(landed_at)) and set(landed_at) <= put
    assert len(put) - len(landed_at) == duplicates
    children = {s["ShardId"] for s in shards if s.get("ParentShardId")}
    assert bronze.where(bronze.source_partition.isin(*children)).count() > 0


class _Flaky:
    """A real moto client whose calls fail as Kinesis does under load, a set number of times."""

    def __init__(self, client, fail: dict[str, list[str]]):
        self._client, self._fail = client, fail
        self.calls: list[str] = []

    def __getattr__(self, name):
        real = getattr(self._client, name)

        def call(**kwargs):
            self.calls.append(name)
            pending = self._fail.get(name)
            if pending:
                code = pending.pop(0)
                raise ClientError({"Error": {"Code": code, "Message": "injected"}}, name)
            return real(**kwargs)

        call.__name__ = name
        return call


def test_throttling_backs_off_then_succeeds_and_other_errors_raise(moto_server):
    client = boto3.client("kinesis", endpoint_url=moto_server, region_name="eu-west-1")
    client.create_stream(StreamName="throttle", ShardCount=1)
    flaky = _Flaky(client, {"list_shards": ["ProvisionedThroughputExceededException", "LimitExceededException"]})
    shards = call_with_backoff(flaky.list_shards, max_retries=3, base_delay=0.01, StreamName="throttle")["Shards"]
    assert len(shards) == 1 and flaky.calls == ["list_shards"] * 3
    flaky = _Flaky(client, {"list_shards": ["ResourceNotFoundException"]})
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        call_with_backoff(flaky.list_shards, max_retries=3, base_delay=0.01, StreamName="throttle")
    flaky = _Flaky(client, {"list_shards": ["ProvisionedThroughputExceededException"] * 3})
    with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
        call_with_backoff(flaky.list_shards, max_retries=2, base_delay=0.01, StreamName="throttle")


def test_expired_iterator_is_renewed_after_the_last_record(moto_server):
    client = boto3.client("kinesis", endpoint_url=moto_server, region_name="eu-west-1")
    client.create_stream(StreamName="expiry", ShardCount=1)
    for n in range(6):
        client.put_record(StreamName="expiry", Data=json.dumps({"n": n}).encode(), PartitionKey="k")
    shard_id = client.list_shards(StreamName="expiry")["Shards"][0]["ShardId"]
    flaky = _Flaky(client, {"get_records": ["ExpiredIteratorException"]})
    reader = ShardReader(flaky, "expiry", shard_id, after=None, limit=4, max_retries=2)
    seen = []
    for records, _behind, _exhausted in reader.pages():
        seen += [json.loads(r["Data"])["n"] for r in records]
        if not records:
            break
        if len(seen) == 4:
            flaky._fail["get_records"] = ["ExpiredIteratorException"]
    assert seen == [0, 1, 2, 3, 4, 5]
    assert flaky.calls.count("get_shard_iterator") == 3
