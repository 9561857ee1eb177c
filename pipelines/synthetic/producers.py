"""Where generated (or replayed) records go: JSON-lines files in a landing folder, or Kafka.

File names carry a hash of their content, so a rerun with the same seed rewrites the same
files and a different run never reuses a name the streaming file source has already seen.
Files are written under a dot-name and renamed, so a running query never reads half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def write_jsonl(folder: Path, stem: str, lines: Sequence[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    digest = hashlib.sha256(body).hexdigest()[:12]
    target = folder / f"{stem}-{digest}.jsonl"
    if target.exists():
        return target
    staging = folder / f".{target.name}.tmp"
    staging.write_bytes(body)
    os.replace(staging, target)
    return target


def write_json(path: Path, document: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(document, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(staging, path)
    return path


def produce_to_kafka(bootstrap_servers: str, topic: str,
                     records: Iterable[tuple[str | None, str | bytes | None]]) -> int:
    """Send (key, value) pairs and wait for every acknowledgement; None values are tombstones."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", linger_ms=20,
                             retries=5, max_request_size=2 * 1024 * 1024)
    sent = 0
    try:
        futures = []
        for key, value in records:
            key_bytes = key.encode("utf-8") if isinstance(key, str) else key
            value_bytes = value.encode("utf-8") if isinstance(value, str) else value
            futures.append(producer.send(topic, key=key_bytes, value=value_bytes))
            sent += 1
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()
    return sent
