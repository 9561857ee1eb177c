"""The ingest job against the real local Kafka broker: reconciled by source offsets."""

import uuid

import pytest
from kafka import KafkaConsumer, TopicPartition
from pyspark.sql import functions as F

from jobs.ingest_events import run
from pipelines.config import load_config
from pipelines.synthetic.generator import Faults, WorldSpec, generate_world, iter_crm_records
from pipelines.synthetic.producers import produce_to_kafka
from tests.jobs.ingest_helpers import expected_outcome, landed
from tests.settings import SPARK_TEST_SETTINGS

pytestmark = pytest.mark.kafka


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def test_kafka_reconciles_by_offsets(spark, kafka_broker, tmp_path):
    suffix = uuid.uuid4().hex[:8]
    events_topic, crm_topic = f"events-{suffix}", f"crm-{suffix}"
    kafka_broker.create_topics([events_topic, crm_topic], partitions=2)
    config = load_config("local", [
        f"storage.root={tmp_path}", "source.type=kafka", "ingest.metrics_flush_seconds=2",
        f"source.kafka.bootstrap_servers={kafka_broker.bootstrap_servers}",
        f"source.kafka.events_topic={events_topic}", f"source.kafka.crm_topic={crm_topic}", *SPARK_TEST_SETTINGS])
    world = generate_world(WorldSpec(seed=51, users=30, products=20, days=3, faults=Faults.parse("all=0.02")))
    produce_to_kafka(kafka_broker.bootstrap_servers, events_topic,
                     ((None, line) for line in world.events))
    crm_records = list(iter_crm_records(world, with_schema=True))
    # The tombstone Kafka keeps after a delete: a key with a null value.
    crm_records.append(('{"user_id":"u-00001"}', None))
    produce_to_kafka(kafka_broker.bootstrap_servers, crm_topic, crm_records)

    assert run(config, once=True) == 0

    bronze, quarantine, metrics = landed(spark, config)
    valid_ids, codes, duplicates = expected_outcome([event.encode() for event in world.events], world.crm_changes)
    assert {r.event_id for r in bronze.select("event_id").collect()} == valid_ids
    assert bronze.count() == len(valid_ids)
    assert sum(codes.values()) == quarantine.count()

    coordinates = [(r.source_stream, int(r.source_partition), int(r.source_offset)) for r in
                   bronze.select("source_stream", "source_partition", "source_offset")
                   .union(quarantine.select("source_stream", "source_partition", "source_offset")).collect()]
    assert len(coordinates) == len(set(coordinates)), "a record landed twice"
    produced = {(topic, partition, offset)
                for topic in (events_topic, crm_topic)
                for partition, end in _end_offsets(kafka_broker.bootstrap_servers, topic).items()
                for offset in range(end)}
    assert set(coordinates) <= produced
    totals = metrics.agg(F.sum("duplicate_rows").alias("dups"), F.sum("tombstones").alias("tombstones"),
                         F.sum("input_rows").alias("input")).first()
    tombstones = sum(1 for _, value in crm_records if value is None)
    assert tombstones > 0 and totals.tombstones == tombstones
    assert totals.dups == duplicates
    assert totals.input == len(produced)
    assert len(produced) - len(coordinates) == totals.dups + totals.tombstones
