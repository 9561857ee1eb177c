import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _generate(tmp_path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "generate", "--users", "30", "--products", "20",
         "--days", "3", "--seed", "21", "--output", str(tmp_path), "--batches", "3", *extra],
        capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_files_sink_writes_batches_crm_catalog_and_manifest(tmp_path):
    result = _generate(tmp_path, "--faults", "duplicate=0.02")
    assert result.returncode == 0, result.stderr
    events = sorted((tmp_path / "events").glob("*.jsonl"))
    assert len(events) == 3
    assert len(list((tmp_path / "crm").glob("*.jsonl"))) == 1
    assert len(list((tmp_path / "catalog").glob("*.jsonl"))) == 1
    manifest = json.loads((tmp_path / "_manifest-seed21.json").read_text())
    lines = sum(len(path.read_text().splitlines()) for path in events)
    assert lines == manifest["counts"]["event_lines"]
    assert manifest["faults"]["duplicate"]["count"] > 0
    before = {path.name: path.read_bytes() for path in events}
    assert _generate(tmp_path, "--faults", "duplicate=0.02").returncode == 0
    assert {path.name: path.read_bytes() for path in sorted((tmp_path / "events").glob("*.jsonl"))} == before
    assert not list(tmp_path.rglob(".*.tmp"))


def test_bad_options_are_one_line(tmp_path):
    result = _generate(tmp_path, "--faults", "gremlins=0.1")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("tailor: --faults: unknown fault 'gremlins'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_kafka_sink_produces_events_and_crm_with_tombstones(kafka_broker, tmp_path):
    import uuid

    from kafka import KafkaConsumer

    suffix = uuid.uuid4().hex[:6]
    events_topic, crm_topic = f"gen-events-{suffix}", f"gen-crm-{suffix}"
    kafka_broker.create_topics([events_topic, crm_topic])
    result = _generate(tmp_path, "--sink", "kafka", "--users", "300", "--days", "14", "--seed", "8", "--with-schema",
                       "--set", f"source.kafka.bootstrap_servers={kafka_broker.bootstrap_servers}",
                       "--set", f"source.kafka.events_topic={events_topic}",
                       "--set", f"source.kafka.crm_topic={crm_topic}")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "_manifest-seed8.json").read_text())

    def consume(topic):
        consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap_servers,
                                 auto_offset_reset="earliest", consumer_timeout_ms=5000)
        try:
            return [(m.key, m.value) for m in consumer]
        finally:
            consumer.close()

    events = consume(events_topic)
    assert len(events) == manifest["counts"]["event_lines"]
    crm = consume(crm_topic)
    ops = manifest["counts"]["crm_changes_by_op"]
    assert ops.get("d", 0) > 0
    assert sum(1 for _, value in crm if value is None) == ops["d"]
    assert len(crm) == sum(ops.values()) + ops["d"]
    first = json.loads(next(value for _, value in crm if value))
    assert set(first) == {"schema", "payload"}
