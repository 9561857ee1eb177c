"""The streaming benchmarks (Kafka broker, Spark) still run at a tiny size."""

from __future__ import annotations

import pytest

from bench.all import BENCHMARKS
from tests.bench.smoke import BATCH, STREAMING, assert_benchmarks_run_in_process


def test_the_smoke_modules_cover_every_benchmark():
    assert sorted(STREAMING + BATCH) == sorted(BENCHMARKS)


@pytest.mark.kafka  # each benchmark starts a broker of its own
def test_the_streaming_benchmarks_run_at_a_tiny_size(spark, tmp_path, monkeypatch):
    assert_benchmarks_run_in_process(STREAMING, tmp_path, monkeypatch)
