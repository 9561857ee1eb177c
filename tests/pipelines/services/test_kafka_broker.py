"""The local broker's cluster id: the storage tool must be able to read it."""

from __future__ import annotations

from pipelines.services.kafka_broker import new_cluster_id


def test_a_cluster_id_never_starts_with_a_dash():
    # 0xfb 0xff... encodes to "-_-_...": the tool would read it as an option and fail.
    draws = iter([b"\xfb\xff" * 8, b"\x00" * 16])
    assert new_cluster_id(lambda: next(draws)) == "AAAAAAAAAAAAAAAAAAAAAA"
    assert len(new_cluster_id()) == 22
