"""Run every benchmark, then gather their results into one table (`make bench`).

    .venv/bin/python -m bench.all [--only NAME ...] [--smoke]

Each benchmark runs in its own process, one after the other (they share two cores; two at
once would measure each other), at the size its docstring gives, which takes about an
hour here in all. A benchmark that fails is reported and the others still run; the exit
code is then 1. The results land in bench/results/ (TAILOR_BENCH_RESULTS), and the table
in bench/results/summary.md and README's "Performance" section.

--smoke runs each at a tiny size, with the test suite's Spark settings, into a temporary
folder, and leaves bench/results/ and README alone: a check that the benchmarks still
run, not a measurement (the suite runs it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import summary
from bench.report import REPOSITORY

# name -> (arguments at the measured size, arguments for the smoke run)
BENCHMARKS: dict[str, tuple[list[str], list[str]]] = {
    "ingest": ([], ["--users", "40", "--no-cold"]),
    "validation": ([], ["--events", "300", "--repeat", "1", "--warm-up-seconds", "0", "--batch-events", "100"]),
    "freshness": ([], ["--rate", "2", "--warm-up", "3", "--seconds", "3"]),
    "merge": ([], ["--rows", "300", "600", "--changes", "30", "--repeat", "1", "--no-warm-up"]),
    "features": ([], ["--users", "30", "60", "--repeat", "1"]),
    "scoring": ([], ["--users", "200", "--items", "50", "--per-user", "5"]),
    "export": ([], ["--rows", "300", "--batch", "100"]),
    "api": ([], ["--seconds", "0.5", "--users", "200"]),
}
# Benchmarks that start Spark take the test settings on a smoke run (see tests/settings.py).
SPARK_BENCHMARKS = ("ingest", "validation", "freshness", "merge", "features", "scoring")


def arguments_for(name: str, smoke: bool) -> list[str]:
    """A benchmark's command-line arguments: at the measured size, or the smoke run's."""
    measured, tiny = BENCHMARKS[name]
    arguments = list(tiny if smoke else measured)
    if smoke and name in SPARK_BENCHMARKS:
        from tests.settings import SPARK_TEST_SETTINGS

        arguments += [arg for setting in SPARK_TEST_SETTINGS for arg in ("--set", setting)]
    return arguments


def run(names: list[str], smoke: bool, env: dict[str, str]) -> list[str]:
    """Run the benchmarks; returns the names of those that failed."""
    failed = []
    for name in names:
        arguments = arguments_for(name, smoke)
        started = time.monotonic()
        print(f"== bench/{name}.py {' '.join(arguments)}", flush=True)
        code = subprocess.run([sys.executable, str(REPOSITORY / "bench" / f"{name}.py"), *arguments],
                              cwd=REPOSITORY, env=env, check=False).returncode
        print(f"== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - started:.0f} s",
              flush=True)
        if code != 0:
            failed.append(name)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="run these benchmarks only")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, temporary results: a check, not a measure")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    env = dict(os.environ)
    if not args.smoke:
        failed = run(names, False, env)
        summary.main([])
    else:
        with tempfile.TemporaryDirectory(prefix="tailor-bench-smoke-") as folder:
            env.update(TAILOR_BENCH_RESULTS=str(Path(folder) / "results"), TAILOR_BENCH_WORK=str(Path(folder) / "work"))
            failed = run(names, True, env)
            written = sorted(path.stem for path in (Path(folder) / "results").glob("*.json"))
            print(summary.render(Path(folder) / "results"))
            missing = [name for name in names if name not in written and name not in failed]
            if missing:
                print(f"ran without writing results: {', '.join(missing)}", file=sys.stderr)
                failed += missing
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
