"""Running benchmarks at a tiny size (`bench/all.py --smoke`): not a measurement, a guard
against benchmarks that rot while the code they measure moves on. Two test modules split
them, so that the suite's two workers can run them side by side."""

from __future__ import annotations

import subprocess
import sys

from bench.report import REPOSITORY

STREAMING = ("ingest", "freshness", "merge")
BATCH = ("validation", "features", "scoring", "export", "api")


def assert_benchmarks_run(names: tuple[str, ...]) -> None:
    run = subprocess.run([sys.executable, "-m", "bench.all", "--smoke", "--only", *names], cwd=REPOSITORY,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for name in names:
        assert f"== {name}: ok" in run.stdout
        assert f"| {name} |" in run.stdout  # its results are in the table
