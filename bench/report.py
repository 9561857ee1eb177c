"""What every benchmark reports: results as JSON under bench/results/, each a value beside
the baseline measured in the same run, their ratio, the goal, and the machine.

TAILOR_BENCH_RESULTS moves the results (the smoke test writes to a temporary folder), and
TAILOR_BENCH_WORK the tables and files a benchmark builds (default var/bench)."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[1]


def results_folder() -> Path:
    return Path(os.environ.get("TAILOR_BENCH_RESULTS") or REPOSITORY / "bench" / "results")


def workspace(benchmark: str) -> Path:
    """The folder a benchmark builds its tables and files in."""
    return Path(os.environ.get("TAILOR_BENCH_WORK") or REPOSITORY / "var" / "bench").resolve() / benchmark


def raw_records(spark, lines: list[str]):
    """JSON lines as the raw records a source hands to the ingest validation."""
    return spark.createDataFrame([(line.encode(), "bench", "s", "p", str(n), None) for n, line in enumerate(lines)],
                                 "raw binary, source_kind string, source_stream string, source_partition string, "
                                 "source_offset string, source_timestamp timestamp")


def machine() -> dict[str, Any]:
    memory_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return {"cores": os.cpu_count(), "memory_gib": round(memory_kb / 1024 / 1024, 1),
            "platform": platform.platform(), "python": platform.python_version()}


def result(name: str, value: float, baseline: float, unit: str, goal: str, higher_is_better: bool = True,
           goal_ratio: float | None = None, **details: Any) -> dict[str, Any]:
    """One measurement: `ratio` is value/baseline when higher is better, else baseline/value,
    so a ratio above 1 always means better than the baseline. `goal_ratio` is the least
    ratio that meets the goal (None: the figure is for information, or the goal is not a
    ratio and `met` is given in `details`)."""
    ratio = value / baseline if higher_is_better else baseline / value
    measured: dict[str, Any] = {"name": name, "value": round(value, 3), "baseline": round(baseline, 3), "unit": unit,
                                "ratio": round(ratio, 3), "goal": goal}
    if goal_ratio is not None:
        measured["goal_ratio"] = goal_ratio
        measured["met"] = ratio >= goal_ratio
    return {**measured, **details}


def write(benchmark: str, results: list[dict[str, Any]], **context: Any) -> Path:
    folder = results_folder()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{benchmark}.json"
    document = {"benchmark": benchmark, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(), **context, "results": results}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
