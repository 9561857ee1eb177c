"""Running benchmarks at a tiny size: not a measurement, a guard against benchmarks that
rot while the code they measure moves on. Two test modules split them, so that the
suite's two workers can run them side by side.

Each benchmark script runs as `__main__` inside the test's own process, with the smoke
run's arguments (`bench/all.py --smoke` gives the same ones): its Spark session is the
suite's, already started and warm, instead of a new JVM per benchmark, which cost more
than the benchmarks' own work at this size. `bench/all.py --smoke` itself, which runs
each in its own process as `make bench` does, is run once for a benchmark without Spark."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from bench.all import arguments_for
from bench.report import REPOSITORY
from bench.summary import render

STREAMING = ("ingest", "freshness", "merge")
BATCH = ("validation", "features", "scoring", "export", "api")


def assert_benchmarks_run_in_process(names: tuple[str, ...], folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = folder / "results"
    monkeypatch.setenv("TAILOR_BENCH_RESULTS", str(results))
    monkeypatch.setenv("TAILOR_BENCH_WORK", str(folder / "work"))
    for name in names:
        script = REPOSITORY / "bench" / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(script), *arguments_for(name, smoke=True)])
        runpy.run_path(str(script), run_name="__main__")
        document = json.loads((results / f"{name}.json").read_text(encoding="utf-8"))
        assert document["benchmark"] == name and document["results"], name
    table = render(results)
    for name in names:
        assert f"| {name} |" in table  # its results are in the table


def assert_benchmarks_run_by_the_command(names: tuple[str, ...]) -> None:
    run = subprocess.run([sys.executable, "-m", "bench.all", "--smoke", "--only", *names], cwd=REPOSITORY,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for name in names:
        assert f"== {name}: ok" in run.stdout
        assert f"| {name} |" in run.stdout  # its results are in the table
