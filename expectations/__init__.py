"""Great Expectations suites as code, one module per dataset (DESIGN.md, "validate").

Each dataset module has `DATASET` (the table it checks) and `batches(read, config,
previous) -> list[Batch]`: the frames to validate (the table itself, or a small frame
derived from it by a pure function, such as recommended items joined to the catalogue)
and, for each, its checks. A check is one Great Expectations expectation with a stable
name and a severity: `critical` fails `tailor validate` and closes the gates of train
and publish; `warning` is reported. Thresholds come from config (`quality.*`), never
from code. `previous` gives the observed value a check had in the previous run (for the
null-share jumps), or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pipelines.config import QUALITY_DATASETS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

Severity = Literal["critical", "warning"]
Read = Callable[[str], "DataFrame | None"]            # layer.name -> the table, None when it does not exist
Previous = Callable[[str], "Any | None"]              # check name -> its observed value in the previous run

DATASETS = QUALITY_DATASETS


@dataclass(frozen=True)
class Check:
    name: str                 # stable across runs: <dataset>.<what>
    severity: Severity
    expectation: Any          # a great_expectations.expectations.Expectation


@dataclass(frozen=True)
class Batch:
    """One frame and the checks run on it."""

    name: str
    frame: DataFrame
    checks: tuple[Check, ...]


def module_for(dataset: str) -> Any:
    """The suite module of a dataset: expectations/<layer>_<name>.py."""
    import importlib

    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}'; datasets: {', '.join(DATASETS)}")
    return importlib.import_module(f"expectations.{dataset.replace('.', '_')}")
