"""The benchmarks' results as one Markdown table: bench/results/summary.md, and the same
table in README's "Performance" section (between its two bench-results markers).

    .venv/bin/python -m bench.summary [--check]

--check changes nothing and exits 1 when README's table is not the one the results give
(the suite runs it, so a result committed without its table fails)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.report import REPOSITORY, results_folder

START, END = "<!-- bench-results:start -->", "<!-- bench-results:end -->"
README = REPOSITORY / "README.md"


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.1f}"


def _met(item: dict[str, Any]) -> str:
    if "met" not in item:
        return "—"
    return "yes" if item["met"] else "**no**"


def render(folder: Path) -> str:
    """The table of every results file in `folder`, by benchmark name."""
    documents = [json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))]
    lines = ["| benchmark | measure | value | baseline | unit | ratio | goal | met | measured |",
             "|---|---|---|---|---|---|---|---|---|"]
    machines = set()
    for document in documents:
        machine = document["machine"]
        machines.add(f"{machine['cores']} cores, {machine['memory_gib']} GiB, Python {machine['python']}, "
                     f"{machine['platform']}")
        for item in document["results"]:
            measure = item["name"].removeprefix(document["benchmark"] + ".")
            lines.append(f"| {document['benchmark']} | {measure} | {_number(item['value'])} | "
                         f"{_number(item['baseline'])} | {item['unit']} | {_number(item['ratio'])} | "
                         f"{item['goal']} | {_met(item)} | {document['measured_at'][:10]} |")
    lines += ["", "Ratio: value against the baseline measured in the same run, above 1 better than the baseline "
              "(for times, baseline / value). Machines: " + "; ".join(sorted(machines)) + "."]
    return "\n".join(lines) + "\n"


def with_table(readme: str, table: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md has no {START} ... {END} block for the benchmark table")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README's table is out of date")
    args = parser.parse_args(argv)
    folder = results_folder()
    table = render(folder)
    readme = README.read_text(encoding="utf-8")
    updated = with_table(readme, table)
    if args.check:
        if updated != readme:
            print("README.md's benchmark table differs from bench/results/*.json; run: .venv/bin/python -m "
                  "bench.summary", file=sys.stderr)
            return 1
        return 0
    (folder / "summary.md").write_text(table, encoding="utf-8")
    README.write_text(updated, encoding="utf-8")
    print(f"wrote {folder / 'summary.md'} and README.md's Performance table")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
