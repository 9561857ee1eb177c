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
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap_servers, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000)
    try:
        records = [(record.key, record.value) for record in consumer]
    finally:
        consumer.close()
    assert len(records) == 1
    key, value = records[0]
    assert key == b"u-ada"
    assert validate_event(value) is None
    event = json.loads(value)
    assert (event["event_type"], event["user_id"], event["payload"]["request_id"]) == (
        "erasure_request", "u-ada", response.get_json()["request_id"])
