"""With source.type kafka, consent changes go to the events topic of a real broker
(marked `kafka` by the fixture it uses; `make test-fast` leaves it out)."""

from __future__ import annotations

import json
import uuid

from kafka import KafkaConsumer

from pipelines.contracts import validate_event
from tests.api.conftest import headers


def test_erasure_event_lands_on_the_kafka_events_topic(kafka_broker, make_app):
    topic = f"api-events-{uuid.uuid4().hex[:6]}"
    kafka_broker.create_topics([topic])
    app = make_app("source.type=kafka", f"source.kafka.bootstrap_servers={kafka_broker.bootstrap_servers}",
                   f"source.kafka.events_topic={topic}")
    response = app.test_client().delete("/v1/users/u-ada", headers=headers("ops"))
    assert response.status_code == 202
    producer = app.extensions["tailor"]["kafka_producer"]
    assert app.test_client().delete("/v1/users/u-bob", headers=headers("ops")).status_code == 202
    assert app.extensions["tailor"]["kafka_producer"] is producer  # one producer per process, kept
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    try:
        records = [(record.key, record.value) for record in consumer]
    finally:
        consumer.close()
    # Two partitions: the order across them is the consumer's.
    assert sorted(key for key, _ in records) == [b"u-ada", b"u-bob"]
    key, value = next(record for record in records if record[0] == b"u-ada")
    assert key == b"u-ada"
    assert validate_event(value) is None
    event = json.loads(value)
    assert (event["event_type"], event["user_id"], event["payload"]["request_id"]) == (
        "erasure_request", "u-ada", response.get_json()["request_id"])
