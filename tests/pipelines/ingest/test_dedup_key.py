"""Ingest's dedup state holds salted hashes, never an event_id (a CRM event_id names the
person), and no plan Spark prints shows the salt."""

from __future__ import annotations

import hashlib

from pipelines.ingest.transforms import dedup_key
from pipelines.pii import dedup_salt

KEY = bytes(range(32))


def test_the_dedup_key_is_a_salted_sha256_of_the_event_id_or_the_coordinates(spark, capsys):
    salt = dedup_salt(KEY)
    assert salt.startswith("tailor-dedup-salt:") and len(salt) == len("tailor-dedup-salt:") + 64
    assert salt != dedup_salt(bytes(32)), "the salt must depend on the key"
    rows = spark.createDataFrame(
        [("crm:crm.customers:100:c:u-ann", None, None, "kafka", "crm", "0", 7),
         (None, "malformed_json", None, "files", "events", "f.jsonl", 8)],
        "event_id string, error_code string, control string, source_kind string, source_stream string, "
        "source_partition string, source_offset bigint")
    expected = [hashlib.sha256(f"{salt}e|crm:crm.customers:100:c:u-ann".encode()).hexdigest(),
                hashlib.sha256(f"{salt}c|files|events|f.jsonl|8".encode()).hexdigest()]
    keyed = rows.select(dedup_key(salt).alias("key"))
    assert [r.key for r in keyed.collect()] == expected

    keyed.explain(extended=True)
    printed = capsys.readouterr().out
    assert "sha2" in printed and salt not in printed and "(redacted)" in printed
