"""The batch, store and API benchmarks still run at a tiny size."""

from __future__ import annotations

import pytest

from tests.bench.smoke import BATCH, assert_benchmarks_run


@pytest.mark.spark
def test_the_batch_benchmarks_run_at_a_tiny_size():
    assert_benchmarks_run(BATCH)
