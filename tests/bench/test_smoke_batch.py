"""The batch, store and API benchmarks still run at a tiny size."""

from __future__ import annotations

from tests.bench.smoke import BATCH, assert_benchmarks_run_by_the_command, assert_benchmarks_run_in_process


def test_the_batch_benchmarks_run_at_a_tiny_size(spark, tmp_path, monkeypatch):
    assert_benchmarks_run_in_process(BATCH, tmp_path, monkeypatch)


def test_the_bench_command_runs_a_benchmark_in_its_own_process():
    assert_benchmarks_run_by_the_command(("export",))
