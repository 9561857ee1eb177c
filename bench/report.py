"""What every benchmark reports: results as JSON under bench/results/, each a value beside
the baseline measured in the same run, their ratio, the goal, and the machine."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


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
           **details: Any) -> dict[str, Any]:
    """One measurement: `ratio` is value/baseline when higher is better, else baseline/value,
    so a ratio above 1 always means better than the baseline."""
    ratio = value / baseline if higher_is_better else baseline / value
    return {"name": name, "value": round(value, 3), "baseline": round(baseline, 3), "unit": unit,
            "ratio": round(ratio, 3), "goal": goal, **details}


def write(benchmark: str, results: list[dict[str, Any]], **context: Any) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{benchmark}.json"
    document = {"benchmark": benchmark, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine(), **context, "results": results}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
