"""The streaming benchmarks (Kafka broker, Spark) still run at a tiny size."""

from __future__ import annotations

import pytest

from bench.all import BENCHMARKS
from tests.bench.smoke import BATCH, STREAMING, assert_benchmarks_run


def test_the_smoke_modules_cover_every_benchmark():
    assert sorted(STREAMING + BATCH) == sorted(BENCHMARKS)


@pytest.mark.spark
@pytest.mark.kafka
def test_the_streaming_benchmarks_run_at_a_tiny_size():
    assert_benchmarks_run(STREAMING)
