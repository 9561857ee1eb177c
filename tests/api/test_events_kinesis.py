"""With source.type kinesis, the API's events go to the events stream (moto in server mode
stands in for Kinesis): whole, however many a request carries, and records the stream
refuses are sent again, or the request fails rather than lose them."""

from __future__ import annotations

import json
import logging
import uuid

import boto3
import pytest
from moto.kinesis import models as kinesis_models

from pipelines.contracts import validate_event
from tests.api.conftest import headers
from tests.api.test_webhooks import signed

REGION = "eu-west-1"


@pytest.fixture
def stream(moto_server):
    name = f"api-events-{uuid.uuid4().hex[:6]}"
    client = boto3.client("kinesis", endpoint_url=moto_server, region_name=REGION)
    client.create_stream(StreamName=name, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 50})
    return client, name


@pytest.fixture
def kinesis_app(make_app, moto_server, stream):
    _, name = stream
    return make_app("source.type=kinesis", f"source.kinesis.endpoint_url={moto_server}",
                    f"source.kinesis.stream_name={name}", f"source.kinesis.region={REGION}")


def stream_records(client, name: str) -> list[tuple[str, dict]]:
    """(partition key, event) of every record in the stream, shard by shard."""
    records = []
    for shard in client.list_shards(StreamName=name)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=name, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        response = client.get_records(ShardIterator=iterator, Limit=10000)
        for record in response["Records"]:
            assert validate_event(record["Data"]) is None
            records.append((record["PartitionKey"], json.loads(record["Data"])))
    return records


def test_an_erasure_event_lands_on_the_kinesis_stream(kinesis_app, stream):
    client, name = stream
    response = kinesis_app.test_client().delete("/v1/users/u-ada", headers=headers("ops"))
    assert response.status_code == 202
    kinesis = kinesis_app.extensions["tailor"]["kinesis_client"]
    assert kinesis_app.test_client().delete("/v1/users/u-bob", headers=headers("ops")).status_code == 202
    assert kinesis_app.extensions["tailor"]["kinesis_client"] is kinesis  # one client per process, kept
    records = stream_records(client, name)
    assert sorted(key for key, _ in records) == ["u-ada", "u-bob"]
    event = next(event for key, event in records if key == "u-ada")
    assert (event["event_type"], event["user_id"], event["payload"]["request_id"]) == (
        "erasure_request", "u-ada", response.get_json()["request_id"])


def opens(count: int) -> bytes:
    return json.dumps({"events": [
        {"id": f"o{number}", "type": "open", "user_id": f"u-{number:04d}", "occurred_at": "2026-11-28T10:00:00Z",
         "campaign_id": "c-9", "message_id": f"m-{number}"} for number in range(count)]}).encode()


def test_a_webhook_of_a_thousand_events_lands_whole(kinesis_app, stream):
    # PutRecords takes at most 500 records a call.
    client, name = stream
    body = opens(1000)
    response = kinesis_app.test_client().post("/v1/webhooks/generic", data=body, headers=signed(body))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["accepted"] == 1000
    assert sorted(event["event_id"] for _, event in stream_records(client, name)) == sorted(
        f"generic-o{number}" for number in range(1000))


@pytest.fixture
def refusing_stream(monkeypatch):
    """Kinesis answers a throttled PutRecords with 200, FailedRecordCount and an ErrorCode
    for each record it did not take; moto takes every record. `refuse[0]` is how many
    calls refuse every other record (the first, the third, ...), or all of them with
    `refuse[1]` True."""
    original = kinesis_models.KinesisBackend.put_records
    refuse = [0, False]

    def put_records(self, stream_arn, stream_name, records):
        if refuse[0] == 0:
            return original(self, stream_arn, stream_name, records)
        refuse[0] -= 1
        refused = set(range(len(records))) if refuse[1] else set(range(0, len(records), 2))
        taken = original(self, stream_arn, stream_name,
                         [record for number, record in enumerate(records) if number not in refused])["Records"]
        answers = iter(taken)
        results = [{"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded"}
                   if number in refused else next(answers) for number in range(len(records))]
        return {"FailedRecordCount": len(refused), "Records": results}

    monkeypatch.setattr(kinesis_models.KinesisBackend, "put_records", put_records)
    return refuse


def test_records_the_stream_refuses_are_sent_again(kinesis_app, stream, refusing_stream):
    client, name = stream
    refusing_stream[0] = 2  # the first call takes the even records, the second half of the rest
    body = opens(7)
    assert kinesis_app.test_client().post("/v1/webhooks/generic", data=body, headers=signed(body)).status_code == 200
    assert refusing_stream[0] == 0
    assert sorted(event["event_id"] for _, event in stream_records(client, name)) == sorted(
        f"generic-o{number}" for number in range(7))


def test_a_stream_that_keeps_refusing_fails_the_request_with_a_503(kinesis_app, stream, refusing_stream, caplog):
    refusing_stream[:] = [100, True]
    body = opens(3)
    with caplog.at_level(logging.ERROR, logger="tailor.api.consent"):
        response = kinesis_app.test_client().post("/v1/webhooks/generic", data=body, headers=signed(body))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.get_json()["error"] == "events_unavailable"
    assert "Kinesis refused 3 record(s) 4 times: ProvisionedThroughputExceededException" in caplog.text
    assert "u-0001" not in caplog.text
