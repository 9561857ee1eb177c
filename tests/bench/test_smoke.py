"""Every benchmark still runs, at a tiny size (`bench/all.py --smoke`): not a measurement,
a guard against benchmarks that rot while the code they measure moves on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.all import BENCHMARKS
from bench.report import REPOSITORY


@pytest.mark.spark
@pytest.mark.kafka
@pytest.mark.timeout(900)
def test_every_benchmark_runs_at_a_tiny_size():
    run = subprocess.run([sys.executable, "-m", "bench.all", "--smoke"], cwd=REPOSITORY, capture_output=True,
                         text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for name in BENCHMARKS:
        assert f"== {name}: ok" in run.stdout
        assert f"| {name} |" in run.stdout  # its results are in the table
